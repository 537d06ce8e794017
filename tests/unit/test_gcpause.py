"""The collector is paused while index work runs, in any number of threads, and restored after."""

from __future__ import annotations

import gc
import threading

from mirror_engine.gcpause import gc_paused, hold_frozen, release_frozen, without_gc


def test_the_collector_is_paused_inside_and_restored_by_the_last_one_out() -> None:
    assert gc.isenabled()
    inside = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with gc_paused():
            inside.set()
            leave.wait(5)

    other = threading.Thread(target=hold)
    other.start()
    inside.wait(5)
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread still holds the pause"
    leave.set()
    other.join()
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        assert without_gc(gc.isenabled)() is False
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_heap_stays_frozen_until_the_last_holder_releases_it() -> None:
    hold_frozen()
    hold_frozen()
    assert gc.get_freeze_count() > 0
    release_frozen()
    assert gc.get_freeze_count() > 0, "the other holder still holds it"
    release_frozen()
    assert gc.get_freeze_count() == 0
