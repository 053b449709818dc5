"""`cascade serve`: a real server on loopback (no mocked app), every documented status code, Prometheus
metrics, the drift signal raised and cleared, a bounded load test and a graceful shutdown."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

from serve_helpers import JSON, KEY, Server  # noqa: F401

import cascade
from cascade.banking77 import load_banking77


@pytest.fixture(scope="module")
def shipped():
    server = Server("--drift-window", "200", "--max-texts", "300", "--max-chars", "2000",
                    "--max-body-bytes", "200000")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference():
    return cascade.load(threads=1)


def test_health_ready_info_docs_and_metrics(shipped):
    assert shipped.request("GET", "/healthz")[0] == 200 and shipped.request("GET", "/readyz")[0] == 200
    status, _, body = shipped.request("GET", "/v1/info")
    info = json.loads(body)
    assert status == 200 and info["task"] == "single-label" and len(info["labels"]) == 77
    assert info["promised"]["fall_through_rate"] > 0 and "selection" in info["promised"]["source"]
    assert "sha256" not in body.decode() and "artifacts" not in body.decode() and "digest" not in info
    assert shipped.request("GET", "/docs")[0] == 200 and shipped.request("GET", "/openapi.json")[0] == 200
    shipped.classify({"texts": ["where is my card?"]})
    status, headers, body = shipped.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in prometheus_parser.text_string_to_metric_families(body.decode())}
    for name in ("cascade_requests", "cascade_request_seconds", "cascade_texts", "cascade_neural_batch_texts",
                 "cascade_neural_queue_texts", "cascade_fall_through_promised_ratio",
                 "cascade_fall_through_observed_ratio", "cascade_fall_through_drift"):
        assert name in families, name
    served = [s for s in families["cascade_requests"].samples
              if s.labels.get("route") == "/v1/classify" and s.labels.get("status") == "200"]
    assert served and served[0].value >= 1


@pytest.mark.parametrize("body, raw, headers, status, where", [
    (None, b'{"texts": ["a"', None, 422, "json_invalid"),
    ({"texts": "not a list"}, None, None, 422, "texts"),
    ({"texts": ["ok", 3]}, None, None, 422, "texts"),
    ({"texts": ["ok"], "top_k": 0}, None, None, 422, "top_k"),
    ({"texts": ["ok"], "top_k": 78}, None, None, 422, "top_k"),
    ({"texts": ["ok"], "threshold": 1.5}, None, None, 422, "threshold"),
    ({"texts": ["ok"], "colour": "red"}, None, None, 422, "colour"),
    ({"text": ["ok"]}, None, None, 422, "texts"),
    ({"texts": ["x"] * 301}, None, None, 422, "texts"),
    ({"texts": ["x" * 2001]}, None, None, 422, "texts"),
    (None, b'{"texts": ["' + b"x" * 200_001 + b'"]}', None, 413, "bytes"),
    (None, b'{"texts": ["a"]}', {"content-type": "text/plain"}, 415, "application/json"),
])
def test_bad_requests_get_the_documented_status_naming_the_field(shipped, body, raw, headers, status, where):
    got, _, data = shipped.request("POST", "/v1/classify", body, headers, raw=raw)
    assert got == status, data
    assert where in data.decode()


def test_unknown_routes_and_methods(shipped):
    assert shipped.request("GET", "/v2/nothing")[0] == 404
    assert shipped.request("GET", "/v1/classify")[0] == 405


def test_answers_equal_classify_under_32_concurrent_clients(shipped, reference):
    """The load test: 32 clients, 640 single-text requests, then multi-text ones; no error, nothing lost or
    reordered, each answer what `classify()` gives the same text."""
    texts = load_banking77("test").texts[:640]
    expected = {t: p.to_dict() for t, p in zip(texts, reference.classify(texts))}

    def one(text: str) -> tuple[str, int, dict]:
        status, answer = shipped.classify({"texts": [text]})
        return text, status, answer

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, texts))
    assert [r[1] for r in results] == [200] * len(texts)
    assert all(answer["predictions"] == [expected[text]] for text, _, answer in results)
    batches = [texts[i:i + 40] for i in range(0, len(texts), 40)]
    with ThreadPoolExecutor(16) as pool:
        many = list(pool.map(lambda b: shipped.classify({"texts": b, "top_k": 3}), batches))
    for batch, (status, answer) in zip(batches, many):
        assert status == 200 and answer["predictions"] == [p.to_dict() for p in reference.classify(batch, top_k=3)]
        assert answer["fall_through"] == sum(p["stage"] == "neural" for p in answer["predictions"])
    status, _, body = shipped.request("GET", "/metrics")
    sizes = [s for f in prometheus_parser.text_string_to_metric_families(body.decode())
             if f.name == "cascade_neural_batch_texts" for s in f.samples if s.name.endswith("_count")]
    assert sizes and sizes[0].value > 0


def _drift(server) -> float:
    body = server.request("GET", "/metrics")[2].decode()
    return next(s.value for f in prometheus_parser.text_string_to_metric_families(body)
                if f.name == "cascade_fall_through_drift" for s in f.samples)


def test_the_drift_signal_is_raised_by_out_of_distribution_texts_and_cleared(shipped):
    """Window of 200 texts: the selection texts the threshold was chosen on keep it quiet; random strings
    (nothing like banking questions) fall through far more often than promised."""
    import random

    rng = random.Random(0)
    selection = load_banking77("selection").texts
    for i in range(0, 200, 50):
        assert shipped.classify({"texts": selection[i:i + 50]})[0] == 200
    assert _drift(shipped) == 0.0
    mark = len(shipped.log)  # (the load test's BANKING77 test texts may have raised and cleared it before)
    gibberish = ["".join(rng.choice("qwxzjkvyp ") for _ in range(30)) for _ in range(200)]
    for i in range(0, 200, 50):
        assert shipped.classify({"texts": gibberish[i:i + 50]})[0] == 200
    assert _drift(shipped) == 1.0
    said = [line for line in shipped.log[mark:] if "fall-through drift" in line]
    assert len(said) == 1 and "promised" in said[0]
    # a request at its own threshold says nothing about drift
    shipped.classify({"texts": gibberish[:50], "threshold": 1.0})
    for i in range(200, 400, 50):
        shipped.classify({"texts": selection[i:i + 50]})
    assert _drift(shipped) == 0.0
    assert sum("back in line" in line for line in shipped.log[mark:]) == 1


def test_the_api_key_guards_everything_but_the_probes():
    server = Server(env={"CASCADE_API_KEY": KEY})
    try:
        assert server.request("GET", "/healthz")[0] == 200 and server.request("GET", "/readyz")[0] == 200
        for path in ("/v1/info", "/metrics", "/docs"):
            status, headers, _ = server.request("GET", path)
            assert status == 401 and headers.get("www-authenticate") == "Bearer", path
        assert server.classify({"texts": ["hi"]}, {"authorization": "Bearer wrong"})[0] == 401
        assert server.classify({"texts": ["hi"]}, {"authorization": f"Bearer {KEY}"})[0] == 200
        assert server.request("GET", "/metrics", headers={"authorization": f"Bearer {KEY}"})[0] == 200
    finally:
        server.stop()


def test_a_full_queue_answers_503_with_retry_after():
    """The queue holds 8 texts: while one request's 8 long texts run in the neural stage, the next request
    whose texts all fall through is refused at once, with Retry-After (a request that fits in an empty queue:
    retrying helps)."""
    server = Server("--max-texts", "8", "--max-queue", "8")
    texts = [" ".join(["card"] * 3000)] * 8  # 15,000 characters each: each batch takes a while
    try:
        for _ in range(20):
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: server.request("POST", "/v1/classify",
                                                                 {"texts": texts, "threshold": 1.0}), range(4)))
            refused = [a for a in answers if a[0] == 503]
            if refused:
                break
        assert refused and all(h.get("retry-after") == "1" and b"overloaded" in body for _, h, body in refused)
        assert {a[0] for a in answers} <= {200, 503}
        assert server.classify({"texts": texts[:2], "threshold": 1.0})[0] == 200  # within the bound
    finally:
        server.stop()


def test_graceful_shutdown_finishes_requests_in_flight_and_refuses_new_ones():
    server = Server("--max-texts", "1024")
    texts = load_banking77("test").texts[:1024]
    result: dict = {}

    def slow() -> None:
        result["answer"] = server.classify({"texts": texts, "threshold": 1.0})  # all to the neural stage: seconds

    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    assert worker.is_alive()  # still in flight...
    with pytest.raises(OSError):  # ...while a new connection is refused
        server.request("GET", "/healthz")
    worker.join(timeout=60)
    status, answer = result["answer"]
    assert status == 200 and len(answer["predictions"]) == answer["fall_through"] == 1024
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit status is SIGTERM's
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    time.sleep(0.2)
    assert any("Finished server process" in line for line in server.log), "".join(server.log)
    with pytest.raises(OSError):
        server.request("GET", "/healthz")


def test_settings_come_from_flags_then_environment(monkeypatch):
    from cascade.serving.settings import ServeSettings

    s = ServeSettings.from_sources({"port": 9000}, {"CASCADE_SERVE_PORT": "8001", "CASCADE_SERVE_MAX_BATCH": "8",
                                                    "CASCADE_SERVE_BATCHING": "off", "CASCADE_API_KEY": KEY})
    assert (s.port, s.max_batch, s.batching, s.api_key) == (9000, 8, False, KEY) and KEY not in repr(s)
    with pytest.raises(ValueError, match="CASCADE_SERVE_MAX_BATCH"):
        ServeSettings.from_sources({}, {"CASCADE_SERVE_MAX_BATCH": "many"})
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServeSettings(api_key="short")
    with pytest.raises(ValueError, match="max_texts"):
        ServeSettings(max_texts=0)


def test_the_batcher_gathers_concurrent_requests_and_bounds_its_queue():
    """While one batch runs, the next fills with every request that arrived: batches grow with the load."""
    import asyncio

    import numpy as np

    from cascade.serving.batcher import NeuralBatcher, Overloaded

    sizes: list[int] = []

    def predict(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        time.sleep(0.05)
        return np.array([[float(len(t))] for t in texts])

    async def scenario() -> None:
        batcher = NeuralBatcher(predict, max_batch=64, max_queue=40)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit(["x" * i, "y"]) for i in range(1, 11)))
        assert [a[:, 0].tolist() for a in answers] == [[float(i), 1.0] for i in range(1, 11)]  # each its own rows
        assert len(sizes) < 10 and max(sizes) >= 10  # gathered: fewer batches than requests
        outcomes = await asyncio.gather(*(batcher.submit(["z"] * 15) for _ in range(3)), return_exceptions=True)
        assert [type(o) for o in outcomes].count(Overloaded) == 1  # 45 texts > 40: the third is refused at once
        off = NeuralBatcher(predict, batching=False)
        await off.start()
        sizes.clear()
        await asyncio.gather(*(off.submit(["a", "b"]) for _ in range(4)))
        assert sizes == [2, 2, 2, 2]  # one request at a time
        await batcher.stop()
        await off.stop()

    asyncio.run(scenario())


def test_the_serving_page_documents_every_setting_with_its_flag_and_variable():
    from serve_helpers import settings_table

    page = (Path(__file__).resolve().parent.parent / "docs" / "serving.md").read_text(encoding="utf-8")
    assert settings_table() in page, settings_table()


def test_repeated_texts_are_answered_from_the_cache_with_the_same_answers(shipped, reference):
    texts = load_banking77("test").texts[700:740]
    first = shipped.classify({"texts": texts})[1]
    again = shipped.classify({"texts": texts})[1]
    assert first == again and first["predictions"] == [p.to_dict() for p in reference.classify(texts)]
    body = shipped.request("GET", "/metrics")[2].decode()
    hits = next(s.value for f in prometheus_parser.text_string_to_metric_families(body)
                if f.name == "cascade_cache_hits" for s in f.samples)
    assert hits >= 40
    own = shipped.classify({"texts": texts, "threshold": 1.0})[1]  # its own threshold: computed, not cached
    assert own["fall_through"] == 40
