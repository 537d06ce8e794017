"""Where a channel lives (https://, file://, an extracted tarball path) and reading its index files."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, unquote, urljoin, urlsplit

import aiohttp
import orjson

from mirror_engine.errors import BadRepodata, ChannelNotFound, HttpStatusError, MirrorError
from mirror_engine.repodata import Repodata, decompress_zst, parse_repodata
from mirror_engine.retry import RetryPolicy, parse_retry_after, with_retries
from mirror_engine.session import Http, client_error, redact
from mirror_engine.shards import read_shard, read_shard_index, repodata_from_shards, wanted_shards

log = logging.getLogger(__name__)

# Probed when a channel has no channeldata.json and the config names no platforms.
KNOWN_SUBDIRS = (
    "noarch", "linux-64", "linux-aarch64", "linux-ppc64le", "linux-s390x", "linux-armv6l", "linux-armv7l",
    "linux-riscv64", "linux-32", "osx-64", "osx-arm64", "win-64", "win-32", "win-arm64", "freebsd-64",
    "zos-z", "emscripten-wasm32", "wasi-wasm32",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel by its URL (always ending in '/'); file:// URLs are read from disk."""

    url: str

    @property
    def local_path(self) -> Path | None:
        parts = urlsplit(self.url)
        return Path(unquote(parts.path)) if parts.scheme == "file" else None

    @property
    def display(self) -> str:
        local = self.local_path
        return str(local) if local is not None else redact(self.url)

    def file_url(self, subdir: str, name: str) -> str:
        return f"{self.url}{subdir}/{quote(name)}"

    def same_origin(self, url: str) -> bool:
        """Whether `url` is on this channel's scheme, host and port (a base_url may point elsewhere)."""
        mine, theirs = urlsplit(self.url), urlsplit(url)
        return (mine.scheme, mine.netloc) == (theirs.scheme, theirs.netloc)

    def package_base(self, subdir: str, base_url: str | None) -> str:
        """Where the subdir's packages are: CEP-15 `info.base_url` (maybe relative) or the subdir itself."""
        subdir_url = f"{self.url}{subdir}/"
        if not base_url:
            return subdir_url
        joined = urljoin(f"{subdir_url}repodata.json", base_url)
        return joined if joined.endswith("/") else joined + "/"


@dataclass(slots=True)
class IndexBytes:
    """A subdir's repodata as fetched: parsed only when a run needs its records, and then once."""

    source: str  # the URL, credentials removed
    data: bytes
    compressed: bool
    sha256: str  # of `data` as fetched: equal digests mean an unchanged upstream index
    sharded: bool = False  # a CEP-16 shard index, not repodata.json

    def take(self) -> bytes:
        """The fetched bytes, handed over to be parsed; `data` is empty afterwards. The caller's frames
        keep this index until its plan is made: a 600,000-record one kept 49 MB of zstd that long."""
        data, self.data = self.data, b""
        return data


async def parse_index(index: IndexBytes, names: Callable[[str], bool] | None = None) -> Repodata:
    """Decompress and parse a fetched repodata.json (its bytes taken: see IndexBytes.take); `names` as for
    `parse_repodata`."""
    data = index.take()
    if index.compressed:
        data = await asyncio.to_thread(decompress_zst, data, index.source)
    return await asyncio.to_thread(parse_repodata, data, index.source, names)


