"""One run per destination channel: an flock'd file that names its holder; the kernel frees it if we die."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO

from mirror_engine.errors import DestinationBusy, DestinationError, destination_error


class RunLock:
    """Held for a whole run. A lock left by a dead process (kill -9, reboot) is simply taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, what: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise DestinationError(f"{self.path}: cannot create the lock file: {exc.strerror}") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(handle)
            handle.close()
            raise DestinationBusy(f"{what}: another mirror_engine run is writing here ({holder})") from None
        try:
            handle.seek(0)
            handle.truncate()
            json.dump({"pid": os.getpid(), "started": time.time()}, handle)
            handle.flush()
        except OSError as exc:  # a full disk: the lock we took must not outlive this failed run
            with contextlib.suppress(OSError):  # close() flushes again, fails again, and closes all the same
                handle.close()
            raise destination_error(self.path, exc) from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def _describe_holder(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder["started"])))
        return f"pid {int(holder['pid'])}, started {started}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
