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


_frozen = 0  # subdirs whose planned records are alive: the heap is frozen while any is


def hold_frozen() -> None:
    """A subdir's records and plan will live until it is published: move everything alive now out of the
    collector's sight (gc.freeze), so that its collections stop walking them again. Measured on a
    600,000-record subdir: 2.7 s of collections that freed nothing. Still freed by reference counting."""
    global _frozen
    with _lock:
        _frozen += 1
        gc.freeze()


def release_frozen() -> None:
    """That subdir is done: once no other holds the heap frozen, the collector sees everything again."""
    global _frozen
    with _lock:
        _frozen -= 1
        if _frozen == 0:
            gc.unfreeze()


def without_gc(function: Callable[P, T]) -> Callable[P, T]:
    """`function` run with the collector paused (see the module's note)."""

    @wraps(function)
    def paused(*args: P.args, **kwargs: P.kwargs) -> T:
        with gc_paused():
            return function(*args, **kwargs)

    return paused
