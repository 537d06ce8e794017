"""The Destination protocol: what the engine needs from any store a channel is mirrored into."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

IndexUpdate = Callable[[bytes | None], bytes]  # the current bytes (None: absent) -> the bytes to write


class FileStat(NamedTuple):
    """A file's size and mtime as listed. A tuple, not a frozen dataclass: made 600,000 times by the
    listing of a conda-forge-sized subdir, where a dataclass's __init__ alone took a second."""

    size: int
    mtime_ns: int


class Destination(Protocol):
    """A channel being written: package files first, then index files, then deletions."""

    @property
    def display(self) -> str: ...

    async def open(self) -> None:
        """Create the destination if needed and clear the temporary files a crashed run left."""

    async def close(self) -> None: ...

    async def listing(self, subdir: str) -> dict[str, FileStat]:
        """Package files present in a subdir. Works before `open` (plan --dry-run calls it alone)."""
        ...

    async def stat(self, subdir: str, filename: str) -> FileStat | None:
        """Size and mtime of any file of a subdir; a remote store that has no mtime gives 0 in both
        `stat` and `listing`, so the journal's size+mtime check still holds."""
        ...

    def temp_path(self, subdir: str, filename: str) -> Path:
        """A fresh local path a download may stream to before it is verified."""
        ...

    def final_path(self, subdir: str, filename: str) -> Path | None:
        """Where a committed package can be read back locally, or None for a remote store."""
        ...

    def commit_path(self, subdir: str, filename: str) -> Path | None:
        """Where another process (a transfer worker) may rename a verified file itself instead of calling
        `commit`; None when `commit` does more than that rename (an upload), so it must run."""
        ...

    def make_durable(self) -> None:
        """Make every committed package durable (blocking; the journal calls it in its own thread before
        it records files as verified). Packages are not fsynced one by one."""

    async def commit(self, temp: Path, subdir: str, filename: str) -> None:
        """Move a verified temporary file into place (rename, or upload and remove)."""

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        """Write one index file atomically: readers see the old bytes or the new, never a mix.
        `name` may name a file in a folder of the subdir (`shards/<sha256>.msgpack.zst`)."""

    async def write_index_file(self, subdir: str, name: str, source: Path) -> None:
        """`write_index` for bytes written to `source`, a path from `temp_path`, which this consumes: a
        600,000-record repodata.json (266 MB) and its page go to their files, not whole into memory."""

    async def read_index(self, subdir: str, name: str) -> bytes | None:
        """The bytes of a published index file (`subdir` "" for the channel root), None if absent."""
        ...

    async def update_index(self, subdir: str, name: str, update: IndexUpdate) -> None:
        """Replace an index file by `update(current bytes)`. A store that several mirrors write at once
        (S3) re-reads and retries when another writer got in between; see `read_then_write`."""

    async def write_absent(self, subdir: str, files: list[tuple[str, bytes]]) -> int:
        """Write the content-addressed files that do not exist yet, durably; returns how many it wrote."""
        ...

    async def list_folder(self, subdir: str, folder: str) -> dict[str, float]:
        """Files of `<subdir>/<folder>/`: name -> mtime (seconds)."""
        ...

    async def delete(self, subdir: str, filenames: list[str]) -> None: ...


async def read_then_write(destination: Destination, subdir: str, name: str, update: IndexUpdate) -> None:
    """`update_index` for a store one mirror writes at a time (a folder, an HTTP PUT target): the run lock
    already keeps a second writer out, so there is no one to race with between the read and the write."""
    current = await destination.read_index(subdir, name)
    await destination.write_index(subdir, name, await asyncio.to_thread(update, current))
