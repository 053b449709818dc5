"""Reading a ``POST /v1/classify`` body: JSON parsed here, not by FastAPI, so that every malformed body gets
422 naming what is wrong (FastAPI answers 400 to bodies that are not UTF-8 or nest too deeply), and every
value is checked by the same rules as :func:`cascade.classify` (a text ``classify()`` answers, the server
answers; a threshold it refuses, the server refuses with the same words)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..calibration.feedback import check_feedback_labels
from ..inputs import check_top_k
from ..policy.routing import check_threshold

FIELDS = ("texts", "top_k", "threshold")


class Invalid(Exception):
    """The body is not a valid request; ``errors`` are FastAPI-shaped (``loc``, ``msg``, ``type``)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class ClassifyRequest:
    texts: list[str]
    top_k: int  # resolved: None (every label) is the number of labels
    threshold: float | None  # None: the bundle's own


def _error(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body (UTF-8, as RFC 8259 requires); :class:`Invalid` with the reason otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid([_error([], f"the body is not UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start}): "
                                  "send JSON encoded as UTF-8", "json_invalid")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid([_error([], f"JSON decode error at line {exc.lineno} column {exc.colno}: {exc.msg}",
                              "json_invalid")]) from None
    except RecursionError:
        raise Invalid([_error([], "JSON nested too deeply", "json_invalid")]) from None
    except ValueError as exc:  # an integer too long to convert (Python's 4,300-digit limit)
        raise Invalid([_error([], f"JSON value out of range: {exc}", "json_invalid")]) from None


def parse_classify(raw: bytes, *, max_texts: int, max_chars: int, n_labels: int) -> ClassifyRequest:
    """A checked :class:`ClassifyRequest` from a body; :class:`Invalid` naming every field that is wrong."""
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise Invalid([_error([], 'the body must be a JSON object such as {"texts": ["..."]}', "model_attributes_type")])
    errors = [_error([key], f"unknown field {key!r}; the fields are {', '.join(FIELDS)}", "extra_forbidden")
              for key in value if key not in FIELDS]
    texts = value.get("texts")
    if "texts" not in value:
        errors.append(_error(["texts"], "texts is required: a list of strings", "missing"))
    elif not isinstance(texts, list):
        errors.append(_error(["texts"], f"texts must be a list of strings, got {_kind(texts)}", "list_type"))
    elif len(texts) > max_texts:
        errors.append(_error(["texts"], f"at most {max_texts} texts per request, got {len(texts)}; send the rest "
                                        "in further requests", "too_long"))
    else:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                errors.append(_error(["texts", i], f"texts[{i}] is {_kind(text)}, not a string", "string_type"))
            elif len(text) > max_chars:
                errors.append(_error(["texts", i], f"texts[{i}] has {len(text)} characters, more than the "
                                                   f"{max_chars} allowed per text", "string_too_long"))
    top_k = 1
    if "top_k" in value:
        try:
            top_k = check_top_k(value["top_k"], n_labels)
        except ValueError as exc:
            errors.append(_error(["top_k"], str(exc), "value_error"))
    threshold = value.get("threshold")
    if threshold is not None:
        try:
            threshold = check_threshold(threshold)
        except ValueError as exc:
            errors.append(_error(["threshold"], str(exc), "value_error"))
    if errors:
        raise Invalid(errors)
    return ClassifyRequest(list(texts or []), top_k, threshold)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def request_schema(max_texts: int, max_chars: int) -> dict[str, Any]:
    """The body's JSON schema, for the OpenAPI page."""
    return {
        "type": "object", "additionalProperties": False, "required": ["texts"],
        "properties": {
            "texts": {"type": "array", "maxItems": max_texts, "items": {"type": "string", "maxLength": max_chars},
                      "description": f"texts to classify, at most {max_texts}, each at most {max_chars} characters"},
            "top_k": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": 1,
                      "description": "labels listed per text (null: every label)"},
            "threshold": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}],
                          "default": None, "description": "routing cut-off on the cheap stage's confidence "
                                                          "(null: the bundle's); not a score filter"},
        },
    }


@dataclass(frozen=True)
class FeedbackRequest:
    texts: list[str]
    labels: list[Any]  # checked: a label, or a sorted list of topics


def parse_feedback(raw: bytes, *, max_texts: int, max_chars: int, model: Any) -> FeedbackRequest:
    """A checked ``POST /v1/feedback`` body: ``{"texts": [...], "labels": [...]}``, one label per text (a
    tagger's: a list of topics); :class:`Invalid` naming what is wrong, an unknown label included."""
    value = parse_json(raw)
    if not isinstance(value, dict):
        raise Invalid([_error([], 'the body must be a JSON object such as {"texts": ["..."], "labels": ["..."]}',
                              "model_attributes_type")])
    errors = [_error([key], f"unknown field {key!r}; the fields are texts, labels", "extra_forbidden")
              for key in value if key not in ("texts", "labels")]
    texts, labels = value.get("texts"), value.get("labels")
    for name, items in (("texts", texts), ("labels", labels)):
        if name not in value:
            errors.append(_error([name], f"{name} is required: a list", "missing"))
        elif not isinstance(items, list):
            errors.append(_error([name], f"{name} must be a list, got {_kind(items)}", "list_type"))
        elif len(items) > max_texts:
            errors.append(_error([name], f"at most {max_texts} per request, got {len(items)}", "too_long"))
    if errors or not isinstance(texts, list) or not isinstance(labels, list):
        raise Invalid(errors)
    if len(texts) != len(labels):
        raise Invalid([_error(["labels"], f"{len(labels)} labels for {len(texts)} texts: give one label per text",
                              "value_error")])
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            errors.append(_error(["texts", i], f"texts[{i}] is {_kind(text)}, not a string", "string_type"))
        elif len(text) > max_chars:
            errors.append(_error(["texts", i], f"texts[{i}] has {len(text)} characters, more than the {max_chars} "
                                               "allowed per text", "string_too_long"))
    if errors:
        raise Invalid(errors)
    try:
        checked = check_feedback_labels(model, labels)
    except ValueError as exc:
        where = str(exc).split("]", 1)[0].removeprefix("labels[")
        loc: list[Any] = ["labels", int(where)] if where.isdigit() else ["labels"]
        raise Invalid([_error(loc, str(exc), "value_error")]) from None
    return FeedbackRequest(list(texts), checked)


def feedback_schema(max_texts: int, max_chars: int) -> dict[str, Any]:
    """The feedback body's JSON schema, for the OpenAPI page."""
    return {
        "type": "object", "additionalProperties": False, "required": ["texts", "labels"],
        "properties": {
            "texts": {"type": "array", "maxItems": max_texts, "items": {"type": "string", "maxLength": max_chars},
                      "description": "texts already classified (or any texts): each is answered again, at the "
                                     "bundle's own threshold, and checked against its label"},
            "labels": {"type": "array", "maxItems": max_texts,
                       "items": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                       "description": "one per text: its true label (a tagger's: a list of topics)"},
        },
    }
