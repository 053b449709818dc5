"""Build recipes, one module each, all ending in :func:`cascade.training.assemble.assemble`:

* :mod:`.frozen` (``cascade train``): a head on a frozen INT8 sentence encoder, with the core install;
* :mod:`.refresh` (``cascade train-cheap``): a new cheap stage on an existing bundle's neural stage;
* :mod:`.finetuned` (``cascade finetune``): a fine-tuned transformer, exported, fused and quantized.
"""
