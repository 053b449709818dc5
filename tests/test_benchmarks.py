"""The benchmark script cannot rot: its smoke mode runs and writes results with every figure."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIGURES = {"accuracy", "macro_f1", "texts_per_s", "p50_ms", "p99_ms", "size_mb", "peak_rss_mb", "cold_start_s",
           "throughput_vs_onnx_int8"}


@pytest.mark.slow
def test_quick_benchmark(tmp_path):
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path),
                    "--cascade", f"again={REPO / 'artifacts'}"],
                   check=True, capture_output=True, text=True, timeout=1800)  # no test may need an idle machine
    results = json.loads((tmp_path / "results.json").read_text())
    systems = results["systems"]
    assert {"onnx_int8", "cheap", "sklearn", "cascade", "cascade@selection-best", "cascade[again]",
            "neural[again]"} <= set(systems)
    assert systems["cascade[again]"]["accuracy"] == systems["cascade"]["accuracy"]  # the same bundle, another name
    assert systems["neural[again]"]["accuracy"] == systems["onnx_int8"]["accuracy"]  # its neural stage alone
    if all(importlib.util.find_spec(m) for m in ("openvino", "nncf", "torch")):  # issue 27: in the same run
        assert {"openvino_int8", "cascade[openvino]"} <= set(systems)
    for name, figures in systems.items():
        assert FIGURES <= set(figures), name
        assert 0 < figures["accuracy"] <= 1 and figures["texts_per_s"] > 0 and figures["peak_rss_mb"] > 0
    assert systems["onnx_int8"]["throughput_vs_onnx_int8"] == 1.0
    assert results["meta"]["quick"] and "machine" in results["meta"]
    for name, why in results["meta"]["skipped"].items():
        assert why, name  # every skipped system says why
    assert "| cascade |" in (tmp_path / "results.md").read_text()


def test_a_quick_run_never_writes_over_the_committed_results(tmp_path):
    """Issue 12: `cascade bench -- --quick` overwrote benchmarks/results.* with a 200-text smoke run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    quick = run.results_folder(None, quick=True)
    assert quick.is_dir() and quick.resolve() != (REPO / "benchmarks").resolve() and not any(quick.iterdir())
    assert run.results_folder(None, quick=False).resolve() == (REPO / "benchmarks").resolve()
    assert run.results_folder(tmp_path, quick=True) == tmp_path
    quick.rmdir()


def test_no_stale_figure_at_the_repository_root():
    """Issue 12: docs_curve.png at the root was stale and used nowhere."""
    assert not list(REPO.glob("*.png"))


def test_the_gpu_benchmark_says_it_skipped_where_there_is_no_gpu():
    import subprocess
    import sys
    from pathlib import Path

    import onnxruntime as ort

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        return  # a GPU build: the script measures instead (minutes), not a unit test's job
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("skipped: none of") and "onnxruntime-gpu" in run.stdout


def test_cascade_specs_are_checked_before_anything_runs(tmp_path):
    import argparse
    import importlib.util

    import pytest

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    assert run.cascade_spec(f"again={REPO / 'artifacts'}") == f"again={REPO / 'artifacts'}"
    for bad in ("artifacts", "=artifacts", "x=", "a[b]=artifacts", f"x={tmp_path}"):
        with pytest.raises(argparse.ArgumentTypeError):
            run.cascade_spec(bad)


@pytest.mark.slow
def test_serve_benchmark_quick_run_answers_beside_slow_clients_and_closes_them(tmp_path):
    """The smoke run of benchmarks/serve.py: every part runs; beside the slow connections the normal client's
    requests are all answered, and the server closes every slow connection."""
    out = tmp_path / "serve"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["rows"] and result["big_request"]["big_status"] == 200
    assert set(result["shutdown"]["statuses"]) <= {"200", "503"}  # never a 500, never no answer
    for row in result["slow_clients"]:
        assert row["answered"] == row["requests"] and row.get("closed_by_server", 0) == row["connections"], row
    md = out.with_suffix(".md").read_text()
    assert "| workload |" in md and "| beside the normal client |" in md and "| one-text requests |" in md
    assert "| requests in flight at SIGTERM |" in md


