"""Shared by every test: the machine's own conda configuration must not leak into them, no run may leave the
heap frozen (gcpause) behind it, and under CI=true a test whose real part is missing fails instead of skipping."""

from __future__ import annotations

import gc
import os
import socket
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

# CI sets CI=true (.ci/run's caller, and most CI services): there a missing nginx, chromium, quetz or SeaweedFS
# is a broken setup to mend, not a test to pass over.
SKIPS_FAIL = os.environ.get("CI", "").lower() in ("true", "1", "yes")


# What the machine's user or CI service has configured that would reach the engine, in process or in the
# subprocesses the tests start: proxies, conda's and AWS's settings, ~/.netrc logins.
MACHINE_SETTINGS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NETRC", "CONDARC", "XDG_CONFIG_HOME")


def pytest_configure(config: pytest.Config) -> None:
    """Before any test or subprocess: a HOME of the suite's own, with an empty .condarc named by CONDARC."""
    home = Path(tempfile.mkdtemp(prefix="mirror-engine-tests-home-"))
    (home / ".condarc").write_text("{}\n")
    for name in list(os.environ):
        if name.upper() in MACHINE_SETTINGS or name.upper().startswith("AWS_"):
            del os.environ[name]
    os.environ.update(HOME=str(home), CONDARC=str(home / ".condarc"), XDG_CONFIG_HOME=str(home / ".config"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: this test would have been skipped, and a skip is a failure here: {reason}"
    return report


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
