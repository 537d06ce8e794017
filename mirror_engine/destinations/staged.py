"""Remote stores: downloads land in a local staging folder, and commit uploads the verified file."""

from __future__ import annotations

import abc
import asyncio
import logging
import secrets
import shutil
from pathlib import Path

from mirror_engine.destinations.base import FileStat, IndexUpdate, read_then_write

log = logging.getLogger(__name__)


class StagedDestination(abc.ABC):
    """The part every remote destination shares: temporary files under `staging_dir`, never in the store.

    A subclass uploads (`upload_file`) and writes index files; nothing unverified ever reaches the store,
    and a crashed run leaves at most files in the staging folder, which `open` clears.
    """

    def __init__(self, staging_dir: Path) -> None:
        self.staging_dir = staging_dir
        self._committed: dict[tuple[str, str], FileStat] = {}  # packages this run has stored

    @property
    @abc.abstractmethod
    def display(self) -> str: ...

    async def open(self) -> None:
        await asyncio.to_thread(self._clear_staging)
        await self.connect()

    def _clear_staging(self) -> None:
        if self.staging_dir.exists():
            left = sum(1 for entry in self.staging_dir.iterdir())
            if left:
                log.info("%s: removing %d file(s) an interrupted run left", self.staging_dir, left)
            shutil.rmtree(self.staging_dir)
        self.staging_dir.mkdir(parents=True)

    @abc.abstractmethod
    async def connect(self) -> None:
        """Reach the store (and create the channel where that is needed). Also called lazily by
        `listing` and `stat`, which `plan` uses without `open`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    def temp_path(self, subdir: str, filename: str) -> Path:
        return self.staging_dir / f"{subdir}.{filename}.{secrets.token_hex(4)}.part"

    def final_path(self, subdir: str, filename: str) -> Path | None:
        return None

    def commit_path(self, subdir: str, filename: str) -> Path | None:
        return None  # committing is an upload

    def make_durable(self) -> None:  # noqa: B027 - deliberately empty for every remote store
        """Nothing to do here: a package counts as stored once the store has confirmed its upload."""

    async def commit(self, temp: Path, subdir: str, filename: str) -> None:
        try:
            size = (await asyncio.to_thread(temp.stat)).st_size
            await self.upload_file(temp, subdir, filename)
        finally:
            await asyncio.to_thread(temp.unlink, True)
        # upload_file has confirmed what the store holds: the journal's `stat` right after need not ask again.
        # A package committed in a run is wanted by it, so none is deleted before the run ends.
        self._committed[(subdir, filename)] = FileStat(size, 0)

    async def stat(self, subdir: str, filename: str) -> FileStat | None:
        return self._committed.get((subdir, filename)) or await self.stat_stored(subdir, filename)

    @abc.abstractmethod
    async def upload_file(self, source: Path, subdir: str, filename: str) -> None:
        """Store a verified package; when this returns, readers of the store can fetch it."""

    @abc.abstractmethod
    async def listing(self, subdir: str) -> dict[str, FileStat]: ...

    @abc.abstractmethod
    async def stat_stored(self, subdir: str, filename: str) -> FileStat | None:
        """What the store holds under that name (size; mtime 0), asked of the store itself."""

    @abc.abstractmethod
    async def write_index(self, subdir: str, name: str, data: bytes) -> None: ...

    async def write_index_file(self, subdir: str, name: str, source: Path) -> None:
        """The file's bytes through `write_index`: a remote index file is one PUT of bytes in memory."""
        try:
            data = await asyncio.to_thread(source.read_bytes)
            await self.write_index(subdir, name, data)
        finally:
            await asyncio.to_thread(source.unlink, True)

    @abc.abstractmethod
    async def read_index(self, subdir: str, name: str) -> bytes | None: ...

    async def update_index(self, subdir: str, name: str, update: IndexUpdate) -> None:
        """Read, then write: right for a store one mirror writes; S3 overrides it with a conditional write."""
        await read_then_write(self, subdir, name, update)

    @abc.abstractmethod
    async def write_absent(self, subdir: str, files: list[tuple[str, bytes]]) -> int: ...

    @abc.abstractmethod
    async def list_folder(self, subdir: str, folder: str) -> dict[str, float]: ...

    @abc.abstractmethod
    async def delete(self, subdir: str, filenames: list[str]) -> None: ...
