"""``cascade tune``: search the cheap stage's settings with Optuna for what matters in a cascade.

The objective is the share of selection texts that must fall through to the neural stage for the cascade
to reach the accuracy the base bundle delivers at its own threshold (fewer is cheaper at the same
accuracy); the cheap stage's cost per text is measured and reported beside it. Each trial first fits on
a third of the training texts and is pruned there if it is already worse than the median of earlier
trials at that step. With ``storage`` (an Optuna RDB URL such as ``sqlite:///tune.db``, or a journal file
``*.journal``/``journal:PATH``) any number of processes, on one machine or many, share one study; the
study stops at ``trials`` finished or pruned trials in all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require
from .calibration.curves import threshold_curve
from .datasets import TextDataset
from .model import Cascade
from .policy.routing import fallthrough_answer, routing_confidence
from .progress import stderr_is_terminal
from .stages.cheap import CheapStage
from .text import normalize
from .training.cheap import CheapConfig, export_cheap, fit_cheap

log = logging.getLogger(__name__)

PRUNE_SHARE = 1 / 3  # of the training texts, for the first (prunable) step of a trial


@dataclass(frozen=True)
class TuneResult:
    """What a study found: the best trial's settings and figures, and the base bundle's for comparison."""

    study: str
    trials: int  # finished in the study (all workers)
    pruned: int
    target_accuracy: float  # the base bundle's cascade accuracy at its threshold, on the selection texts
    base_fall_through: float  # the fewest texts the base cheap stage sends on at that accuracy
    best_fall_through: float
    best_config: CheapConfig
    best_cheap_ms_per_text: float
    best_trial: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        """Whether the best trial reached the target accuracy at all (its objective is above 1 otherwise)."""
        return self.best_fall_through <= 1.0


def _config(trial: Any) -> CheapConfig:
    word_max = trial.suggest_int("word_max_n", 1, 3)
    char = trial.suggest_categorical("char_ngrams", ["none", "1-3", "1-4", "2-5", "3-5"])
    max_features = trial.suggest_categorical("max_features", [0, 20_000, 50_000, 100_000])
    return CheapConfig(
        word_ngrams=(1, word_max),
        char_ngrams=None if char == "none" else tuple(int(x) for x in char.split("-")),  # type: ignore[arg-type]
        min_df=trial.suggest_int("min_df", 1, 5),
        C=trial.suggest_float("C", 0.5, 200.0, log=True),
        sublinear_tf=trial.suggest_categorical("sublinear_tf", [True, False]),
        max_features=max_features or None,
        class_weight=trial.suggest_categorical("class_weight", ["none", "balanced"]).replace("none", "") or None,
    )


def fewest_falling(probs: np.ndarray, neural_ok: np.ndarray, y: np.ndarray, target: float, measure: str) -> float:
    """The lowest fall-through rate at which the cascade's accuracy reaches ``target`` on these texts; above
    1 (by the shortfall) when no threshold reaches it."""
    curve = threshold_curve(routing_confidence(probs, measure), probs.argmax(axis=1) == y, neural_ok)
    ok = curve.accuracy >= target - 1e-12
    return float(curve.fall_through_rate[ok].min()) if ok.any() else 1.0 + float(target - curve.accuracy.max())


class _Objective:
    """One worker's view: the base bundle, its neural stage's answers on the selection texts (computed once)."""

    def __init__(self, train: TextDataset, selection: TextDataset, base: Any) -> None:
        self.train, self.selection, self.base = train, selection, base
        self.labels = base.labels
        unknown = sorted(set(train.labels) - set(self.labels))
        if unknown:
            raise ValueError(f"training labels the base bundle does not have: {unknown[:5]}")
        self.y = np.array([self.labels.index(label) if label in self.labels else -1 for label in selection.labels])
        self.neural = base.neural.predict_proba(selection.texts)
        base_probs = base.cheap.predict_proba(selection.texts)
        mixed = fallthrough_answer(base_probs, self.neural, base.mix)
        routed = base.route(selection.texts)[0]
        self.target = float((routed.argmax(axis=1) == self.y).mean())
        self.base_fall = fewest_falling(base_probs, mixed.argmax(axis=1) == self.y, self.y, self.target, base.measure)
        # The first (prunable) step of a trial fits on a subsample: a third of the texts, at least two a label;
        # on data too small for that to be a subsample, trials take the full step only.
        size = max(len(set(train.labels)) * 2, int(len(train) * PRUNE_SHARE))
        rng = np.random.default_rng(0)
        self.subsample: list[int] | None = (sorted(rng.choice(len(train), size=size, replace=False).tolist())
                                            if size < len(train) else None)
        self.cap: int | None = None  # the study's trial count: a trial past it (others in flight) stops the worker
        self.stopped_for_surplus = False

    def score(self, config: CheapConfig, data: TextDataset) -> tuple[float, Any]:
        present = sorted(set(data.labels))
        pipeline = fit_cheap(data, present, config)
        probs = np.zeros((len(self.selection), len(self.labels)))
        cols = [self.labels.index(label) for label in present]
        probs[:, cols] = pipeline.predict_proba([normalize(t) for t in self.selection.texts])
        neural_ok = fallthrough_answer(probs, self.neural, self.base.mix).argmax(axis=1) == self.y
        return fewest_falling(probs, neural_ok, self.y, self.target, self.base.measure), pipeline

    def __call__(self, trial: Any) -> float:
        optuna = require("optuna", "tune")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # first: others see it is alive
        if self.cap is not None:
            try:
                _stop_if_surplus(trial, self.cap)
            except SurplusTrial:
                self.stopped_for_surplus = True
                raise
        config = _config(trial)
        if self.subsample is not None:
            sub = TextDataset([self.train.texts[i] for i in self.subsample],
                              [self.train.labels[i] for i in self.subsample])
            if len(set(sub.labels)) == len(set(self.train.labels)):  # a step to prune on (every label present)
                early, _ = self.score(config, sub)
                trial.report(early, step=0)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        value, pipeline = self.score(config, self.train)
        trial.report(value, step=1)
        trial.set_user_attr("cheap_ms_per_text", _cost_ms(pipeline, self.selection.texts))
        trial.set_user_attr("config", _config_dict(config))
        return value


class SurplusTrial(Exception):
    """A trial started when the study's cap was already reached by finished trials and earlier ones in flight."""


