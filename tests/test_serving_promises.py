"""Issue 23 on the server: the estimated figure on its own traffic (a gauge, and one log line on entering and
leaving "promise not supported by recent traffic"), and labelled feedback on POST /v1/feedback."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi")
prometheus_parser = pytest.importorskip("prometheus_client.parser")

from serve_helpers import Server

from cascade.banking77 import load_banking77


def _gauge(server: Server, name: str) -> float:
    body = server.request("GET", "/metrics")[2].decode()
    return next(s.value for f in prometheus_parser.text_string_to_metric_families(body) if f.name == name
                for s in f.samples)


def _scrambled(texts: list[str]) -> list[str]:
    rng = random.Random(0)
    words = " ".join(texts).split()
    return [" ".join(rng.choice(words) for _ in range(len(t.split()))) for t in texts]


@pytest.fixture(scope="module")
def promised(tmp_path_factory):
    """The shipped bundle, calibrated to promise 90% accuracy on its certification split."""
    out = tmp_path_factory.mktemp("promised") / "bundle"
    run = subprocess.run([sys.executable, "-m", "cascade.cli", "calibrate", "--target-accuracy", "0.90", "--out",
                          str(out)], capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr.decode()
    server = Server("--bundle", str(out), "--drift-window", "200")
    yield server
    server.stop()


@pytest.mark.slow
def test_the_server_estimates_its_traffics_accuracy_and_says_when_the_promise_is_unsupported(promised):
    selection = load_banking77("selection").texts
    assert _gauge(promised, "cascade_estimated_figure_promised") == 0.90
    assert _gauge(promised, "cascade_promise_supported_by_traffic") == -1  # the window is not full yet
    for i in range(0, 200, 50):
        assert promised.classify({"texts": selection[i:i + 50]})[0] == 200
    assert _gauge(promised, "cascade_promise_supported_by_traffic") == 1
    assert _gauge(promised, "cascade_estimated_figure") > 0.85
    mark = len(promised.log)
    odd = _scrambled(load_banking77("test").texts[:200])
    for i in range(0, 200, 50):
        promised.classify({"texts": odd[i:i + 50]})
    assert _gauge(promised, "cascade_promise_supported_by_traffic") == 0
    assert _gauge(promised, "cascade_estimated_figure") < 0.5
    promised.classify({"texts": odd[:50], "threshold": 1.0})  # a request's own threshold says nothing
    for i in range(200, 400, 50):
        promised.classify({"texts": selection[i:i + 50]})
    assert _gauge(promised, "cascade_promise_supported_by_traffic") == 1
    time.sleep(0.2)
    said = promised.log[mark:]
    assert sum("promise not supported by recent traffic" in line for line in said) == 1
    assert sum("promise supported again by recent traffic" in line for line in said) == 1
    info = promised.request("GET", "/v1/info")[2].decode()
    assert json.loads(info)["traffic_estimate"]["promised"] == 0.9


def test_feedback_is_checked_against_the_promise_and_bad_feedback_gets_a_clear_422(promised):
    test = load_banking77("test")
    status = promised.request("POST", "/v1/feedback", {"texts": test.texts[:200], "labels": test.labels[:200]})[0]
    assert status == 200
    assert _gauge(promised, "cascade_feedback_texts") == 200 and _gauge(promised, "cascade_promise_violated") == 0
    assert 0.8 < _gauge(promised, "cascade_feedback_mean") <= 1.0
    mark = len(promised.log)
    for i in range(200, 2200, 250):  # every label wrong: a violation, caught at once
        texts = test.texts[i:i + 250]
        wrong = ["card_arrival" if y != "card_arrival" else "lost_or_stolen_card" for y in test.labels[i:i + 250]]
        assert promised.request("POST", "/v1/feedback", {"texts": texts, "labels": wrong})[0] == 200
    assert _gauge(promised, "cascade_promise_violated") == 1
    time.sleep(0.2)
    assert sum("promise violated" in line for line in promised.log[mark:]) == 1
    for body, where in (({"texts": ["a"], "labels": ["no_such_intent"]}, "no_such_intent"),
                        ({"texts": ["a", "b"], "labels": ["card_arrival"]}, "one label per text"),
                        ({"texts": ["a"]}, "labels"), ({"texts": ["a"], "labels": [3]}, "labels")):
        status, _, data = promised.request("POST", "/v1/feedback", body)
        assert status == 422 and where in data.decode(), (body, data)
