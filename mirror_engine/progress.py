"""Live progress of a run: a rich display on a terminal, periodic log lines otherwise, nothing in tests."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mirror_engine.plan import SubdirPlan
from mirror_engine.transfer import TransferResult

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def planned(self, plan: SubdirPlan) -> None: ...
    def advanced(self, channel: int, nbytes: int) -> None: ...
    def finished_file(self, result: TransferResult) -> None: ...
    def close(self) -> None: ...


class NullReporter:
    def planned(self, plan: SubdirPlan) -> None:
        pass

    def advanced(self, channel: int, nbytes: int) -> None:
        pass

    def finished_file(self, result: TransferResult) -> None:
        pass

    def close(self) -> None:
        pass


class _Totals:
    def __init__(self) -> None:
        self.files = 0
        self.files_done = 0
        self.bytes = 0
        self.bytes_done = 0

    def plan(self, plan: SubdirPlan) -> None:
        self.files += len(plan.transfers)
        self.bytes += plan.fetch_bytes


class LogReporter:
    """For cron and CI logs: one line every `interval` seconds while files are moving."""

    def __init__(self, interval: float = 10.0) -> None:
        self._totals = _Totals()
        self._interval = interval
        self._started = time.monotonic()
        self._last = self._started

    def planned(self, plan: SubdirPlan) -> None:
        self._totals.plan(plan)
        log.info("%s: %d files selected, %d to fetch (%.1f MB)", plan.subdir, len(plan.transfers),
                 plan.fetch_count, plan.fetch_bytes / 1e6)  # fmt: skip

    def advanced(self, channel: int, nbytes: int) -> None:
        self._totals.bytes_done += nbytes
        self._maybe_log()

    def finished_file(self, result: TransferResult) -> None:
        self._totals.files_done += 1
        self._maybe_log()

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            return
        self._last = now
        totals = self._totals
        rate = totals.bytes_done / max(now - self._started, 1e-9)
        left = max(totals.bytes - totals.bytes_done, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        log.info("progress: %d/%d files, %.1f/%.1f MB, %.1f MB/s, ETA %s", totals.files_done, totals.files,
                 totals.bytes_done / 1e6, totals.bytes / 1e6, rate / 1e6, eta)  # fmt: skip

    def close(self) -> None:
        pass


class RichReporter:
    """For a person at a terminal: one bar per channel with files, bytes, rate and ETA."""

    def __init__(self, channels: list[str], console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._bytes: dict[int, TaskID] = {}
        self._files_total: dict[int, int] = {}
        self._files_done: dict[int, int] = {}
        self._names = channels
        self._progress.start()

    def _task(self, channel: int) -> TaskID:
        if channel not in self._bytes:
            name = self._names[channel].rstrip("/")
            self._bytes[channel] = self._progress.add_task(name[-40:], total=0, files="")
        return self._bytes[channel]

    def planned(self, plan: SubdirPlan) -> None:
        for item in plan.transfers:
            task = self._task(item.channel)
            total = self._progress.tasks[task].total or 0
            self._progress.update(task, total=total + (0 if item.check_existing else item.size))
            self._files_total[item.channel] = self._files_total.get(item.channel, 0) + 1
            self._show_files(item.channel)

    def _show_files(self, channel: int) -> None:
        done, total = self._files_done.get(channel, 0), self._files_total.get(channel, 0)
        self._progress.update(self._task(channel), files=f"{done}/{total} files")

    def advanced(self, channel: int, nbytes: int) -> None:
        self._progress.advance(self._task(channel), nbytes)

    def finished_file(self, result: TransferResult) -> None:
        channel = result.item.channel
        self._files_done[channel] = self._files_done.get(channel, 0) + 1
        self._show_files(channel)

    def close(self) -> None:
        self._progress.stop()
