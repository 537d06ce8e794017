"""Fetch one file to a temporary name, counting bytes and hashing while it streams; verify before anything else.

Work items and results are plain, picklable values so that transfers can move to other processes.
aiohttp's exceptions become ours through session.client_error.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import unquote, urlsplit

import aiohttp

from mirror_engine.bandwidth import TokenBucket
from mirror_engine.errors import (
    ChecksumMismatch,
    HttpStatusError,
    ShortBody,
    destination_error,
)
from mirror_engine.retry import parse_retry_after
from mirror_engine.session import Http, client_error, redact

T = TypeVar("T")
BLOCK = 1 << 20  # bytes handed to a thread at once: large enough that hashlib releases the GIL for long
# A body this small is hashed and written in the event loop (~0.5 ms at most): cheaper than a hop to a
# thread and back, whose wake-ups (futex) cost more system time than the work itself on a run of small
# packages; with one process per core there is no idle core for the thread anyway.
INLINE_BYTES = BLOCK
# A body at least this big is read off the socket by direct.py, where the session allows it (no proxy, no
# credentials in the URL): no copy of each received piece, hashed and written from one buffer in the loop.
DIRECT_MIN_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class TransferItem:
    """One package file to bring into the destination."""

    url: str
    subdir: str
    filename: str
    size: int
    sha256: str | None
    md5: str | None
    channel: int  # position in the config's channels, for reporting
    check_existing: bool = False  # a file of this size is there already: hash it before downloading


class Outcome(StrEnum):
    DOWNLOADED = "downloaded"
    PRESENT = "present"  # already in the destination with the right size and hash
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TransferResult:
    item: TransferItem
    outcome: Outcome
    nbytes: int = 0
    error: str = ""


class _Sink:
    """A temporary file that hashes what it is given; its methods run in a thread, or in the event loop
    for a body of up to INLINE_BYTES.

    The file is created on the first write, so that a small package costs one call in all (no thread
    hop): create, write, hash, check and close together in `finish`.
    """

    def __init__(self, path: Path, with_md5: bool) -> None:
        self.path = path
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False) if with_md5 else None
        self._file: BinaryIO | None = None
        # A cancelled download discards its sink while a thread may still be inside absorb: the lock makes
        # the discard wait for it, and `_discarded` stops a late absorb from creating the file again.
        self._lock = threading.RLock()
        self._discarded = False

    def absorb(self, *chunks: bytes | memoryview) -> None:
        """Hash and write `chunks` as they came off the socket: joining them first would copy every byte."""
        with self._lock:
            if self._discarded:
                raise ShortBody(f"{self.path}: written after the download was abandoned")
            for data in chunks:
                self._sha256.update(data)
                if self._md5 is not None:
                    self._md5.update(data)
            _destination_call(self.path, lambda: self._write(chunks))
            self.size += sum(map(len, chunks))

    def _write(self, chunks: tuple[bytes | memoryview, ...]) -> None:
        file = self._open()
        for data in chunks:
            file.write(data)

    def _open(self) -> BinaryIO:
        if self._file is None:
            self._file = open(self.path, "xb")  # noqa: SIM115 - closed in finish or discard
        return self._file

    def finish(self, tail: list[bytes], item: TransferItem, source: str) -> None:
        """Take the last bytes, verify size and hash, and close; raises on a mismatch.

        No fsync here: the destination makes packages durable in batches (`Destination.make_durable`)
        before the journal records them as verified, and before an index names them.
        """
        with self._lock:
            self.absorb(*tail)
            self.check(item, source)
            _destination_call(self.path, lambda: self._open().close())

    def discard(self) -> None:
        with self._lock:
            self._discarded = True
            if self._file is not None:
                self._file.close()
            self.path.unlink(missing_ok=True)

    def check(self, item: TransferItem, source: str) -> None:
        if self.size != item.size:
            raise ShortBody(f"{source}: got {self.size} bytes, the record says {item.size}")
        if item.sha256 is not None:
            actual = self._sha256.hexdigest()
            if actual != item.sha256:
                raise ChecksumMismatch(f"{source}: sha256 {actual} does not match the record's {item.sha256}")
        elif self._md5 is not None and (actual := self._md5.hexdigest()) != item.md5:
            raise ChecksumMismatch(f"{source}: md5 {actual} does not match the record's {item.md5}")


def _destination_call(path: Path, call: Callable[[], T]) -> T:
    """Run a file operation on the destination, turning OSError into our one-line errors."""
    try:
        return call()
    except OSError as exc:
        raise destination_error(path, exc) from None


async def download(
    session: Http,
    item: TransferItem,
    temp_path: Path,
    on_bytes: Callable[[int], None],
    throttle: TokenBucket | None = None,
) -> None:
    """Fetch `item` into `temp_path`, verified (made durable later, in batches); on any failure nothing is left."""
    with_md5 = item.sha256 is None
    if item.url.startswith("file://"):
        source = Path(unquote(urlsplit(item.url).path))
        await asyncio.to_thread(_copy_local, source, item, temp_path, with_md5)
        on_bytes(item.size)
        return
    sink = _Sink(temp_path, with_md5)
    try:
        if await _direct(session, item, sink, on_bytes, throttle):
            sink.finish([], item, redact(item.url))  # every byte is in: verify and close (no thread, nothing left)
            return
        tail = await _stream(session, item, sink, on_bytes, throttle)
        if sink.size == 0 and item.size <= INLINE_BYTES:  # a small package: hashed and written right here
            sink.finish(tail, item, redact(item.url))
        else:
            await asyncio.to_thread(sink.finish, tail, item, redact(item.url))
    except BaseException:
        await asyncio.shield(asyncio.to_thread(sink.discard))
        raise


async def _direct(
    session: Http,
    item: TransferItem,
    sink: _Sink,
    on_bytes: Callable[[int], None],
    throttle: TokenBucket | None,
) -> bool:
    """A big body read into `sink` by direct.py; False: it was not (nothing of the body read), ask aiohttp."""
    if session.direct is None or item.size < DIRECT_MIN_BYTES:
        return False
    headers = session.direct_headers(item.url)
    if headers is None:
        return False
    url = redact(item.url)
    return await session.direct.fetch(item.url, url, headers, item.size, sink.absorb, on_bytes, throttle)


async def _stream(
    session: Http,
    item: TransferItem,
    sink: _Sink,
    on_bytes: Callable[[int], None],
    throttle: TokenBucket | None,
) -> list[bytes]:
    """Stream the body into `sink` a block at a time; returns the last, partial block for `finish`.

    A block is the list of chunks aiohttp received, each read with `readchunk` (one buffered piece, where
    `iter_any` joins what is buffered into a new bytes), handed to the sink's thread without a copy.
    """
    url = redact(item.url)
    try:
        async with session.get(item.url, headers={"Accept-Encoding": "identity"}) as response:
            if response.status != 200:
                retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                raise HttpStatusError(url, response.status, response.reason or "", retry_after)
            promised = response.content_length
            if promised is not None and promised != item.size:
                raise ShortBody(f"{url}: server sends {promised} bytes, the record says {item.size}")
            block: list[bytes] = []
            buffered = received = 0
            async for chunk in _pieces(response.content):
                received += len(chunk)
                if received > item.size:
                    raise ShortBody(f"{url}: more than the {item.size} bytes the record says")
                block.append(chunk)
                buffered += len(chunk)
                if throttle is not None:
                    await throttle.take(len(chunk))
                if buffered >= BLOCK:
                    await asyncio.to_thread(sink.absorb, *block)
                    on_bytes(buffered)
                    block, buffered = [], 0
            on_bytes(buffered)
            return block
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise client_error(url, exc) from None


async def _pieces(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body as aiohttp buffered it, piece by piece, without joining pieces into new bytes."""
    while True:
        piece, chunk_end = await content.readchunk()
        if piece:
            yield piece
        elif not chunk_end:  # (b"", True) only marks a boundary of a chunked body; (b"", False) is the end
            return


def _copy_local(source: Path, item: TransferItem, temp_path: Path, with_md5: bool) -> None:
    """Copy from a file:// channel, hashing as we go; one thread call for the whole file."""
    sink = _Sink(temp_path, with_md5)
    try:
        try:
            reader = source.open("rb")
        except FileNotFoundError:
            raise HttpStatusError(str(source), 404, "file not found") from None
        with reader:
            while block := reader.read(BLOCK):
                sink.absorb(block)
                if sink.size > item.size:
                    break
        sink.finish([], item, str(source))
    except BaseException:
        sink.discard()
        raise


def file_matches(path: Path, item: TransferItem) -> bool:
    """Whether the file at `path` is exactly the record's: size, then sha256 (md5 for old records)."""
    try:
        if path.stat().st_size != item.size:
            return False
        digest = hashlib.sha256() if item.sha256 is not None else hashlib.md5(usedforsecurity=False)
        with path.open("rb") as reader:
            while block := reader.read(BLOCK):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == (item.sha256 or item.md5)
