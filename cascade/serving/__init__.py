"""``cascade serve``: an HTTP service (FastAPI on uvicorn) that batches fall-through texts across requests.

:mod:`~cascade.serving.settings` holds every setting (CLI flag and environment variable),
:mod:`~cascade.serving.batcher` gathers the neural stage's work into micro-batches,
:mod:`~cascade.serving.drift` watches the fall-through rate against the one the bundle promised,
:mod:`~cascade.serving.metrics` keeps the Prometheus figures, :mod:`~cascade.serving.app` builds the
application and :mod:`~cascade.serving.server` runs it. Needs the ``[serve]`` extra.
"""
