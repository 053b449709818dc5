"""Building bundles: :mod:`.recipes` holds one module per build (``train``, ``train-cheap``, ``finetune``),
each ending in :mod:`.assemble`; :mod:`.checks` checks the data first, :mod:`.cheap` fits and exports the
cheap stage, :mod:`.finetune` fine-tunes the transformer, :mod:`.export` turns it into a fused INT8 ONNX model.
Fine-tuning and export need the ``[train]`` extra; nothing here is imported at inference."""
