"""Shared by every test: the machine's own conda configuration must not leak into them, and no run may
leave the heap frozen (gcpause) behind it."""

from __future__ import annotations

import gc
import socket
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


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port on 127.0.0.1 whose SYNs go unanswered: a listener with a full accept queue, never accepting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(4)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))  # the first fills the queue; the others hang as ours will
        yield port
    finally:
        for each in (*fillers, listener):
            each.close()
