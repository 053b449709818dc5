"""Fixtures of the adversarial suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from adv_helpers import copy_bundle


@pytest.fixture()
def b(tmp_path: Path, tiny_bundle: Path) -> Path:
    """A copy of the tiny bundle to tamper with."""
    return copy_bundle(tiny_bundle, tmp_path / "b")
