"""Pause Python's cyclic garbage collector around big index work, which allocates millions of containers.

Decoding, filtering and re-encoding a conda-forge-sized index creates millions of dicts and lists and no
reference cycles; every generation-0 threshold crossed makes the collector walk all of them again, which
made such work 2-4x slower. Reference counting still frees everything as usual while it is paused.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from functools import wraps
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
_lock = threading.Lock()
_holders = 0  # index work may run in several threads at once: the last one out restores the collector
_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()


def without_gc(function: Callable[P, T]) -> Callable[P, T]:
    """`function` run with the collector paused (see the module's note)."""

    @wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> T:
        with gc_paused():
            return function(*args, **kwargs)

    return paused
