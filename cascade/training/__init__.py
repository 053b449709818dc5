"""Building bundles: :mod:`.cheap` fits and exports the cheap stage, :mod:`.finetune` fine-tunes the
transformer, :mod:`.export` turns it into a fused INT8 ONNX model, :mod:`.build` assembles bundles.
Fine-tuning and export need the ``[train]`` extra; nothing here is imported at inference."""
