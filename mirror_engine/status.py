"""`status`: what the last or current run has done and has left, read from the journal alone."""

from __future__ import annotations

import time

from mirror_engine.config import MirrorConfig
from mirror_engine.journal import Journal, State


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


async def status_report(config: MirrorConfig) -> str:
    path = config.state_dir / "journal.sqlite"
    journal = await Journal.open_readonly(path, config.dest_channel)
    if journal is None:
        return f"{config.channel_dir}: no journal at {path}; nothing has been mirrored here yet"
    try:
        run = await journal.last_run()
        counts = await journal.counts()
        failures = await journal.failures()
        indexes = await journal.indexes()
    finally:
        await journal.close()
    lines = [f"mirror: {config.channel_dir}"]
    if run is None:
        lines.append("no run recorded")
    else:
        lines.append(
            f"last run #{run.id} (pid {run.pid}): {run.status}, started {_when(run.started)}, "
            f"finished {_when(run.finished)}{'; ' + run.note if run.note else ''}"
        )
    for state in State:
        files, nbytes = counts.get(state.value, (0, 0))
        if files:
            lines.append(f"  {state.value:<12} {files:>9} files {nbytes / 1e6:>12,.1f} MB")
    left = sum(counts.get(state.value, (0, 0))[0] for state in (State.PLANNED, State.DOWNLOADING))
    lines.append(f"left to fetch: {left} files")
    lines.extend(f"index {subdir}: {files} files, published {_when(when)}" for subdir, files, when in indexes)
    if failures:
        lines.append(f"{len(failures)} failed file(s):")
        lines.extend(f"  {subdir}/{filename}: {reason}" for subdir, filename, reason in failures)
    return "\n".join(lines)
