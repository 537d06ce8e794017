"""A quetz channel as the destination: packages go up through quetz's upload API, and quetz builds the index.

quetz rebuilds each subdir's repodata.json from the packages it holds, reading every archive's own
`info/index.json`. Upstream's hot-fix patches (a `depends` or `constrains` corrected in the served repodata
after the build, as conda-forge and Anaconda publish them) are therefore NOT carried into a quetz channel: its
clients see each record as the archive was built. The invariant that every published record is upstream's,
verbatim, holds for the local folder and the http and s3 destinations only; use one of those where the
patches matter.

What still holds here: every package quetz serves from a run has upstream's bytes (checked by us before the
upload, by quetz against the sha256 we send, and against quetz's own copy when it says it has one already),
and a subdir counts as published only once quetz's repodata.json lists every file ours would have listed.
Our other index files (.zst, shards, channeldata, pages) are not written: quetz serves its own.

The channel should be the mirror's alone: as in a folder, a package in it that the mirror does not want is
deleted after the subdir is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from mirror_engine.config import DestinationConfig, MirrorConfig
from mirror_engine.destinations.base import FileStat, IndexUpdate
from mirror_engine.destinations.staged import StagedDestination
from mirror_engine.errors import ConfigError, DestinationError, PackageRejected, TlsError, UploadRefused
from mirror_engine.repodata import is_package_filename
from mirror_engine.retry import RetryPolicy, with_retries
from mirror_engine.session import USER_AGENT, client_error, redact

log = logging.getLogger(__name__)
T = TypeVar("T")

INDEX_WAIT = 60.0  # seconds quetz may take to list uploaded packages in its repodata.json
INDEX_POLL_FIRST, INDEX_POLL_MAX = 0.1, 2.0  # backoff between looks at quetz's repodata.json
REDIRECTS = (301, 302, 303, 307, 308)
# quetz 0.10 holds a database connection for each request in flight (SQLite: a pool of 15) and runs the
# re-indexing an upload starts inside its event loop: with more requests in flight than the pool holds,
# that re-indexing waits for a connection only the blocked loop could free, and the server hangs for good
# (seen with 16 workers). So a few requests at a time; quetz indexes one upload at a time anyway.
MAX_REQUESTS = 4
CHUNK = 1 << 20


class _Transient(DestinationError):
    """Worth another try (a 5xx, a dropped connection, a body quetz hashed differently). Never escapes
    this module: after the last try it becomes `then`, which the engine does not retry again."""

    retryable = True

    def __init__(self, message: str, then: type[DestinationError]) -> None:
        super().__init__(message)
        self.then = then


class QuetzDestination(StagedDestination):
    """The channel `dest_channel` on the quetz server at `destination.url`, reached with its API key."""

    def __init__(
        self,
        settings: DestinationConfig,
        config: MirrorConfig,
        staging_dir: Path,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        index_wait: float = INDEX_WAIT,
    ) -> None:
        super().__init__(staging_dir)
        if settings.api_key is None:  # the config refuses this already; kept for callers building settings
            raise ConfigError("config", "destination.api_key", "required for a quetz destination")
        self._server = settings.url
        self._key = settings.api_key
        self._ssl_verify = settings.ssl_verify
        self._channel = config.dest_channel
        self._policy = RetryPolicy(config.retries, config.retry_backoff, config.retry_backoff_max)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        self._sleep = sleep
        self._clock = clock
        self._index_wait = index_wait
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None

    @property
    def display(self) -> str:
        return f"{redact(self._server)}/get/{self._channel}"

    # --- the session ---

    def _http(self) -> aiohttp.ClientSession:
        """Made on first use: `plan` lists the channel without `open`, and a dry run must write nothing."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=MAX_REQUESTS, ssl=_tls(self._ssl_verify, self._server))
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as for upstream
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def _request(
        self, method: str, url: str, *, key: bool = True, **options: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request; aiohttp's errors become ours. Redirects are not followed with the key (see `_fetch`)."""
        headers = {"X-API-Key": self._key.get_secret_value()} if key else {}
        try:
            async with self._http().request(
                method, url, headers=headers, allow_redirects=not key, **options
            ) as response:
                yield response
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = client_error(redact(url), exc)
            if error.retryable:
                raise _Transient(str(error), DestinationError) from None
            if isinstance(error, TlsError):  # worded for upstream's ssl_verify; the destination has its own
                raise DestinationError(str(error).replace("ssl_verify", "destination.ssl_verify")) from None
            raise DestinationError(str(error)) from None

    @contextlib.asynccontextmanager
    async def _fetch(self, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET a file quetz serves. A quetz with an object store redirects package downloads to it: the
        redirect is followed without the API key, which is for quetz alone."""
        async with self._request("GET", url) as response:
            location = response.headers.get("Location") if response.status in REDIRECTS else None
            if location is None:
                yield response
                return
            target = str(response.url.join(URL(location)))
        async with self._request("GET", target, key=False) as response:
            yield response

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await with_retries(
                call,
                self._policy,
                sleep=self._sleep,
                rng=self._rng,
                on_retry=lambda error, delay: log.warning("%s; retry in %.1fs", error, delay),
            )
        except _Transient as error:
            raise error.then(str(error)) from None

    def _refused(self, status: int, action: str) -> UploadRefused:
        if status == 401:
            return UploadRefused(
                f"{redact(self._server)}: quetz refused the API key (HTTP 401, asked to {action}); "
                "check destination.api_key"
            )
        return UploadRefused(
            f"{redact(self._server)}: the API key's user may not {action} (HTTP 403); "
            f"use a key of an owner of channel {self._channel}"
        )

    # --- the channel ---

    async def connect(self) -> None:
        """Create the channel if it is not there, and make sure the server takes our key, before any download."""
        channel_url = f"{self._server}/api/channels/{quote(self._channel, safe='')}"
        status = await self._retrying(
            functools.partial(self._status, "GET", channel_url, f"read channel {self._channel}")
        )
        if status == 404:
            await self._create_channel()
        elif status == 200:
            # Reading a public channel needs no key: ask for something that does. (The answer lists the
            # user's keys; it is never read.)
            probe = f"{self._server}/api/api-keys"
            status = await self._retrying(functools.partial(self._status, "GET", probe, "sign in"))
            if status != 200:
                raise self._unexpected(probe, status)
        else:
            raise self._unexpected(channel_url, status)

    async def _create_channel(self) -> None:
        url = f"{self._server}/api/channels"
        body = {"name": self._channel, "private": False}
        action = f"create channel {self._channel}"
        status = await self._retrying(functools.partial(self._status, "POST", url, action, json=body))
        if status == 201:
            log.info("%s: created the channel %s", redact(self._server), self._channel)
        elif status != 409:  # 409: another run created it since we looked
            raise self._unexpected(url, status)

    async def _status(self, method: str, url: str, action: str, **options: Any) -> int:
        """The status of a request whose body does not matter; 401/403 refuse the key, 5xx is retried."""
        async with self._request(method, url, **options) as response:
            status, detail = response.status, await _detail(response)
        if status in (401, 403):
            raise self._refused(status, action)
        if status >= 500:
            raise _Transient(f"{redact(url)}: HTTP {status}{detail}", DestinationError)
        if status not in (200, 201, 404, 409):
            raise DestinationError(f"{redact(url)}: HTTP {status}{detail}")
        return status

    @staticmethod
    def _unexpected(url: str, status: int) -> DestinationError:
        return DestinationError(f"{redact(url)}: unexpected HTTP {status} from quetz")

    def _file_url(self, subdir: str, name: str) -> str:
        path = "/".join(quote(part, safe="") for part in (subdir, *name.split("/")) if part)
        return f"{self._server}/get/{quote(self._channel, safe='')}/{path}"

    # --- packages ---

    async def upload_file(self, source: Path, subdir: str, filename: str) -> None:
        """POST the verified file; quetz checks it against the sha256 we send. A 409 (quetz holds that name
        already) is accepted only if quetz's copy has the same sha256."""
        sha256 = await asyncio.to_thread(_sha256, source)
        url = f"{self._server}/api/channels/{quote(self._channel, safe='')}/upload/{quote(filename, safe='')}"
        shown = redact(self._file_url(subdir, filename))

        async def attempt() -> None:
            body = await asyncio.to_thread(source.open, "rb")
            try:
                params = {"sha256": sha256, "force": "false"}
                async with self._request("POST", url, params=params, data=body) as response:
                    status, detail = response.status, await _detail(response)
            finally:
                body.close()
            if status == 201:
                return
            if status == 409:
                await self._check_server_copy(subdir, filename, sha256)
                return
            if status in (401, 403):
                raise self._refused(status, f"upload to channel {self._channel}")
            if status == 406:  # bytes changed on the way (a proxy?): a new try sends them again
                raise _Transient(f"{shown}: quetz received bytes with another sha256 than {sha256}", PackageRejected)
            if status >= 500:
                raise _Transient(f"{shown}: upload failed: HTTP {status}{detail}", PackageRejected)
            raise PackageRejected(f"{shown}: quetz refused the package: HTTP {status}{detail}")

        # quetz lists the file in its repodata.json only after indexing in the background; the staged
        # base remembers it as committed, so `stat` knows it at once.
        await self._retrying(attempt)

    async def _check_server_copy(self, subdir: str, filename: str, sha256: str) -> None:
        """quetz says it has the file: hash what it serves rather than trust the name."""
        url = self._file_url(subdir, filename)
        digest = hashlib.sha256()
        async with self._fetch(url) as response:
            if response.status == 404:  # a concurrent upload of the same package may not be stored yet
                raise _Transient(f"{redact(url)}: quetz reports it present, but does not serve it", PackageRejected)
            if response.status != 200:
                raise _Transient(f"{redact(url)}: HTTP {response.status}", PackageRejected)
            async for chunk in response.content.iter_chunked(CHUNK):
                digest.update(chunk)
        theirs = digest.hexdigest()
        if theirs != sha256:
            raise PackageRejected(
                f"{redact(url)}: quetz already holds other bytes under this name (sha256 {theirs}, upstream's "
                f"{sha256}); left as it is: delete it on the server to mirror upstream's"
            )
        log.info("%s: already on the server, same sha256", redact(url))

    async def listing(self, subdir: str) -> dict[str, FileStat]:
        """The packages quetz's repodata.json lists, with their sizes; no mtime (0), as in `stat`."""
        records = await self._server_records(subdir)
        return {name: FileStat(_size(record), 0) for name, record in records.items()}

    async def stat_stored(self, subdir: str, filename: str) -> FileStat | None:
        if is_package_filename(filename):
            record = (await self._server_records(subdir)).get(filename)
            return None if record is None else FileStat(_size(record), 0)
        data = await self.read_index(subdir, filename)
        return None if data is None else FileStat(len(data), 0)

    async def delete(self, subdir: str, filenames: list[str]) -> None:
        """Delete package versions through quetz's API; a file quetz will not delete stays, with a warning."""
        for filename in filenames:
            if not is_package_filename(filename):
                log.debug("%s/%s: not a package; quetz holds no such file", subdir, filename)
                continue
            name = filename.rsplit("-", 2)[0]
            url = (
                f"{self._server}/api/channels/{quote(self._channel, safe='')}/packages/{quote(name, safe='')}"
                f"/versions/{quote(subdir, safe='')}/{quote(filename, safe='')}"
            )
            try:
                await self._retrying(functools.partial(self._status, "DELETE", url, f"delete {subdir}/{filename}"))
            except DestinationError as error:  # refused, or the server is gone: the next run tries again
                log.warning("%s; %s/%s stays in the channel", error, subdir, filename)

    # --- index files ---

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        """quetz builds its own index: wait until its repodata.json lists what ours does; write nothing."""
        if subdir and name == "repodata.json":
            await self._await_index(subdir, data)
        else:
            log.debug("%s: %s not written: quetz serves the index files it builds", self.display, name)

    async def update_index(self, subdir: str, name: str, update: IndexUpdate) -> None:
        """channeldata.json is quetz's own too: nothing to read, merge or write."""
        log.debug("%s: %s not written: quetz serves the index files it builds", self.display, name)

    async def _await_index(self, subdir: str, ours_json: bytes) -> None:
        ours = await asyncio.to_thread(_sha256_by_file, ours_json)
        deadline = self._clock() + self._index_wait
        pause = INDEX_POLL_FIRST
        while True:
            theirs = await self._server_records(subdir)
            missing = sorted(name for name in ours if name not in theirs)
            differing = sorted(
                name
                for name, sha256 in ours.items()
                if name in theirs and sha256 is not None and theirs[name].get("sha256") != sha256
            )
            if not missing and not differing:
                log.debug("%s/%s: quetz's index lists all %d files", self.display, subdir, len(ours))
                return
            left = deadline - self._clock()
            if left <= 0:
                url = self._file_url(subdir, "repodata.json")
                raise DestinationError(_index_lacks(url, missing, differing, self._index_wait))
            await self._sleep(min(pause, left))
            pause = min(pause * 2, INDEX_POLL_MAX)

    async def _server_records(self, subdir: str) -> dict[str, dict[str, Any]]:
        """filename -> record of quetz's repodata.json for `subdir` ({} while quetz has none)."""
        data = await self.read_index(subdir, "repodata.json")
        if data is None:
            return {}
        try:
            return await asyncio.to_thread(_records, data)
        except ValueError:  # orjson's JSONDecodeError too
            url = redact(self._file_url(subdir, "repodata.json"))
            raise DestinationError(f"{url}: not a repodata document") from None

    async def read_index(self, subdir: str, name: str) -> bytes | None:
        url = self._file_url(subdir, name)

        async def attempt() -> bytes | None:
            async with self._fetch(url) as response:
                if response.status == 404:
                    return None
                if response.status == 200:
                    return await response.read()
                status, detail = response.status, await _detail(response)
            if status in (401, 403):
                raise self._refused(status, f"read channel {self._channel}")
            message = f"{redact(url)}: HTTP {status}{detail}"
            raise _Transient(message, DestinationError) if status >= 500 else DestinationError(message)

        return await self._retrying(attempt)

    async def write_absent(self, subdir: str, files: list[tuple[str, bytes]]) -> int:
        log.debug("%s/%s: %d shards not written: quetz serves no shards", self.display, subdir, len(files))
        return 0

    async def list_folder(self, subdir: str, folder: str) -> dict[str, float]:
        return {}


def _tls(ssl_verify: bool | Path, server: str) -> ssl.SSLContext | bool:
    """The destination's own `ssl_verify`: the system's CAs, a CA bundle, or (with a warning) no check."""
    if ssl_verify is False:
        log.warning("%s: destination ssl_verify: false: the server's TLS certificate is not checked", redact(server))
        return False
    cafile = None if ssl_verify is True else str(ssl_verify)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("config", "destination.ssl_verify", f"cannot load {cafile}: {exc}") from None


async def _detail(response: aiohttp.ClientResponse) -> str:
    """quetz's short reason for a refusal (its JSON `detail`), as ` (reason)`; '' when it gave none."""
    if response.status in REDIRECTS:
        where = redact(response.headers.get("Location", "?"))
        return f" (redirected to {where}; set destination.url to the server's own address)"
    try:
        text = (await response.content.read(500)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError):
        return ""
    try:
        detail = orjson.loads(text).get("detail")
    except (orjson.JSONDecodeError, AttributeError):
        detail = text
    if isinstance(detail, list):  # FastAPI's validation errors: [{"msg": ..., "loc": ...}, ...]
        detail = "; ".join(str(item.get("msg")) for item in detail if isinstance(item, dict))
    detail = " ".join(str(detail or "").split())[:200]
    return f" ({detail})" if detail else ""


def _sha256(path: Path) -> str:
    # Hashing the verified file again costs well under a second per GB; it spares the engine threading
    # the plan's sha256 through `commit`, and covers old records that carry only an md5.
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _records(repodata_json: bytes) -> dict[str, dict[str, Any]]:
    """filename -> record of both sections; ValueError if the bytes are not a repodata document."""
    doc = orjson.loads(repodata_json)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    records: dict[str, dict[str, Any]] = {}
    for section in ("packages", "packages.conda"):
        entries = doc.get(section) or {}
        if not isinstance(entries, dict):
            raise ValueError(f"{section} is not a JSON object")
        for name, record in entries.items():
            records[name] = record if isinstance(record, dict) else {}
    return records


def _sha256_by_file(repodata_json: bytes) -> dict[str, str | None]:
    sha256s: dict[str, str | None] = {}
    for name, record in _records(repodata_json).items():
        value = record.get("sha256")
        sha256s[name] = value if isinstance(value, str) else None
    return sha256s


def _size(record: dict[str, Any]) -> int:
    size = record.get("size")
    return size if isinstance(size, int) else 0


def _index_lacks(url: str, missing: list[str], differing: list[str], waited: float) -> str:
    parts = []
    if missing:
        parts.append(f"lacks {len(missing)} uploaded file(s) ({_few(missing)})")
    if differing:
        parts.append(f"lists {len(differing)} with another sha256 ({_few(differing)})")
    return f"{redact(url)}: quetz's index still {' and '.join(parts)} after waiting {waited:g}s"


def _few(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f", and {len(names) - shown} more" if len(names) > shown else "")
