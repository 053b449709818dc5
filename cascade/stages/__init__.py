"""The two stages. Each turns texts into class probabilities and decides nothing:
:mod:`cascade.stages.cheap` (TF-IDF + logistic regression, with its featurizer in
:mod:`cascade.stages.featurizer`) and :mod:`cascade.stages.neural` (an ONNX transformer, tokenized by
:mod:`cascade.stages.tokenization`). :class:`cascade.stages.protocol.Stage` is what both are to the rest of
the package."""
