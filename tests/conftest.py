"""Shared by every test: the machine's own conda configuration must not leak into them, and no run may
leave the heap frozen (gcpause) behind it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_machine_condarc(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config() merges ~/.condarc and /etc/conda/.condarc; a developer's proxy or CA must not change results."""
    monkeypatch.setattr("mirror_engine.config.conda_settings", dict)


@pytest.fixture(autouse=True)
def heap_thawed_after_each_test() -> Iterator[None]:
    """A run freezes the heap from a subdir's plan to its publish; a failed or stopped run must thaw it too,
    or every later collection in the process misses what was alive then."""
    yield
    assert gc.get_freeze_count() == 0, "a run left the heap frozen"