@pytest.mark.slow
def test_replay_and_monitor_simulation_quick_runs(tmp_path):
    """The smoke runs of benchmarks/replay_promises.py (one small replicate, with and without traffic) and
    benchmarks/monitor_simulation.py."""
    out = tmp_path / "replay.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "replay_promises.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {p["traffic"] for p in results[0]["promises"]} == {False, True}
    assert "With traffic:" in out.with_suffix(".md").read_text()
    sim = tmp_path / "sim"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "monitor_simulation.py"), "--streams", "200",
                          "--texts", "500", "--out", str(sim)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(sim.with_suffix(".json").read_text())["rows"]
    assert rows[0]["alarm_rate"] < 0.15 and rows[-1]["alarm_rate"] > 0.5


@pytest.mark.slow
def test_large_encoder_quick_run_sets_two_recipes_side_by_side(tmp_path):
    """benchmarks/large_encoder.py on an encoder folder (here the shipped encoder, written out as one)."""
    from cascade.bundle import default_bundle_path, read_bundle
    from cascade.bundle.encoder_dir import write_encoder_dir

    shipped = read_bundle(default_bundle_path())  # its neural stage is the frozen encoder with a head
    folder = write_encoder_dir(tmp_path / "enc", shipped.file("neural.onnx"), shipped.file("tokenizer.json"),
                               {"max_length": shipped.manifest["neural"]["max_length"],
                                "base_model": "the shipped encoder again"})
    out = tmp_path / "large"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "large_encoder.py"), "--encoder", str(folder.path),
                          "--quick", "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["recipes"]) == 2 and "the shipped encoder again INT8" in out.with_suffix(".md").read_text()
    for row in result["recipes"].values():  # each combiner fitted on selection, read on test
        assert set(row["combiners"]) == {"neural", "linear", "product"}
        assert row["combiners"]["product"]["mix"].get("kind") == "product"
    assert "| combiner |" in out.with_suffix(".md").read_text()


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), *args], capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_batch_benchmark_smoke_run(tmp_path):
    """Issue 26: every maintained benchmark has a smoke run; benchmarks/batch.py on 3,000 generated rows."""
    pytest.importorskip("duckdb")
    _run_script("batch", "--rows", "3000", "--chunk", "512", "--runtimes", "onnxruntime", "--out", str(tmp_path / "b"))
    result = json.loads((tmp_path / "b.json").read_text())
    assert "| `cascade batch --runtime onnxruntime` at its own threshold" in (tmp_path / "b.md").read_text()
    assert result["rows"] == 3000 and 0 < result["distinct_texts"] <= 3000
    assert result["batch"]["onnxruntime"]["rows_per_s"] > 0 and result["batch"]["onnxruntime"]["peak_rss_mb"] > 0


def test_cache_benchmark_smoke_run(tmp_path):
    _run_script("cache", "--texts", "400", "--rounds", "1", "--out", str(tmp_path / "c"))
    assert "| texts per call |" in (tmp_path / "c.md").read_text()
    assert json.loads((tmp_path / "c.json").read_text())


@pytest.mark.slow
def test_evaluate_bundle_and_tune_report_smoke_runs(tmp_path):
    """benchmarks/evaluate_bundle.py on the shipped bundle (without --write: nothing committed changes), and
    benchmarks/tune_report.py comparing the shipped bundle with itself."""
    run = _run_script("evaluate_bundle")
    assert "cascade" in run.stdout
    _run_script("tune_report", str(REPO / "artifacts"), "--out", str(tmp_path / "t"))
    assert "| split |" in (tmp_path / "t.md").read_text()
