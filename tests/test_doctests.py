"""The examples in the public API's docstrings run and give what they show (issue 26)."""

from __future__ import annotations

import doctest

import pytest

import cascade

PUBLIC = [cascade.classify, cascade.load, cascade.Cascade.classify, cascade.train, cascade.train_cheap,
          cascade.finetune, cascade.read_csv, cascade.load_banking77, cascade.carve_splits, cascade.evaluate,
          cascade.calibrate, cascade.batch, cascade.TextDataset]


@pytest.mark.parametrize("obj", PUBLIC, ids=lambda obj: obj.__qualname__)
def test_the_docstring_has_parameters_and_its_examples_run(obj, monkeypatch):
    monkeypatch.delenv("CASCADE_BUNDLE", raising=False)
    doc = obj.__doc__ or ""
    assert "Parameters\n" in doc or "Attributes\n" in doc, f"{obj.__qualname__} has no numpydoc parameter section"
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(obj, obj.__qualname__, globs={}):
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} example(s) of {obj.__qualname__} failed (see the output above)"
