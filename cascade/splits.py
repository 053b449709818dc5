"""Carve a labelled data set into train / selection / certification, keeping near-copies together.

A build fits its stages on *train*, chooses its settings (threshold, mix, "none of these" cut, epochs)
on *selection*, and leaves *certification* untouched for ``cascade calibrate``, whose promises need texts
that chose nothing. Texts that are near-copies of each other (TF-IDF cosine >= 0.8 over words, or equal
but for case, spacing and punctuation) form one group, and a group never straddles two splits: a near-copy
of a training text in the certifying split would make every promise look better than it is.

The rule depends only on the texts, their labels and a salt (SHA-256 ranks, no random state), so the same
file carves the same way on every machine, and ``cascade calibrate --data`` can find a build's
certification split again from the file it was built from.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .datasets import TextDataset
from .policy.multilabel import split_labels
from .text import dedup_key, text_hash

log = logging.getLogger(__name__)

NEAR_DUPLICATE_COSINE = 0.8
SELECTION_SHARE = 0.1
CERTIFICATION_SHARE = 0.1
PRODUCT_BUDGET = 10_000_000  # most similarity entries computed at once (bounds memory, whatever the data)
MAX_NEAR_DUPLICATE_TEXTS = 300_000  # beyond this, comparing every pair would take too long: copies only
RULE = (f"near-duplicate groups (word TF-IDF cosine >= {NEAR_DUPLICATE_COSINE}) kept whole; per label, groups "
        "ranked by SHA-256 of salt + text; certification first, then selection")
RULE_BY_TIME = (f"near-duplicate groups (word TF-IDF cosine >= {NEAR_DUPLICATE_COSINE}) and given groups kept whole; "
                "per label, groups ranked newest first (ties: SHA-256 of salt + text); certification first, then "
                "selection")


def near_duplicate_groups(texts: list[str], cosine: float = NEAR_DUPLICATE_COSINE) -> np.ndarray:
    """A group id per text (the index of its group's first text): texts joined, directly or through
    others, by a word TF-IDF cosine of at least ``cosine`` (or by the same :func:`cascade.text.dedup_key`)
    share one. Memory is bounded by PRODUCT_BUDGET; time grows with the square of the texts, so past
    MAX_NEAR_DUPLICATE_TEXTS only copies are grouped (with a warning)."""
    # lazy: scikit-learn (2-3 s to import) loads only when this runs
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.feature_extraction.text import TfidfVectorizer

    n = len(texts)
    keys: dict[str, int] = {}
    # each text points at a text of its group (at first: the first text with its key, so exact copies join)
    rep = np.array([keys.setdefault(dedup_key(t), i) for i, t in enumerate(texts)], dtype=np.int64)

    def merge(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        graph = coo_matrix((np.ones(n + len(src), dtype=np.int8), (np.concatenate([np.arange(n), src]),
                                                                   np.concatenate([rep, dst]))), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        lowest = np.full(comp.max() + 1, n, dtype=np.int64)
        np.minimum.at(lowest, comp, np.arange(n))
        return lowest[comp]

    if n > MAX_NEAR_DUPLICATE_TEXTS:
        log.warning("%d texts: more than %d, so only copies (but for case, spacing and punctuation) are grouped, not "
                    "near-copies; give the selection texts yourself (--val) to control what is held out",
                    n, MAX_NEAR_DUPLICATE_TEXTS)
        return rep
    try:
        x = TfidfVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32).fit_transform(texts).tocsr()
    except ValueError:  # not one word anywhere: only the exact copies join
        return rep
    rows = max(1, PRODUCT_BUDGET // max(n, 1))
    found: list[tuple[np.ndarray, np.ndarray]] = []
    held = 0
    for start in range(0, n, rows):
        sim = (x[start:start + rows] @ x.T).tocoo()
        hit = (sim.data >= cosine - 1e-6) & (sim.row + start != sim.col)
        found.append((sim.row[hit].astype(np.int64) + start, sim.col[hit].astype(np.int64)))
        held += int(hit.sum())
        if held > PRODUCT_BUDGET // 4:  # fold the pairs found so far into the groups: memory stays bounded
            rep = merge(*map(np.concatenate, zip(*found)))
            found, held = [], 0
    if found:
        rep = merge(*map(np.concatenate, zip(*found)))
    return rep


@dataclass(frozen=True)
class Splits:
    """The three parts of a carved data set, and how they were carved (what :func:`carve_splits` returns).

    Attributes
    ----------
    train : TextDataset
        What the stages are fitted on.
    selection : TextDataset
        What a build chooses its settings on (threshold, mix, cut-offs, epochs).
    certification : TextDataset
        Left untouched by the build, for ``cascade calibrate`` to certify promises on.
    settings : dict
        The rule and its settings; :meth:`describe` adds the sizes, as a manifest records them.
    """

    train: TextDataset
    selection: TextDataset
    certification: TextDataset
    settings: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """What a manifest records: the rule, its settings and the sizes (re-carving the same file with
        these settings gives the same parts)."""
        return {**self.settings, "sizes": {"train": len(self.train), "selection": len(self.selection),
                                           "certification": len(self.certification)}}


def carve_splits(data: TextDataset, selection: float = SELECTION_SHARE,
                 certification: float = CERTIFICATION_SHARE, salt: str = "", label_sep: str | None = None) -> Splits:
    """Split ``data`` into train / selection / certification, near-duplicate groups kept whole.

    About ``selection`` and ``certification`` of each label's texts go to the last two parts (see the
    module docstring). ``data.groups``: texts of one group (an author, a customer, a source) are kept
    together like near-copies. ``data.times``: the newest groups certify, the next newest select, instead of
    a hash order: promises are then made on texts like the ones users send next. The columns they were read
    from are recorded, so ``cascade calibrate --data`` reads them again.

    Parameters
    ----------
    data : TextDataset
        Labelled texts.
    selection, certification : float, default 0.1
        The shares of the two held-out parts; either may be 0 (that part is then empty), their sum under 0.9.
    salt : str, default ""
        Another salt gives another, equally deterministic carve.
    label_sep : str, optional
        Multi-label data (cells of topics joined by it), stratified by each text's rarest topic.

    Returns
    -------
    Splits
        ``train``, ``selection`` and ``certification``, and ``describe()`` for a manifest.

    Examples
    --------
    >>> import cascade
    >>> data = cascade.load_banking77("train_full")
    >>> parts = cascade.carve_splits(data)
    >>> len(parts.train) + len(parts.selection) + len(parts.certification) == len(data)
    True
    """
    _check_shares(data, selection, certification)
    group_col = data.group_col or ("(given)" if data.groups is not None else None)
    time_col = data.time_col or ("(given)" if data.times is not None else None)
    groups = near_duplicate_groups(data.texts) if selection or certification else np.arange(len(data))
    if data.groups is not None:
        groups = _merge_groups(groups, data.groups)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    part, wanted, missed = _assign_parts(data, members, selection, certification, salt, label_sep)
    _check_parts(part, wanted, missed, members, group_col)

    def pick(k: int) -> TextDataset:
        return TextDataset([t for t, p in zip(data.texts, part) if p == k],
                           [y for y, p in zip(data.labels, part) if p == k])

    n_groups = sum(len(idx) > 1 for idx in members.values())
    certification_part = pick(2)
    settings = {"rule": RULE if time_col is None else RULE_BY_TIME, "selection_share": selection,
                "certification_share": certification, "salt": salt,
                **({"label_sep": label_sep} if label_sep is not None else {}),
                **({"group_col": group_col} if group_col is not None else {}),
                **({"time_col": time_col} if time_col is not None else {}),
                "near_duplicate_groups": int(n_groups),
                "texts_in_near_duplicate_groups": int(sum(len(idx) for idx in members.values() if len(idx) > 1)),
                "certification_digest": _digest(certification_part)}
    return Splits(pick(0), pick(1), certification_part, settings)


def _check_shares(data: TextDataset, selection: float, certification: float) -> None:
    for name, share in (("selection", selection), ("certification", certification)):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"the {name} share must be in [0, 1), got {share}")
    if selection + certification >= 0.9:
        raise ValueError(f"selection + certification shares ({selection + certification:.2f}) leave too little "
                         "to train on; keep their sum under 0.9")
    for values, what in ((data.groups, "groups"), (data.times, "times")):
        if values is not None and len(values) != len(data):
            raise ValueError(f"{len(values)} {what} for {len(data)} texts")


def _assign_parts(data: TextDataset, members: dict[int, list[int]], selection: float, certification: float,
                  salt: str, label_sep: str | None) -> tuple[np.ndarray, dict[int, int], dict[int, list[str]]]:
    """Each text's part (0 train, 1 selection, 2 certification), group by group; the sizes each part wanted
    and the labels that wanted texts in a part and got none."""
    ranks = [hashlib.sha256((salt + text).encode("utf-8")).digest() for text in data.texts]
    lead = {g: min(idx, key=ranks.__getitem__) for g, idx in members.items()}  # the group's lowest-ranked text
    times = data.times
    newest = {g: max(times[i] for i in idx) for g, idx in members.items()} if times is not None else None

    def order(g: int) -> tuple[float, bytes]:  # the newest groups first (with times), else by hash rank
        return (-newest[g] if newest is not None else 0.0, ranks[lead[g]])

    strata = _strata(data.labels, label_sep)
    by_label: dict[str, list[int]] = defaultdict(list)  # a group goes with its lead's stratum, ranked by its lead
    for g, i in lead.items():
        by_label[strata[i]].append(g)
    label_sizes: dict[str, int] = defaultdict(int)
    for label in strata:
        label_sizes[label] += 1
    part = np.zeros(len(data), dtype=np.int8)
    wanted = {1: 0, 2: 0}
    missed: dict[int, list[str]] = {1: [], 2: []}
    for label, label_groups in by_label.items():  # a group joins a part if that brings the part nearer its size
        size = label_sizes[label]
        want_cert = round(size * certification) if size > 2 else 0
        want_sel = round(size * selection) if size > 2 else 0
        taken = {1: 0, 2: 0}
        for g in sorted(label_groups, key=order):
            size_g = len(members[g])
            for k, want in ((2, want_cert), (1, want_sel)):
                if taken[k] < want and taken[k] + size_g - want <= want - taken[k]:  # closer to the target
                    part[members[g]] = k
                    taken[k] += size_g
                    break
        for k, want in ((1, want_sel), (2, want_cert)):
            wanted[k] += want
            if want and not taken[k]:
                missed[k].append(label)
    return part, wanted, missed


def _check_parts(part: np.ndarray, wanted: dict[int, int], missed: dict[int, list[str]],
                 members: dict[int, list[int]], group_col: str | None) -> None:
    """Refuse a carve whose groups leave a part that should hold texts empty; warn for labels left out of
    one (their groups are bigger than the part's share of the label)."""
    joined = f"the groups of column {group_col!r}" if group_col is not None else "groups of near-copies"
    largest = max((len(idx) for idx in members.values()), default=0)
    for k, name in ((1, "selection"), (2, "certification")):
        if wanted[k] and not (part == k).any():
            raise ValueError(f"no texts can go to the {name} part: {joined} are too big for it (the largest holds "
                             f"{largest:,} of {len(part):,} texts, the part should hold about {wanted[k]:,}); give a "
                             "finer group column, or the selection texts yourself with --val")
        if missed[k]:
            shown = ", ".join(repr(label) for label in missed[k][:5])
            log.warning("%d label(s) have no %s texts: %s are bigger than that share of them (%s%s)", len(missed[k]),
                        name, joined, shown, ", ..." if len(missed[k]) > 5 else "")


def _merge_groups(rep: np.ndarray, keys: list[str]) -> np.ndarray:
    """Group ids joining ``rep``'s groups with the given ones (texts sharing a key): a group id is the index
    of the group's first text."""
    # lazy: scipy loads only when this runs, so `import cascade` stays light
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(rep)
    first: dict[str, int] = {}
    by_key = np.array([first.setdefault(k, i) for i, k in enumerate(keys)], dtype=np.int64)
    rows = np.concatenate([np.arange(n), np.arange(n)])
    cols = np.concatenate([rep, by_key])
    _, comp = connected_components(coo_matrix((np.ones(2 * n, dtype=np.int8), (rows, cols)), shape=(n, n)),
                                   directed=False)
    lowest = np.full(comp.max() + 1, n, dtype=np.int64)
    np.minimum.at(lowest, comp, np.arange(n))
    return lowest[comp]


def _strata(labels: list[str], label_sep: str | None) -> list[str]:
    """What each text is stratified by: its label, or (multi-label) its rarest topic."""
    if label_sep is None:
        return list(labels)

    cells = [split_labels(label, label_sep) for label in labels]
    counts: dict[str, int] = defaultdict(int)
    for topics in cells:
        for topic in topics:
            counts[topic] += 1
    return [min(topics, key=lambda t: (counts[t], t)) if topics else "" for topics in cells]


def _digest(part: TextDataset) -> str:
    """A fingerprint of a part's texts and labels, in any order (how a re-carve proves it found the same part)."""
    rows = sorted(f"{text_hash(t)}\t{y}" for t, y in zip(part.texts, part.labels))
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()[:16]


def build_splits(data: TextDataset, selection: TextDataset | None = None, *,
                 selection_share: float = SELECTION_SHARE, certification_share: float = CERTIFICATION_SHARE,
                 salt: str = "", label_sep: str | None = None) -> Splits:
    """The parts a build uses: ``data`` carved three ways, or, when ``selection`` texts are given, all of
    ``data`` to train on and nothing set aside for certification (certify on texts neither holds)."""
    if selection is None:
        return carve_splits(data, selection_share, certification_share, salt, label_sep)
    return Splits(data, selection, TextDataset([], []),
                  {"rule": "selection texts given by the caller; nothing carved, nothing set aside for certification"})


def certification_split(data: TextDataset, recorded: dict[str, Any], source: str = "the data") -> TextDataset:
    """The certification part a build set aside, found again by carving the file it was built from with
    the settings its manifest recorded (``training.splits``); an error if ``data`` is not that file."""
    share = recorded.get("certification_share", 0)
    if not share or "sizes" not in recorded:
        raise ValueError("this bundle's build set no certification texts aside (its selection texts were given, or "
                         "it predates the three-way split); certify on labelled texts it never saw, with --val")
    for key in ("group_col", "time_col"):
        if recorded.get(key) != getattr(data, key):
            raise ValueError(f"this bundle's build carved by {key.replace('_col', '')} column "
                             f"{recorded.get(key)!r}; read {source} with it (calibrate --data reads the recorded "
                             "columns by itself)")
    parts = carve_splits(data, float(recorded["selection_share"]), float(share), str(recorded.get("salt", "")),
                         recorded.get("label_sep"))
    sizes = parts.describe()["sizes"]
    digest = recorded.get("certification_digest")
    if sizes != recorded["sizes"] or (digest is not None and digest != parts.settings["certification_digest"]):
        raise ValueError(f"{source} does not carve into the splits this bundle was built with (sizes {sizes}, the "
                         f"bundle recorded {recorded['sizes']}; or the certification texts differ): give the file it "
                         "was built from, unchanged, or held-out texts with --val")
    return parts.certification


def stratified_split(data: TextDataset, fraction: float, salt: str = "") -> tuple[TextDataset, TextDataset]:
    """Split into (rest, part), about ``fraction`` of each label's rows in ``part``.

    The rows are chosen by the SHA-256 of ``salt`` + text, so the split is the same everywhere and a text never
    straddles it. (Builds carve with :func:`carve_splits`, which also keeps near-copies together.)

    Parameters
    ----------
    data : TextDataset
        Labelled texts.
    fraction : float
        In (0, 1).
    salt : str, default ""
        Another salt gives another split.

    Returns
    -------
    rest, part : TextDataset

    Examples
    --------
    >>> import cascade
    >>> rest, part = cascade.stratified_split(cascade.load_banking77("train"), 0.1)
    >>> round(len(part) / (len(rest) + len(part)), 2)
    0.1
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(data.labels):
        by_label[label].append(i)
    chosen: set[int] = set()
    for idx in by_label.values():
        ranked = sorted(idx, key=lambda i: hashlib.sha256((salt + data.texts[i]).encode("utf-8")).digest())
        n_part = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        chosen.update(ranked[:n_part])
    pick = lambda ids: TextDataset([data.texts[i] for i in ids], [data.labels[i] for i in ids])  # noqa: E731
    return pick([i for i in range(len(data)) if i not in chosen]), pick(sorted(chosen))
