"""Build the other runtimes' and quantizers' versions of the shipped encoder, for ``what_we_tried.py`` to
measure against it. Reads the plain (unfused) fp32 export that ``python -m cascade.training.encoder --out DIR``
leaves in DIR, and writes next to it:

- ``encoder-int8-qdq.onnx``: onnxruntime static quantization, QDQ format (activation scales calibrated by
  min-max: onnxruntime's percentile and entropy calibrators need texts of equal length; per-channel INT8
  weights) of every MatMul and the embedding tables;
- ``encoder-fp32-ov.xml``: the export converted to OpenVINO's format (needs ``openvino``);
- ``encoder-int8-nncf-ov.xml``: that model quantized by NNCF, OpenVINO's quantizer (needs ``nncf``).

Calibration uses 300 training texts (never selection or test texts), one text per call, unpadded.

    pip install openvino nncf        # not cascade dependencies: only for this measurement
    python experiments/runtime_variants.py --encoders runs/encoder
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cascade
from cascade.bundle.store import shipped_bundle_path
from cascade.stages.tokenization import TextEncoder

CALIBRATION_TEXTS = 300


def calibration_feeds(tokenizer: Path) -> list[dict[str, np.ndarray]]:
    train = cascade.load_banking77("train")
    step = max(1, len(train) // CALIBRATION_TEXTS)
    encoder = TextEncoder(tokenizer, 128)
    feeds = []
    for text in train.texts[::step][:CALIBRATION_TEXTS]:
        ids, mask = encoder.encode([text])
        feeds.append({"input_ids": ids, "attention_mask": mask})
    return feeds


def qdq(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    prepared = out.with_name("encoder-fp32-preprocessed.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gather"],
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink()


def openvino_models(fp32: Path, out_dir: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    import openvino as ov

    model = ov.convert_model(str(fp32))
    ov.save_model(model, str(out_dir / "encoder-fp32-ov.xml"), compress_to_fp16=False)
    try:
        import nncf
    except ImportError:
        print("nncf not installed: no OpenVINO INT8 model (pip install nncf)", file=sys.stderr)
        return
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(feeds))
    ov.save_model(quantized, str(out_dir / "encoder-int8-nncf-ov.xml"), compress_to_fp16=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", type=Path, default=ROOT / "runs" / "encoder")
    args = parser.parse_args()
    fp32 = args.encoders / "encoder-fp32.onnx"
    if not fp32.is_file():
        sys.exit(f"{fp32} missing: run python -m cascade.training.encoder --out {args.encoders} first")
    feeds = calibration_feeds(shipped_bundle_path() / "tokenizer.json")
    qdq(fp32, args.encoders / "encoder-int8-qdq.onnx", feeds)
    print(f"wrote {args.encoders / 'encoder-int8-qdq.onnx'}")
    try:
        import openvino  # noqa: F401
    except ImportError:
        sys.exit("openvino not installed: no OpenVINO models (pip install openvino nncf)")
    openvino_models(fp32, args.encoders, feeds)
    print(f"wrote the OpenVINO models in {args.encoders}")


if __name__ == "__main__":
    main()
