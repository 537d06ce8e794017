"""Helpers for tests that run `python -m mirror_engine` as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


async def start_cli(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror_engine", *args,
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def wait_for(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Ran:
    """One finished command: its exit status, what it printed, and the pid it ran as."""

    code: int
    stdout: str
    stderr: str
    pid: int


async def cli(*args: str, cwd: Path, limit: float = 120.0) -> Ran:
    """`python -m mirror_engine ARGS` to its end; `limit` only keeps a hung child from hanging the suite."""
    process = await start_cli(*args, cwd=cwd)
    stdout, stderr = await asyncio.wait_for(process.communicate(), limit)
    return Ran(await process.wait(), stdout.decode(), stderr.decode(), process.pid)