class ChannelReader:
    """Reads index files of channels, retrying what is worth retrying."""

    def __init__(self, session: Http, policy: RetryPolicy, rng: random.Random) -> None:
        self._session = session
        self._policy = policy
        self._rng = rng

    async def read(self, url: str) -> bytes | None:
        """The bytes at `url`, or None when it does not exist (HTTP 404/410, missing file)."""
        if url.startswith("file://"):
            path = Path(unquote(urlsplit(url).path))
            return await asyncio.to_thread(_read_local, path)
        return await with_retries(
            lambda: self._get(url),
            self._policy,
            sleep=asyncio.sleep,
            rng=self._rng,
            on_retry=lambda error, delay: log.warning("%s; retrying in %.1fs", error, delay),
        )

    async def _get(self, url: str) -> bytes | None:
        try:
            async with self._session.get(url) as response:
                if response.status in (404, 410):
                    return None
                if response.status != 200:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
                    raise HttpStatusError(redact(url), response.status, response.reason or "", retry_after)
                body: bytes = await response.read()
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise client_error(redact(url), exc) from None

    async def index_bytes(self, channel: Channel, subdir: str, *, shards: bool = False) -> IndexBytes | None:
        """A subdir's index as served, preferring repodata.json.zst, or with `shards` its CEP-16 shard index
        when it has one; None when the channel has no such subdir."""
        names = ("repodata_shards.msgpack.zst", "repodata.json.zst", "repodata.json")
        for name in names if shards else names[1:]:
            url = channel.file_url(subdir, name)
            data = await self.read(url)
            if data is not None:
                digest = await asyncio.to_thread(_sha256_hex, data)
                return IndexBytes(
                    redact(url), data, name.endswith(".zst"), digest, sharded=name.startswith("repodata_shards")
                )
        return None

    async def sharded_repodata(
        self, channel: Channel, subdir: str, index: IndexBytes, wanted: Callable[[str], bool]
    ) -> Repodata:
        """The records of the shards `wanted` picks from an upstream shard index, each shard checked
        against the sha256 the index gives for it."""
        doc = await asyncio.to_thread(read_shard_index, index.data, index.source)
        chosen = wanted_shards(doc, wanted, index.source)
        info = doc.get("info")
        info = info if isinstance(info, dict) else {}
        base = urljoin(
            channel.file_url(subdir, "repodata_shards.msgpack.zst"), str(info.get("shards_base_url") or "./shards/")
        )
        base = base if base.endswith("/") else base + "/"

        async def one(name: str, digest: bytes) -> dict[str, object]:
            url = f"{base}{digest.hex()}.msgpack.zst"
            data = await self.read(url)
            if data is None:
                raise BadRepodata(f"{redact(url)}: the shard of {name!r} is missing")
            if hashlib.sha256(data).digest() != digest:
                raise BadRepodata(f"{redact(url)}: the shard of {name!r} does not match its sha256 in the index")
            return await asyncio.to_thread(read_shard, data, redact(url))

        shards = await asyncio.gather(*(one(name, digest) for name, digest in chosen.items()))
        return repodata_from_shards(doc, shards, index.source)

    async def repodata(self, channel: Channel, subdir: str) -> Repodata | None:
        index = await self.index_bytes(channel, subdir)
        return None if index is None else await parse_index(index)

    async def subdirs(self, channel: Channel) -> list[str]:
        """Every subdir a channel has: channeldata.json, else a local listing, else probing known names."""
        listed = await self._channeldata_subdirs(channel)
        if listed is None:
            local = channel.local_path
            if local is not None:
                listed = await asyncio.to_thread(_local_subdirs, local)
            else:
                found = await asyncio.gather(*(self._has_subdir(channel, name) for name in KNOWN_SUBDIRS))
                listed = [name for name, present in zip(KNOWN_SUBDIRS, found, strict=True) if present]
        if not listed:
            raise ChannelNotFound(f"{channel.display}: no subdir with a repodata.json; is this a conda channel?")
        return listed

    async def _channeldata_subdirs(self, channel: Channel) -> list[str] | None:
        data = await self.read(f"{channel.url}channeldata.json")
        if data is None:
            return None
        try:
            subdirs = orjson.loads(data).get("subdirs")
        except (orjson.JSONDecodeError, AttributeError):
            log.warning("%schanneldata.json: not valid JSON; probing subdirs instead", channel.display)
            return None
        if not isinstance(subdirs, list) or not all(isinstance(item, str) for item in subdirs):
            return None
        return subdirs

    async def _has_subdir(self, channel: Channel, subdir: str) -> bool:
        for name in ("repodata.json", "repodata.json.zst"):
            if await self._exists(channel.file_url(subdir, name)):
                return True
        return False

    async def _exists(self, url: str) -> bool:
        async def head() -> bool:
            try:
                async with self._session.head(url, allow_redirects=True) as response:
                    if response.status in (404, 410, 403):
                        return False
                    if response.status >= 400:
                        raise HttpStatusError(redact(url), response.status, response.reason or "")
                    return True
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise client_error(redact(url), exc) from None

        return await with_retries(head, self._policy, sleep=asyncio.sleep, rng=self._rng)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_local(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MirrorError(f"{path}: cannot read: {exc.strerror}") from None


def _local_subdirs(root: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and any((entry / name).is_file() for name in ("repodata.json", "repodata.json.zst"))
    )
