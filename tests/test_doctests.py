"""The examples in the public API's docstrings run and give what they show (issue 26)."""

from __future__ import annotations

import doctest

import pytest

import cascade

ERRORS = {"BundleError", "CascadeError", "CalibrationWarning"}  # exception classes: what they mean is enough
PUBLIC = [getattr(cascade, name) for name in cascade.__all__ if name != "__version__" and name not in ERRORS] + [
    cascade.Cascade.classify, cascade.Calibrator.choose]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda obj: getattr(obj, "__qualname__", repr(obj)))
def test_the_docstring_has_parameters_and_its_examples_run(obj, monkeypatch):
    monkeypatch.delenv("CASCADE_BUNDLE", raising=False)
    doc = obj.__doc__ or ""
    assert "Parameters\n" in doc or "Attributes\n" in doc, f"{obj.__qualname__} has no numpydoc parameter section"
    failures = failed_examples(obj)
    assert failures == 0, f"{failures} example(s) of {obj.__qualname__} failed (see the output above)"


def failed_examples(obj: object, quiet: bool = False) -> int:
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(obj, getattr(obj, "__qualname__", "obj"), globs={}):
        runner.run(test, out=(lambda text: None) if quiet else None)
    return runner.failures


def test_a_wrong_example_is_caught():
    def planted() -> None:
        """>>> 1 + 1
        3
        """

    assert failed_examples(planted, quiet=True) == 1
