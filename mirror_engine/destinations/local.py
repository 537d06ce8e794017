"""A channel in a local folder: temp file, rename, one filesystem sync per batch of packages."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from mirror_engine.destinations.base import FileStat, IndexUpdate, read_then_write
from mirror_engine.errors import destination_error
from mirror_engine.repodata import is_package_filename

log = logging.getLogger(__name__)
TEMP_SUFFIX = ".part"


class LocalDestination:
    def __init__(self, channel_dir: Path) -> None:
        self.channel_dir = channel_dir
        self._made: set[str] = set()  # subdir folders known to exist

    @property
    def display(self) -> str:
        return str(self.channel_dir)

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        with _os_errors(self.channel_dir):
            self.channel_dir.mkdir(parents=True, exist_ok=True)
        folders = [entry for entry in self.channel_dir.iterdir() if entry.is_dir()]
        folders += [folder / "shards" for folder in folders if (folder / "shards").is_dir()]
        removed = sum(_remove_temps(folder) for folder in folders)
        if removed:
            log.info("%s: removed %d temporary files left by an interrupted run", self.channel_dir, removed)

    async def close(self) -> None:
        pass

    async def listing(self, subdir: str) -> dict[str, FileStat]:
        return await asyncio.to_thread(self._listing, self.channel_dir / subdir)

    @staticmethod
    def _listing(folder: Path) -> dict[str, FileStat]:
        if not folder.is_dir():
            return {}
        listing = {}
        with _os_errors(folder):
            # Listed through the folder's descriptor, each stat is relative to it (fstatat) instead of walking
            # the whole path again: 600,000 stats took 1.9 s, now 1.6 s.
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for entry in os.scandir(fd):
                    if is_package_filename(entry.name) and entry.is_file():
                        stat = entry.stat()
                        listing[entry.name] = FileStat(stat.st_size, stat.st_mtime_ns)
            finally:
                os.close(fd)
        return listing

    async def stat(self, subdir: str, filename: str) -> FileStat | None:
        try:
            stat = (self.channel_dir / subdir / filename).stat()
        except FileNotFoundError:
            return None
        return FileStat(stat.st_size, stat.st_mtime_ns)

    def temp_path(self, subdir: str, filename: str) -> Path:
        folder = self.channel_dir / subdir
        if subdir not in self._made:
            with _os_errors(folder):
                folder.mkdir(parents=True, exist_ok=True)
            self._made.add(subdir)
        return folder / f".{filename}.{secrets.token_hex(4)}{TEMP_SUFFIX}"

    def final_path(self, subdir: str, filename: str) -> Path | None:
        return self.channel_dir / subdir / filename

    async def commit(self, temp: Path, subdir: str, filename: str) -> None:
        with _os_errors(temp):
            os.replace(temp, self.channel_dir / subdir / filename)

    def commit_path(self, subdir: str, filename: str) -> Path | None:
        return self.channel_dir / subdir / filename  # `commit` is this rename and nothing more

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        await asyncio.to_thread(self._write_atomically, self.channel_dir / subdir / name, data)

    async def write_index_file(self, subdir: str, name: str, source: Path) -> None:
        await asyncio.to_thread(self._place_atomically, source, self.channel_dir / subdir / name)

    async def read_index(self, subdir: str, name: str) -> bytes | None:
        path = self.channel_dir / subdir / name
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise destination_error(path, exc) from None

    async def update_index(self, subdir: str, name: str, update: IndexUpdate) -> None:
        await read_then_write(self, subdir, name, update)

    async def write_absent(self, subdir: str, files: list[tuple[str, bytes]]) -> int:
        """Content-addressed files (shards): write those not there yet, all durable before this returns."""

        # A 600,000-record subdir has 25,000 shards: one listing per folder instead of a stat per file,
        # and plain os calls, took their writing from 2.7 s to a fraction of that.
        def write_all() -> int:
            written = 0
            present: dict[Path, set[str]] = {}
            for name, data in files:
                path = self.channel_dir / subdir / name
                folder = path.parent
                if folder not in present:
                    with _os_errors(folder):
                        folder.mkdir(parents=True, exist_ok=True)
                        present[folder] = set(os.listdir(folder))
                if path.name in present[folder]:
                    continue
                temp = folder / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
                with _os_errors(temp):
                    try:
                        _write_new(temp, data)
                        os.replace(temp, path)
                    except BaseException:
                        temp.unlink(missing_ok=True)
                        raise
                written += 1
            if written:
                self.make_durable()  # one flush for thousands of small files, instead of an fsync each
            return written

        return await asyncio.to_thread(write_all)

    async def list_folder(self, subdir: str, folder: str) -> dict[str, float]:
        """Files in `<subdir>/<folder>/` with their mtimes (for garbage-collecting old shards)."""

        def scan() -> dict[str, float]:
            path = self.channel_dir / subdir / folder
            if not path.is_dir():
                return {}
            return {e.name: e.stat().st_mtime for e in os.scandir(path) if e.is_file() and not e.name.startswith(".")}

        return await asyncio.to_thread(scan)

    def make_durable(self) -> None:
        """Everything written to the destination so far reaches the disk: one syncfs(2) for every package
        renamed since the last call (packages are written without an fsync each; see transfer.py)."""
        self.channel_dir.mkdir(parents=True, exist_ok=True)
        with _os_errors(self.channel_dir):
            sync_filesystem(self.channel_dir)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        folder = path.parent
        temp = folder / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        with _os_errors(temp):
            folder.mkdir(parents=True, exist_ok=True)
            try:
                _write_new(temp, data)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        self._place_atomically(temp, path)

    def _place_atomically(self, temp: Path, path: Path) -> None:
        """Make `temp` durable and rename it to `path` (same folder): readers see the old file or the new."""
        with _os_errors(temp):
            try:
                fd = os.open(temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                # The packages renamed before this index must be durable before the index names them.
                self.make_durable()
                os.replace(temp, path)
                _fsync_dir(path.parent)
            finally:
                temp.unlink(missing_ok=True)

    async def delete(self, subdir: str, filenames: list[str]) -> None:
        def unlink_all() -> None:
            for filename in filenames:
                with _os_errors(self.channel_dir / subdir / filename):
                    (self.channel_dir / subdir / filename).unlink(missing_ok=True)

        await asyncio.to_thread(unlink_all)


def _remove_temps(folder: Path) -> int:
    count = 0
    for entry in folder.iterdir():
        if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
            entry.unlink(missing_ok=True)
            count += 1
    return count


_LIBC = ctypes.CDLL(None, use_errno=True)
_SYNCFS = getattr(_LIBC, "syncfs", None)  # Linux; elsewhere os.sync(), which flushes every filesystem


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask decides, as for write_bytes
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def sync_filesystem(folder: Path) -> None:
    """Flush every dirty page and inode of the filesystem holding `folder` (syncfs(2))."""
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise destination_error(path, exc) from None
