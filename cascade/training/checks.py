"""Checks of a build's data before any long work: label names, labels or topics with too few training
texts, selection labels training lacks, and warnings about data that would make the choices optimistic."""

from __future__ import annotations

import logging
from collections import Counter

from ..datasets import TextDataset
from ..policy.multilabel import split_labels
from ..text import control_char, dedup_key

log = logging.getLogger(__name__)


def at_least_one_topic(train: TextDataset, sep: str | None, asked: int | None) -> bool:
    """Whether every answer gets at least one topic (always, for one label per text): as ``asked``, else
    when every training text has a topic. Says which in the log, since an empty answer is a valid one for,
    say, support tickets that match no topic."""
    if sep is None:
        return True
    untagged = sum(not split_labels(cell, sep) for cell in train.labels)
    at_least_one = (untagged == 0) if asked is None else asked == 1
    why = (f"as asked (--min-topics {asked})" if asked is not None else
           "every training text has one (--min-topics 0 allows none)" if at_least_one else
           f"{untagged} training text(s) have none")
    log.info("topics per answer: at least %d, %s", int(at_least_one), why)
    return at_least_one


def check_label_names(names: list[str], what: str = "label") -> None:
    """A label is a one-line name without spaces around it: a line break would break the model card and
    every report, and " refund" beside "refund" would be two labels (``read_csv`` drops surrounding spaces;
    data built by hand must too). The ValueError names the offending labels."""
    bad = [name for name in names if name != name.strip() or control_char(name) is not None]
    if bad:
        listed = ", ".join(repr(name[:40]) for name in bad[:5])
        raise ValueError(f"{len(bad)} {what}(s) have spaces around them or hold a line break or another control "
                         f"character: {listed}; give one-line names without surrounding spaces")


def check_topics(train: TextDataset, selection: TextDataset, sep: str, min_texts: int) -> list[str]:
    """A multi-label data set's topics (sorted); a ValueError names every topic on fewer than ``min_texts``
    training texts, or on every one, and every selection topic that training lacks."""
    counts = Counter(t for cell in train.labels for t in split_labels(cell, sep))
    check_label_names(list(counts), "topic")
    if len(counts) < 2:
        raise ValueError(f"the training data has {len(counts)} topic(s) ({sorted(counts)}) with the separator "
                         f"{sep!r}; a tagger needs at least 2 (is --label-sep right?)")
    few = sorted((n, topic) for topic, n in counts.items() if n < min_texts or n == len(train))
    if few:
        listed = ", ".join(f"{topic!r} ({n})" for n, topic in few[:10])
        raise ValueError(f"{len(few)} topic(s) are on fewer than {min_texts} training texts, or on all of them: "
                         f"{listed} (counted after the selection and certification texts were set aside); add "
                         "texts or drop those topics")
    unseen = sorted({t for cell in selection.labels for t in split_labels(cell, sep)} - set(counts))
    if unseen:
        raise ValueError(f"{len(unseen)} selection topic(s) never appear in training: {unseen[:10]}")
    _warn_on_copies(train, selection)
    if len(selection) < 200:
        log.warning("only %d selection texts: the cut-offs and the threshold chosen on them are rough", len(selection))
    joined = sorted(t for t in counts if any(c in t for c in "|;,") and sep not in t)
    if joined:
        log.warning("%d topic(s) hold a separator character, e.g. %r: is --label-sep %r right?", len(joined),
                    joined[0], sep)
    return sorted(counts)


def _warn_on_copies(train: TextDataset, selection: TextDataset) -> None:
    """Warn about training texts repeated with another label, and selection texts that are training texts
    (but for case, spacing or punctuation): choices made on those are optimistic."""
    keys: dict[str, str] = {}
    conflicts = 0
    for text, label in zip(train.texts, train.labels):
        if keys.setdefault(dedup_key(text), label) != label:
            conflicts += 1
    if conflicts:
        log.warning("%d training texts repeat an earlier text (but for case, spacing or punctuation) with another "
                    "label", conflicts)
    overlap = sum(dedup_key(t) in keys for t in selection.texts)
    if overlap:
        log.warning("%d of %d selection texts are also training texts: the threshold, the mix and the figures chosen "
                    "on them will be optimistic; use held-out texts", overlap, len(selection))


def check_labels(train: TextDataset, selection: TextDataset, min_texts: int) -> list[str]:
    """The label set (sorted); a ValueError names every label with too few training texts and every
    selection label that training lacks; warnings flag data that would make the choices on the
    selection texts unreliable (selection texts that are training texts, too few of them, conflicting duplicates)."""

    counts = Counter(train.labels)
    check_label_names(list(counts))
    if len(counts) < 2:
        raise ValueError(f"the training data has {len(counts)} label(s) ({sorted(counts)}); a classifier needs at least 2")
    few = sorted((n, label) for label, n in counts.items() if n < min_texts)
    if few:
        listed = ", ".join(f"{label!r} ({n})" for n, label in few[:10])
        raise ValueError(f"{len(few)} label(s) have fewer than {min_texts} training texts: {listed} (counted after "
                         "the selection and certification texts were set aside); add texts or drop those labels")
    unseen = sorted(set(selection.labels) - set(counts))
    if unseen:
        raise ValueError(f"{len(unseen)} selection label(s) never appear in training: {unseen[:10]}")
    _warn_on_copies(train, selection)
    if len(selection) < 200:
        log.warning("only %d selection texts: the threshold, the mix and any 'none of these' cut chosen on them are "
                    "rough; 500 or more are better", len(selection))
    if len(set(selection.labels)) < len(counts) // 2:
        log.warning("the selection texts cover %d of the %d labels", len(set(selection.labels)), len(counts))
    return sorted(counts)