def _stop_if_surplus(trial: Any, cap: int) -> None:
    """Stop a trial (and this worker) that would take the study past ``cap``: finished and pruned trials, and
    trials in flight that started before it (a lower number), count. Workers agree on which trials run
    (the lowest numbers), so two workers sharing a study of 8 run 8, not 9."""
    # lazy: the [tune] extra
    from optuna.trial import TrialState

    ahead = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                or (t.state == TrialState.RUNNING and t.number < trial.number and _in_flight(t))
                for t in trial.study.get_trials(deepcopy=False))
    if ahead >= cap:
        trial.study.stop()
        raise SurplusTrial(f"the study already holds {cap} trials, counting those in flight on other workers")


WAIT_FOR_OTHERS_S = 600.0  # at most this long for other workers' trials in flight (a killed one never ends)
STALE_AFTER_S = 3600.0  # a trial marked running this long on another machine is taken for abandoned


def _in_flight(trial: Any) -> bool:
    """Whether a trial marked running is really running: its worker (``host:pid``, recorded when the trial
    starts) is alive on this host, or, on another host, it started less than ``STALE_AFTER_S`` ago. A worker
    killed mid-trial leaves its trial marked running for good; it must not hold the study's cap."""

    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True
    start = trial.datetime_start
    return start is None or (datetime.now() - start).total_seconds() < STALE_AFTER_S


