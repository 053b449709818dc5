"""Tampered multi-label manifests: every field a multi-label bundle adds is checked on load."""

from __future__ import annotations

import pytest
from adv_helpers import copy_bundle, edit_manifest

import cascade
from cascade.errors import BundleError


def test_multi_label_manifest_is_validated(tagger, tmp_path):
    for change, match in [
        (lambda m: m.pop("decisions"), "decisions.cheap"),
        (lambda m: m["decisions"].update(cheap=[0.5]), "one cut-off per label"),
        (lambda m: m["decisions"]["fallen"].__setitem__(0, 0.0), r"decisions.fallen\[0\]"),
        (lambda m: m.update(task="several"), "must be one of"),
        (lambda m: m.update(abstain={"below": 0.2}), "single-label bundles"),
        (lambda m: m.update(calibration={"measure": "max_prob"}), "calibration.measure"),
        (lambda m: m["neural"].update(windows=99), "neural.windows"),
    ]:
        b = copy_bundle(tagger, tmp_path / f"b{len(list(tmp_path.iterdir()))}")
        edit_manifest(b, change)
        with pytest.raises(BundleError, match=match):
            cascade.load(b, threads=1)


def test_single_label_bundle_cannot_claim_to_be_multi_label(tiny_bundle, tmp_path):
    b = copy_bundle(tiny_bundle, tmp_path / "b")
    n = len(cascade.read_bundle(b).labels)
    edit_manifest(b, lambda m: m.update(task="multi-label", decisions={"cheap": [0.5] * n, "fallen": [0.5] * n,
                                                                       "at_least_one": True}))
    with pytest.raises(BundleError, match="disagree on the task"):
        cascade.load(b, threads=1)


