"""The malloc arena cap, checked in fresh interpreters with glibc's own account of its arenas."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHURN = """
import ctypes, sys, threading
from mirror_engine.arenas import cap_malloc_arenas
if sys.argv[1] == "capped":
    assert cap_malloc_arenas(1)
def churn():
    blocks = [bytes(4000) for _ in range(1000)]  # malloc'd, not from Python's small-object pools
threads = [threading.Thread(target=churn) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the cap is glibc's mallopt")


def arenas_after_threads(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return done.stderr.count("Arena ")


def test_threads_share_the_capped_arenas() -> None:
    assert arenas_after_threads("free") > 1  # each thread got an arena of its own: the cap has something to do
    assert arenas_after_threads("capped") == 1
