"""Deterministic workloads for the benchmarks: synthetic channels of any size, written fast."""

from __future__ import annotations

import hashlib
import os
import random
import sys
from pathlib import Path

import orjson

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
EMPTY_MD5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()


def record(name: str, index: int, size: int, sha256: str, md5: str) -> dict[str, object]:
    return {
        "name": name,
        "version": f"1.{index}",
        "build": "h0_0",
        "build_number": 0,
        "depends": ["libzlib >=1.2.13,<2.0a0"],
        "license": "BSD-3-Clause",
        "md5": md5,
        "sha256": sha256,
        "size": size,
        "subdir": "linux-64",
        "timestamp": 1_700_000_000_000 + index,
    }


def filename(index: int) -> str:
    return f"pkg{index % 5000}-1.{index}-h0_0.conda"


def empty_file_channel(upstream: Path, channel_dir: Path, count: int) -> None:
    """An upstream index of `count` empty packages, and a destination that already holds them all.

    Empty files cost an inode and no data block, so a million of them fit anywhere; a no-op resync over
    them measures listing, journal and planning, which is the point, and not reading bytes.
    """
    packages = {filename(i): record(f"pkg{i % 5000}", i, 0, EMPTY_SHA256, EMPTY_MD5) for i in range(count)}
    doc = {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages, "repodata_version": 1}
    (upstream / "linux-64").mkdir(parents=True, exist_ok=True)
    (upstream / "linux-64" / "repodata.json").write_bytes(orjson.dumps(doc))
    (upstream / "noarch").mkdir(exist_ok=True)
    (upstream / "noarch" / "repodata.json").write_bytes(orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    folder = channel_dir / "linux-64"
    folder.mkdir(parents=True, exist_ok=True)
    for name in packages:
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))


def small_files_channel(upstream: Path, count: int, size: int, seed: int = 7) -> int:
    """`count` packages of `size` random bytes in linux-64, with a valid index; returns the total bytes."""
    rng = random.Random(seed)
    folder = upstream / "linux-64"
    folder.mkdir(parents=True, exist_ok=True)
    packages = {}
    for index in range(count):
        data = rng.randbytes(size)
        name = filename(index)
        (folder / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        packages[name] = record(
            f"pkg{index % 5000}", index, size, digest, hashlib.md5(data, usedforsecurity=False).hexdigest()
        )
    doc = {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages, "repodata_version": 1}
    (folder / "repodata.json").write_bytes(orjson.dumps(doc))
    (upstream / "noarch").mkdir(exist_ok=True)
    (upstream / "noarch" / "repodata.json").write_bytes(orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    return count * size


def main(argv: list[str]) -> int:
    """`python -m benchmarks.workloads empty UPSTREAM CHANNEL_DIR COUNT`: run in a child process, so that
    the runner stays small: a child's peak RSS on Linux counts the memory it was forked with."""
    kind, upstream, channel_dir, count = argv
    if kind != "empty":
        raise SystemExit(f"unknown workload {kind!r}")
    empty_file_channel(Path(upstream), Path(channel_dir), int(count))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
