"""``cascade serve``: an HTTP service (FastAPI on uvicorn) that batches fall-through texts across requests.

From the socket inwards: :mod:`~cascade.serving.connections` guards each connection (time limits on idle
connections and request heads, a head size limit, a slot table slow clients cannot fill);
:mod:`~cascade.serving.guard` checks each request (API key, media type, body size and time, requests being
answered) and :mod:`~cascade.serving.requests` reads its body; :mod:`~cascade.serving.pipeline` runs the
stages in slices, the neural one behind :mod:`~cascade.serving.batcher`'s micro-batches;
:mod:`~cascade.serving.app` holds the routes. :mod:`~cascade.serving.settings` holds every setting (CLI flag
and environment variable), :mod:`~cascade.serving.responses` every status the service sends,
:mod:`~cascade.serving.drift` watches the fall-through rate against the one the bundle promised,
:mod:`~cascade.serving.metrics` keeps the Prometheus figures, :mod:`~cascade.serving.drain` bounds a
shutdown, and :mod:`~cascade.serving.server` runs it all on uvicorn. Needs the ``[serve]`` extra.
"""
