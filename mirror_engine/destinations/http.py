"""An HTTP PUT store (nginx DAV, Artifactory, any WebDAV server): PUT each file, HEAD to check it, GET indexes back.

Layout: `<url>/<dest_channel>/<subdir>/<file>`, channel root files at `<url>/<dest_channel>/<file>`. HTTP has
no portable listing, so what the store holds is read from the channel's own published repodata.json.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp

from mirror_engine.config import DestinationConfig, MirrorConfig
from mirror_engine.destinations.base import FileStat
from mirror_engine.destinations.staged import StagedDestination
from mirror_engine.errors import BadRepodata, ConfigError, DestinationError, MirrorError, UploadRefused
from mirror_engine.pool import run_pool
from mirror_engine.repodata import published_files
from mirror_engine.retry import RetryPolicy, with_retries
from mirror_engine.session import USER_AGENT, describe_error, redact

log = logging.getLogger(__name__)
T = TypeVar("T")

STORED = frozenset({200, 201, 204})  # 201 a new file, 204 (nginx) or 200 a replaced one
DELETED = frozenset({200, 202, 204, 404})  # 404: already gone, which is what was asked for


class _Transient(DestinationError):
    """A failure worth another try (5xx, 429, a dropped connection); never leaves this module as such,
    so that the engine does not retry the whole download on top of our own retries."""

    retryable = True


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    length: int | None  # Content-Length, as the server states it
    body: bytes


class HttpPutDestination(StagedDestination):
    """A channel under an HTTP base URL that accepts PUT, HEAD, GET and DELETE with basic or bearer auth."""

    def __init__(
        self,
        config: MirrorConfig,
        staging_dir: Path,
        *,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(staging_dir)
        settings = config.destination
        if settings is None or settings.kind != "http":
            raise ValueError("HttpPutDestination needs a destination of kind http")
        base, user, password = _split_credentials(settings.url)
        self._base = f"{base}/{quote(config.dest_channel)}"
        self._headers = {"User-Agent": USER_AGENT, **_auth_header(settings, user, password)}
        self._ssl_verify = settings.ssl_verify
        self._tls: ssl.SSLContext | bool | None = None  # made once, on first use
        self._workers = config.concurrency
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        self._file_timeout = config.file_timeout
        self._policy = RetryPolicy(config.retries, config.retry_backoff, config.retry_backoff_max)
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None

    @property
    def display(self) -> str:
        return redact(self._base)

    # --- session ---

    async def connect(self) -> None:
        if self._session is None:
            self._session = self._new_session()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._workers + 8, limit_per_host=self._workers + 8),
            timeout=self._timeout,
            trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as for the source
            headers=self._headers,
        )

    @asynccontextmanager
    async def _session_scope(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The run's session; `plan` and `explain` call `listing`, `stat` and `read_index` without `open`
        (and never `close`), so outside a run each call gets a session of its own that it closes itself."""
        if self._session is not None:
            yield self._session
            return
        session = self._new_session()
        try:
            yield session
        finally:
            await session.close()

    def _tls_setting(self) -> ssl.SSLContext | bool:
        if self._tls is None:
            self._tls = _tls_context(self._ssl_verify)
        return self._tls

    # --- requests ---

    def _url(self, subdir: str, name: str) -> str:
        path = f"{subdir}/{name}" if subdir else name
        return f"{self._base}/{quote(path)}"  # a '+' in a name must not reach S3-like servers as a space

    async def _request(
        self,
        method: str,
        url: str,
        ok: Collection[int],
        *,
        data: Any = None,
        headers: dict[str, str] | None = None,
        read: bool = False,
    ) -> _Reply:
        """One request; a status outside `ok` becomes our error, as do aiohttp's exceptions."""
        shown = redact(url)
        try:
            async with (
                self._session_scope() as session,
                session.request(method, url, data=data, headers=headers, ssl=self._tls_setting()) as response,
            ):
                log.debug("%s %s: HTTP %d", method, shown, response.status)
                if response.status not in ok:
                    raise _status_error(shown, method, response.status, response.reason or "")
                body = await response.read() if read else b""
                return _Reply(response.status, response.content_length, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _client_error(shown, exc) from None

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` with the run's retry policy; a failure that outlasts it stops the run (DestinationError)."""
        try:
            return await with_retries(
                call,
                self._policy,
                sleep=self._sleep,
                rng=self._rng,
                on_retry=lambda error, delay: log.warning("%s; retry in %.1fs", error, delay),
            )
        except _Transient as error:
            raise DestinationError(f"{error} (gave up after {self._policy.retries + 1} attempts)") from None

    async def _put(self, url: str, size: int, body: Callable[[], bytes | BinaryIO]) -> None:
        """PUT a body of `size` bytes, then HEAD it: a server that stored fewer bytes must not pass."""

        async def attempt() -> None:
            # Opened here, not in a thread: a cancel between a threaded open and this `try` would leak the file.
            data = body()
            headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
            try:
                # read_timeout does not cover sending: a server that stops reading would hold us forever
                async with asyncio.timeout(self._file_timeout):
                    await self._request("PUT", url, STORED, data=data, headers=headers)
            except TimeoutError:
                raise _Transient(
                    f"{redact(url)}: upload not done within file_timeout ({self._file_timeout:g}s)"
                ) from None
            finally:
                if not isinstance(data, bytes):  # aiohttp leaves a file open; every attempt opens its own
                    data.close()
            stored = await self._request("HEAD", url, {200})
            if stored.length != size:
                raise _Transient(f"{redact(url)}: the server holds {stored.length} bytes after the upload, not {size}")

        await self._retrying(attempt)

    # --- the Destination protocol ---

    async def upload_file(self, source: Path, subdir: str, filename: str) -> None:
        size = (await asyncio.to_thread(source.stat)).st_size

        def open_file() -> BinaryIO:
            return source.open("rb")  # aiohttp streams it, a block at a time, reading in a thread

        await self._put(self._url(subdir, filename), size, open_file)

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        """One PUT: DAV servers write the body to a temporary file and rename it, so readers never see a mix."""
        await self._put(self._url(subdir, name), len(data), lambda: data)

    async def read_index(self, subdir: str, name: str) -> bytes | None:
        reply = await self._retrying(lambda: self._request("GET", self._url(subdir, name), {200, 404}, read=True))
        return reply.body if reply.status == 200 else None

    async def stat_stored(self, subdir: str, filename: str) -> FileStat | None:
        """Size from HEAD; mtime 0, as in `listing`, since a PUT store's dates are not ours to compare."""
        reply = await self._retrying(lambda: self._request("HEAD", self._url(subdir, filename), {200, 404}))
        if reply.status == 404:
            return None
        return FileStat(reply.length or 0, 0)

    async def listing(self, subdir: str) -> dict[str, FileStat]:
        """The package files our published repodata.json names, with their record sizes: HTTP has no
        portable listing. Files uploaded by a run that never published are not seen (and not deleted)."""
        data = await self.read_index(subdir, "repodata.json")
        if data is None:
            return {}
        return await asyncio.to_thread(_named_files, data, redact(self._url(subdir, "repodata.json")))

    async def list_folder(self, subdir: str, folder: str) -> dict[str, float]:
        # Without a listing the old shards cannot be found, so their garbage collection is skipped: they
        # are small, content-addressed and never named again, so leaving them costs only space.
        return {}

    async def write_absent(self, subdir: str, files: list[tuple[str, bytes]]) -> int:
        """Shards are named by their sha256: one the server holds already (HEAD) has these very bytes."""
        written = 0

        async def write_one(item: tuple[str, bytes]) -> None:
            nonlocal written
            name, data = item
            if await self.stat(subdir, name) is None:
                await self.write_index(subdir, name, data)
                written += 1

        await self._each(files, write_one)
        return written

    async def delete(self, subdir: str, filenames: list[str]) -> None:
        async def delete_one(name: str) -> None:
            await self._retrying(lambda: self._request("DELETE", self._url(subdir, name), DELETED))

        await self._each(filenames, delete_one)

    async def _each(self, items: Iterable[T], handle: Callable[[T], Awaitable[None]]) -> None:
        """`handle` every item on the run's number of workers; the first of our errors stops the rest."""

        async def feed() -> AsyncIterator[T]:
            for item in items:
                yield item

        try:
            await run_pool(feed(), handle, workers=self._workers)
        except BaseExceptionGroup as group:
            raise _first_error(group) or group from None


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """The URL without `user:password@`, and those credentials (a URL may carry them instead of the keys)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # as written: a bracketed IPv6 address stays bracketed
    base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return base, user, password


def _auth_header(settings: DestinationConfig, url_user: str | None, url_password: str | None) -> dict[str, str]:
    """Bearer with `token`, basic with `username`/`password` (or the URL's), none otherwise."""
    if settings.token is not None:
        return {"Authorization": f"Bearer {settings.token.get_secret_value()}"}
    user, password = url_user, url_password
    if settings.username is not None:
        user = settings.username
        password = settings.password.get_secret_value() if settings.password is not None else ""
    if user is None:
        return {}
    if ":" in user:  # basic auth joins user and password with ':'; the server would split them elsewhere
        raise ConfigError("config", "destination.username", "a ':' cannot be sent in a basic-auth user name")
    return {"Authorization": aiohttp.encode_basic_auth(user, password or "")}


def _tls_context(ssl_verify: bool | Path) -> ssl.SSLContext | bool:
    """`destination.ssl_verify`: true checks against the system's CAs, a path against that bundle only."""
    if ssl_verify is False:
        log.warning("destination.ssl_verify: false: the destination's TLS certificate is not checked")
        return False
    cafile = None if isinstance(ssl_verify, bool) else str(ssl_verify)
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("config", "destination.ssl_verify", f"cannot load: {exc}") from None


def _status_error(url: str, method: str, status: int, reason: str) -> DestinationError:
    """Our error for an unexpected status: refusals stop the run at once, server trouble is retried first."""
    said = f"{url}: HTTP {status}{' ' + reason if reason else ''}"
    if status == 401:
        return UploadRefused(f"{said}: check destination.username and destination.password (or destination.token)")
    if status == 403:
        return UploadRefused(f"{said}: these credentials may not {method} here")
    if status == 413:
        return UploadRefused(f"{said}: the server refuses a file this big (nginx: client_max_body_size)")
    if status in (405, 501):
        return UploadRefused(f"{said}: the server does not accept {method} (nginx: dav_methods PUT DELETE)")
    if status == 409:
        return DestinationError(f"{said}: the folder does not exist (nginx: create_full_put_path on)")
    if status >= 500 or status in (408, 429):
        return _Transient(said)
    return DestinationError(said)


def _client_error(url: str, exc: BaseException) -> DestinationError:
    """Our error for an aiohttp or timeout error: TLS problems need the config changed, the rest is retried."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return DestinationError(
            f"{url}: the TLS certificate of {exc.host} is not trusted ({exc.certificate_error}); set "
            "destination.ssl_verify to the CA bundle that signed it, or destination.ssl_verify: false"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return DestinationError(
            f"{url}: TLS with {exc.host} failed ({describe_error(exc)}); see destination.ssl_verify"
        )
    if isinstance(exc, TimeoutError):
        return _Transient(f"{url}: no answer within connect_timeout or read_timeout")
    return _Transient(f"{url}: {describe_error(exc)}")


def _named_files(repodata_json: bytes, url: str) -> dict[str, FileStat]:
    """Package files and sizes our published index names (every section); an unreadable one names none."""
    try:
        named = published_files(repodata_json, url)
    except BadRepodata as exc:
        log.warning("%s; the subdir is uploaded again", exc)
        return {}
    return {filename: FileStat(size, 0) for filename, size in named.items()}


def _first_error(group: BaseExceptionGroup[BaseException]) -> MirrorError | None:
    for exc in group.exceptions:
        if isinstance(exc, MirrorError):
            return exc
        if isinstance(exc, BaseExceptionGroup) and (found := _first_error(exc)) is not None:
            return found
    return None