def _wait_for_trials_in_flight(study: Any, states: tuple[Any, ...]) -> None:
    """This worker stopped because the cap counts trials still running elsewhere: wait for them (at most
    ``WAIT_FOR_OTHERS_S``), so the best it reports is the whole study's."""
    # lazy: the [tune] extra
    from optuna.trial import TrialState

    deadline, said = time.monotonic() + WAIT_FOR_OTHERS_S, -1
    while time.monotonic() < deadline:
        running = sum(_in_flight(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if not running:
            return
        if running != said:
            log.info("waiting for %d trial(s) in flight on other workers", running)
            said = running
        time.sleep(1.0)
    log.warning("trials still marked running after %.0f s (a worker killed mid-trial?); reporting the finished ones",
                WAIT_FOR_OTHERS_S)


def _fingerprint(train: TextDataset, selection: TextDataset, model: Any) -> str:
    """What makes two workers' trials comparable: the same texts and labels, the same base bundle."""

    digest = hashlib.sha256()
    for data in (train, selection):
        digest.update(json.dumps([data.texts, data.labels]).encode("utf-8", "surrogatepass"))
    digest.update((model.bundle.digest if model.bundle is not None else "").encode())
    return digest.hexdigest()


def _config_dict(config: CheapConfig) -> dict[str, Any]:

    return asdict(config)


def _cost_ms(pipeline: Any, texts: list[str], n: int = 300) -> float:
    """The exported cheap stage's median ms per text, one text per call (what serving one request costs)."""
    with tempfile.TemporaryDirectory(prefix="cascade-tune-") as tmp:
        features, onnx_file = export_cheap(pipeline, tmp)
        stage = CheapStage.from_bytes(features.read_bytes(), onnx_file.read_bytes())
    times = []
    for text in texts[:n]:
        started = time.perf_counter()
        stage.predict_proba([text])
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def storage_of(url: str | None) -> Any:
    """An Optuna storage: None (in memory), a journal file (``*.journal``, ``*.log`` or ``journal:PATH``;
    safe for processes sharing a file system), or an RDB URL (``sqlite:///tune.db``, ``postgresql://...``)."""
    if url is None:
        return None
    optuna = require("optuna", "tune")
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        # lazy: the [tune] extra
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if "://" not in url or url.rstrip("/") in ("sqlite:", "sqlite://"):
        raise ValueError(f"storage {url!r}: give an RDB URL with a database (sqlite:///tune.db) or a journal file "
                         "(tune.journal)")
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy's many error types: one clear line, the cause kept
        raise ValueError(f"storage {url!r} cannot be opened: {str(exc).splitlines()[0][:200]}") from exc


def tune(train: TextDataset, selection: TextDataset, *, trials: int, base: str | Path | None = None,
         storage: str | None = None, study: str | None = None, seed: int | None = None,
         progress: bool = True) -> TuneResult:
    """Run trials until the study holds ``trials`` finished or pruned ones (counting other workers'), and
    return the best. ``base``: the bundle whose neural stage and threshold set the target (default: the
    shipped one)."""
    optuna = require("optuna", "tune")

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    the_storage = storage_of(storage)  # a bad URL fails before the bundle is loaded
    model = Cascade.load(base)
    if model.multi_label:
        raise ValueError("cascade tune searches single-label cheap stages; this bundle is a tagger")
    objective = _Objective(train, selection, model)
    name = study or "cascade-tune"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a trial stopped at the cap is no one's warning
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    the_study = optuna.create_study(study_name=name, storage=the_storage, direction="minimize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
    fingerprint = _fingerprint(train, selection, model)
    recorded = the_study.user_attrs.get("fingerprint")
    if recorded is not None and recorded != fingerprint:
        raise ValueError(f"study {name!r} in this storage was run on other data or another base bundle; its trials "
                         "are not comparable: give another --study name")
    the_study.set_user_attr("fingerprint", fingerprint)
    the_study.set_user_attr("target_accuracy", objective.target)
    the_study.set_user_attr("base_fall_through", objective.base_fall)
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = len(the_study.get_trials(deepcopy=False, states=states))
    if done < trials:
        # lazy: the [tune] extra
        from optuna.study import MaxTrialsCallback

        objective.cap = trials
        started = time.perf_counter()

        def said(study: Any, trial: Any) -> None:  # a line per trial: progress in a log, where no bar is drawn
            if trial.state == optuna.trial.TrialState.FAIL:  # stopped at the cap (other failures are raised)
                return
            finished = len(study.get_trials(deepcopy=False, states=states))
            value = f"fall-through {trial.value:.4f}" if trial.value is not None else trial.state.name.lower()
            best = f"{study.best_value:.4f}" if any(t.value is not None for t in study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))) else "none yet"
            log.info("tune: trial %d %s; best %s; %d of %d done, %.0f s", trial.number, value, best, finished, trials,
                     time.perf_counter() - started)

        the_study.optimize(objective, n_trials=trials - done, callbacks=[MaxTrialsCallback(trials, states=states), said],
                           catch=(SurplusTrial,), show_progress_bar=progress and stderr_is_terminal())
        if objective.stopped_for_surplus:
            _wait_for_trials_in_flight(the_study, states)
    finished = the_study.get_trials(deepcopy=False, states=states)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in finished):
        raise ValueError(f"study {name!r} holds no finished trial yet ({len(finished)} pruned; others may still be "
                         "running on other workers): run again when they are done, or ask for more --trials")
    best = the_study.best_trial
    settings: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in best.user_attrs["config"].items()}
    config = CheapConfig(**settings)
    return TuneResult(study=name, trials=len(finished),
                      pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
                      target_accuracy=objective.target, base_fall_through=objective.base_fall,
                      best_fall_through=float(best.value), best_config=config,
                      best_cheap_ms_per_text=float(best.user_attrs["cheap_ms_per_text"]), best_trial=best.number,
                      extra={"params": best.params})
