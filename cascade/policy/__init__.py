"""Routing policy: what the numbers the stages return mean for a text.

Stages only score (probabilities); this layer decides. :mod:`.routing` holds the confidence measures, the
one place a threshold is applied (:func:`.routing.fall_through`) and "none of these"; :mod:`.mix` how a
text that falls through is answered from both stages' votes; :mod:`.multilabel` a tagger's decisions
(per-topic cut-offs, the confidence in a whole set). It depends on numpy and the core modules only: the
bundle, the stages, the model and the builds all build on it.
"""
