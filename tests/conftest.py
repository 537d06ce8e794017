"""Shared by every test: the machine's own conda configuration must not leak into them."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_machine_condarc(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_config() merges ~/.condarc and /etc/conda/.condarc; a developer's proxy or CA must not change results."""
    monkeypatch.setattr("mirror_engine.config.conda_settings", dict)
