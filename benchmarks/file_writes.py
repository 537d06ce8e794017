"""Why package bodies are written with os.write and not aiofiles: the same hashed 512 MiB written both ways.

    .venv/bin/python -m benchmarks.file_writes [--repeat 5] [--folder DIR]

aiofiles runs every write in a thread of the default executor and wakes the loop for its answer; the engine
writes each chunk where it arrives, in the loop (a worker process's), since a write into the page cache
does not block on the disk. Runs alternate which way goes first; the medians, with min and max, are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiofiles

CHUNK = b"x" * (256 * 1024)
CHUNKS = 2048  # 512 MiB


async def through_aiofiles(path: Path) -> None:
    digest = hashlib.sha256()
    async with aiofiles.open(path, "wb") as file:
        for _ in range(CHUNKS):
            digest.update(CHUNK)
            await file.write(CHUNK)


async def in_the_loop(path: Path) -> None:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(CHUNKS):
            digest.update(CHUNK)
            os.write(fd, CHUNK)
            await asyncio.sleep(0)  # yield to the loop as often as aiofiles does, to be fair to it
    finally:
        os.close(fd)


WAYS: dict[str, Callable[[Path], Coroutine[Any, Any, None]]] = {"aiofiles": through_aiofiles, "os.write": in_the_loop}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # the executor's threads are this process's too
    return usage.ru_utime + usage.ru_stime


def measure(way: str, path: Path) -> tuple[float, float]:
    cpu, wall = cpu_seconds(), time.perf_counter()
    asyncio.run(WAYS[way](path))
    measured = time.perf_counter() - wall, cpu_seconds() - cpu
    path.unlink()
    return measured


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: the temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        results: dict[str, list[tuple[float, float]]] = {way: [] for way in WAYS}
        for repeat in range(args.repeat):
            order = list(WAYS) if repeat % 2 == 0 else list(reversed(WAYS))
            for way in order:
                results[way].append(measure(way, Path(folder) / "body"))
    base_wall = statistics.median(wall for wall, _ in results["os.write"])
    for way, runs in results.items():
        walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
        ratio = statistics.median(walls) / base_wall
        print(f"{way:9} wall {spread(walls)}  CPU {spread(cpus)}  wall ÷ os.write's {ratio:.2f}x")


if __name__ == "__main__":
    main()
