"""`cascade tune`: the objective, storages, and two worker processes sharing one journal-file study."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

import cascade
from cascade.tuning import fewest_falling, storage_of


def test_fewest_falling_is_the_cheapest_threshold_that_reaches_the_target():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    neural_ok = np.array([True, True, True, True])
    # cheap alone is right on 3 of 4 (text 1 wrong, the least confident but one); sending text 1 on needs
    # the threshold above 0.6, which also sends text 2 (0.55): 2 of 4 fall through for 100%
    assert fewest_falling(probs, neural_ok, y, 1.0, "max_prob") == 0.5
    assert fewest_falling(probs, neural_ok, y, 0.75, "max_prob") == 0.0
    assert fewest_falling(probs, ~neural_ok, y, 1.0, "max_prob") > 1.0  # unreachable: above 1 by the shortfall


def test_storages_are_named_clearly(tmp_path):
    assert storage_of(None) is None
    assert type(storage_of(str(tmp_path / "t.journal"))).__name__ == "JournalStorage"
    assert type(storage_of(f"sqlite:///{tmp_path / 't.db'}")).__name__ == "RDBStorage"
    with pytest.raises(ValueError, match="RDB URL"):
        storage_of("tune.db")


@pytest.mark.slow
def test_two_workers_share_one_journal_study_and_the_best_becomes_a_bundle(tmp_path, tiny_bundle, tiny_train,
                                                                           tiny_selection):
    for name, data in (("train.csv", tiny_train), ("sel.csv", tiny_selection)):
        with (tmp_path / name).open("w", newline="") as fh:
            csv.writer(fh).writerows([("text", "category"), *zip(data.texts, data.labels)])
    journal = tmp_path / "study.journal"
    args = [sys.executable, "-m", "cascade.cli", "tune", "--data", str(tmp_path / "train.csv"), "--val",
            str(tmp_path / "sel.csv"), "--trials", "8", "--storage", str(journal), "--study", "shared", "--base",
            str(tiny_bundle)]
    workers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=900) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    study = optuna.load_study(study_name="shared", storage=storage_of(str(journal)))
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = study.get_trials(states=states)
    assert len(done) == 8  # one study of 8, not 16 (nor 9: a trial beyond the cap stops before it runs)
    assert len({t.user_attrs["worker"] for t in study.get_trials() if "worker" in t.user_attrs}) == 2
    for out, _ in outputs:  # each saw the study when it stopped; the other may have found better after
        assert json.loads(out)["best_fall_through"] >= study.best_value and json.loads(out)["trials"] >= 8
    # the study's best, written as a bundle whose neural stage is the base's
    run = subprocess.run([*args, "--out", str(tmp_path / "tuned")], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["best_fall_through"] == study.best_value  # the full study's best
    tuned = cascade.load(tmp_path / "tuned", threads=1)
    assert tuned.labels == cascade.load(tiny_bundle, threads=1).labels
    assert tuned.bundle.manifest["training"]["tuned"]["study"] == "shared"
