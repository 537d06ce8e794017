"""The Destination protocol: what the engine needs from any store a channel is mirrored into."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Destination(Protocol):
    """A channel being written: package files first, then index files, then deletions."""

    @property
    def display(self) -> str: ...

    async def open(self) -> None:
        """Take the destination for this run (lock it, create it) and clear what a crashed run left."""

    async def close(self) -> None: ...

    async def listing(self, subdir: str) -> dict[str, int]:
        """Package files present in a subdir: file name -> size."""
        ...

    def temp_path(self, subdir: str, filename: str) -> Path:
        """A fresh local path a download may stream to before it is verified."""
        ...

    def final_path(self, subdir: str, filename: str) -> Path | None:
        """Where a committed package can be read back locally, or None for a remote store."""
        ...

    async def commit(self, temp: Path, subdir: str, filename: str) -> None:
        """Move a verified temporary file into place (rename, or upload and remove)."""

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        """Write one index file atomically: readers see the old bytes or the new, never a mix."""

    async def delete(self, subdir: str, filenames: list[str]) -> None: ...
