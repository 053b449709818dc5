"""cascade.integrations.ray on a local Ray instance: the answers equal classify() on the same texts, whether
the bundle travels through the object store or is read from a path; a different bundle is refused."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import cascade
from cascade.banking77 import load_banking77
from cascade.integrations.ray import classify_dataset


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("ship", [True, False])
def test_results_equal_classify_on_the_same_texts(local_ray, tiny_bundle, ship):
    texts = load_banking77("test").texts[:300]
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)] + [{"id": 300, "text": ""}]
    out = classify_dataset(ray.data.from_items(rows), tiny_bundle, concurrency=2, batch_size=64, ship=ship)
    got = sorted(out.take_all(), key=lambda r: r["id"])
    expected = cascade.load(tiny_bundle, threads=1).classify(texts)
    assert [r["id"] for r in got] == list(range(301))
    for row, p in zip(got, expected):
        assert (row["label"], row["stage"], row["error"]) == (p.label, p.stage, None)
        assert row["score"] == pytest.approx(p.score, abs=1e-12)
    assert got[300]["error"] == "empty text" and got[300]["label"] is None


def test_an_actor_refuses_a_bundle_other_than_the_drivers(local_ray, tiny_bundle, tmp_path):
    from cascade.errors import BundleError
    from cascade.integrations.ray import BundleClassifier

    with pytest.raises(BundleError, match="digest"):
        BundleClassifier(None, str(tiny_bundle), "sha256:" + "0" * 64, "text", None, 1)


def test_the_openvino_runtime_is_refused_before_any_actor_when_the_bundle_has_no_model(local_ray, tiny_bundle):
    """Issue 27: the runtime choice reaches the Ray helper; a bundle without an OpenVINO model fails on the driver."""
    from cascade.errors import BundleError

    ds = ray.data.from_items([{"text": "card lost"}])
    with pytest.raises(BundleError, match="has no OpenVINO model"):
        classify_dataset(ds, tiny_bundle, runtime="openvino")
    with pytest.raises(ValueError, match="runtime must be one of"):
        classify_dataset(ds, tiny_bundle, runtime="tensorrt")
