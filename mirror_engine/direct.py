"""Big package bodies read straight off the socket into one buffer per connection, and hashed and written from it.

uvloop makes a new bytes of every received piece and aiohttp's parser slices the body out into another: for a
big file that copying was a fifth of a worker's time. Here an `asyncio.BufferedProtocol` has the kernel receive
into a preallocated buffer, and each piece goes to the sink as a memoryview of it (B, 16 x 128 MiB, prototype:
3.0 -> 1.8 CPU seconds per GB). Only a plain GET goes this way (no proxy, no credentials in the URL; the
caller decides); a response that is not a 200 with the record's Content-Length and no Content-Encoding or
Transfer-Encoding is either failed exactly as transfer.py fails it through aiohttp (another status:
HttpStatusError with Retry-After; another length: ShortBody), or, for a redirect, an encoded, chunked or
unreadable head, or a connection lost before the head, closed before any body byte is read: then `fetch`
returns False and the caller asks aiohttp.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import cast

import aiohappyeyeballs
from aiohttp.http_exceptions import ContentLengthError
from yarl import URL

from mirror_engine.bandwidth import TokenBucket
from mirror_engine.errors import ConnectionFailed, HttpStatusError, ShortBody, TlsError, os_reason
from mirror_engine.retry import parse_retry_after

BUFFER = 1 << 20  # one per connection: the kernel's receive lands here, up to this much per call
MAX_HEAD = 64 << 10
PROGRESS_BYTES = 1 << 20  # on_bytes is told in steps of about this much, as the aiohttp path does
IDLE_SECONDS = 15.0  # a kept-alive connection idle longer is not reused (aiohttp's keepalive_timeout)

Write = Callable[[memoryview], None]


@dataclass(frozen=True, slots=True)
class Head:
    """A response's status line and headers (names lower case, repeated ones joined with ', ')."""

    version: str
    status: int
    reason: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens


def parse_head(data: bytes) -> Head | None:
    """The head of a response, or None if it is not one we can read (the caller then asks aiohttp)."""
    try:
        lines = data.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status_text, _, reason = rest.partition(" ")
        if version not in ("HTTP/1.1", "HTTP/1.0") or len(status_text) != 3 or not status_text.isdigit():
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip() or line[0] in " \t":
                return None  # no folded or malformed header lines: aiohttp decides what they mean
            key = name.lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        return Head(version, int(status_text), reason.strip(), headers)
    except UnicodeDecodeError:
        return None


def request_bytes(url: URL, headers: dict[str, str]) -> bytes:
    """A GET for `url` with `headers`, as aiohttp would send it (same target, Host and header values)."""
    lines = [f"GET {url.raw_path_qs} HTTP/1.1", f"Host: {url.host_port_subcomponent}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Phase(Enum):
    IDLE = 0
    HEAD = 1
    BODY = 2
    DEAD = 3


class _Lost(Exception):
    """The connection closed before the response's head was complete."""


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection; one request at a time, its body handed on piece by piece from `_buffer`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._buffer = bytearray(BUFFER)
        self._view = memoryview(self._buffer)
        self._transport: asyncio.Transport | None = None
        self._phase = _Phase.IDLE
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._fill = 0  # while reading the head: bytes in the buffer
        self._body_start = 0  # where the body begins in the buffer once the head is read
        self.head: Head | None = None
        self.received = 0  # body bytes of the current response
        self.reusable = False
        self.used_at = 0.0
        self._url = ""
        self._length = 0
        self._write: Write = _nothing
        self._on_bytes: Callable[[int], None] = _nothing_counted
        self._throttle: TokenBucket | None = None
        self._unreported = 0
        self._throttled = False
        self._paused = False

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._fill :] if self._phase is _Phase.HEAD else self._view

    def buffer_updated(self, nbytes: int) -> None:
        self._last_data = self._loop.time()
        if self._phase is _Phase.HEAD:
            self._head_arrived(nbytes)
        elif self._phase is _Phase.BODY:
            try:
                self._take(self._view[:nbytes])
            except Exception as exc:  # the sink's DestinationError: the download fails with it
                self._fail(exc)
        else:  # nothing was asked: a server talking out of turn
            self._close()

    def eof_received(self) -> bool:
        return False  # close; connection_lost tells the waiter

    def connection_lost(self, exc: Exception | None) -> None:
        phase, self._phase = self._phase, _Phase.DEAD
        self._transport = None
        if phase is _Phase.HEAD:
            self._settle(_Lost())
        elif phase is _Phase.BODY:
            self._settle(_cut_short(self._url, self.received, self._length, exc))

    # The caller's side
    @property
    def alive(self) -> bool:
        return self._phase is _Phase.IDLE and self._transport is not None and not self._transport.is_closing()

    async def ask(self, url: str, request: bytes) -> Head:
        """Send `request` and wait for the head of the response; reading pauses at the end of the head."""
        assert self._transport is not None and self._phase is _Phase.IDLE
        self._url, self._fill, self.head, self.received, self.reusable = url, 0, None, 0, False
        self._phase = _Phase.HEAD
        self._transport.write(request)
        await self._wait()
        assert self.head is not None
        return self.head

    async def read_body(
        self, length: int, write: Write, on_bytes: Callable[[int], None], throttle: TokenBucket | None
    ) -> None:
        """Hand the body's `length` bytes to `write` as they arrive; returns once all of them were written."""
        assert self._transport is not None and self.head is not None
        self._length, self._write, self._on_bytes, self._throttle = length, write, on_bytes, throttle
        self._unreported = 0
        self._phase = _Phase.BODY
        self._waiter = self._loop.create_future()  # before the early bytes: they may be the whole body
        early = self._view[self._body_start : self._fill]
        self._fill = 0
        if early:
            try:
                self._take(early)
            except BaseException:
                self._waiter = None
                raise
        if self._phase is _Phase.BODY and not self._throttled:
            self._resume()
        await self._wait()

    def close(self) -> None:
        self._phase = _Phase.DEAD
        self._close()

    # Inside
    def _head_arrived(self, nbytes: int) -> None:
        start = max(0, self._fill - 3)
        self._fill += nbytes
        end = self._buffer.find(b"\r\n\r\n", start, self._fill)
        if end < 0:
            if self._fill >= MAX_HEAD:
                self._settle(_Lost())  # not a head we read; aiohttp will say what is wrong with it
            return
        self.head = parse_head(bytes(self._view[:end]))
        self._body_start = end + 4
        self._pause()  # the body stays where it is until the caller decides
        self._settle(None if self.head is not None else _Lost())

    def _take(self, piece: memoryview) -> None:
        left = self._length - self.received
        overflow = len(piece) > left
        if overflow:  # bytes beyond the body: the connection cannot be trusted again
            piece = piece[:left]
        self._write(piece)
        self.received += len(piece)
        self._unreported += len(piece)
        delay = self._throttle.delay_for(len(piece)) if self._throttle is not None else 0.0
        if self.received == self._length:
            self._on_bytes(self._unreported)
            self._phase = _Phase.IDLE  # still reading: a server that closes an idle connection is noticed
            self.reusable = self.head is not None and self.head.keep_alive and not overflow
            self._resume()  # a body all in the head's buffer leaves the head's pause on: lift it
            if delay > 0:  # the last piece waits its turn too, as the aiohttp path's last `take`
                self._throttled = True
                self._loop.call_later(delay, self._unthrottle)
            else:
                self._settle(None)
            return
        if self._unreported >= PROGRESS_BYTES:
            self._on_bytes(self._unreported)
            self._unreported = 0
        if delay > 0:
            self._pause()
            self._throttled = True
            self._loop.call_later(delay, self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttled = False
        if self._phase is _Phase.IDLE:
            self._settle(None)
        elif self._phase is _Phase.BODY:
            self._last_data = self._loop.time()  # the pause was ours, not a stall
            self._resume()

    async def _wait(self) -> None:
        if self._waiter is None:
            self._waiter = self._loop.create_future()
        self._last_data = self._loop.time()
        self._timer = self._loop.call_at(self._last_data + self._read_timeout, self._check_stall)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _check_stall(self) -> None:
        """read_timeout as aiohttp's sock_read: no data for that long while waiting (throttle pauses excepted)."""
        deadline = self._last_data + self._read_timeout
        if self._throttled or self._loop.time() < deadline:
            self._timer = self._loop.call_at(max(deadline, self._loop.time() + 0.001), self._check_stall)
            return
        self._timer = None
        self._fail(ConnectionFailed(f"{self._url}: stalled, no data within read_timeout"))

    def _fail(self, exc: BaseException) -> None:
        self._phase = _Phase.DEAD
        self._settle(exc)
        self._close()

    def _settle(self, exc: BaseException | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            if exc is None:
                self._waiter.set_result(None)
            else:
                self._waiter.set_exception(exc)

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def _resume(self) -> None:
        if self._paused and self._transport is not None:
            self._transport.resume_reading()
            self._paused = False

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _nothing(_: memoryview) -> None:
    pass


def _nothing_counted(_: int) -> None:
    pass


def _cut_short(url: str, received: int, expected: int, exc: Exception | None) -> ShortBody:
    """The ShortBody that transfer.py makes of aiohttp's ClientPayloadError for the same connection loss."""
    inner = ContentLengthError(
        f"Not enough data to satisfy content length header (received {received} of {expected} bytes)."
    )
    text = f"Response payload is not completed: {inner!r}"
    if exc is not None:
        text = f"{text}. {exc!r}"
    return ShortBody(f"{url}: body cut short ({text.splitlines()[0]})")


class DirectPool:
    """Kept-alive connections by (scheme, host, port), for the bodies read directly; one per worker process."""

    def __init__(self, tls: ssl.SSLContext | bool, connect_timeout: float, read_timeout: float, keep: int) -> None:
        self.tls = _context(tls)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keep = keep
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self.answered = 0  # responses read and judged here, not handed to aiohttp (tests count them)
        self.opened = 0  # connections made

    async def fetch(
        self,
        url: str,
        shown: str,
        headers: dict[str, str],
        size: int,
        write: Write,
        on_bytes: Callable[[int], None],
        throttle: TokenBucket | None,
    ) -> bool:
        """GET `url` (`shown` in messages) and hand its `size` bytes to `write`; False: ask aiohttp instead,
        nothing of the body was read. Raises our errors as transfer.py raises them for aiohttp's."""
        target = URL(url)
        key = (target.scheme, target.raw_host or "", target.port or 0)
        request = request_bytes(target, headers)
        for _ in range(2):  # a kept-alive connection the server closed meanwhile: once more, on a new one
            conn, reused = await self._connection(key, shown)
            try:
                head = await conn.ask(shown, request)
            except _Lost:
                conn.close()
                if reused:
                    continue
                return False
            except BaseException:
                conn.close()
                raise
            try:
                if not _direct_body(head):
                    conn.close()
                    return False
                self.answered += 1
                _check(head, shown, size)
                await conn.read_body(size, write, on_bytes, throttle)
            except BaseException:
                conn.close()
                raise
            self._release(key, conn)
            return True
        return False

    async def _connection(self, key: tuple[str, str, int], shown: str) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        idle = self._idle.get(key, [])
        while idle:
            conn = idle.pop()
            if conn.alive and loop.time() - conn.used_at < IDLE_SECONDS:
                return conn, True
            conn.close()
        scheme, host, port = key
        tls = self.tls if scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout):  # as aiohttp's sock_connect: TLS handshake included
                # Resolved and connected as aiohttp does (happy eyeballs), so that failures read the same.
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25, loop=loop)
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout),
                    sock=sock,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            raise ConnectionFailed(f"{shown}: no connection within connect_timeout") from None
        except ssl.SSLCertVerificationError as exc:
            raise TlsError(
                f"{shown}: the TLS certificate of {host} is not trusted ({exc}); set ssl_verify to "
                "the CA bundle that signed it, or ssl_verify: false"
            ) from None
        except OSError as exc:
            raise ConnectionFailed(f"{shown}: cannot connect to {host}:{port}: {os_reason(exc)}") from None
        self.opened += 1
        return conn, False

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if conn.reusable and conn.alive and len(idle) < self._keep:
            conn.used_at = asyncio.get_running_loop().time()
            idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _direct_body(head: Head) -> bool:
    """Whether a response is ours to read or to fail: not a redirect (aiohttp follows those), not 1xx, and a
    200 only with a plain Content-Length body."""
    if head.status < 200 or 300 <= head.status < 400:
        return False
    if head.status != 200:
        return True
    encoding = head.headers.get("content-encoding", "identity").lower()
    length = head.headers.get("content-length", "")
    return "transfer-encoding" not in head.headers and encoding == "identity" and length.isdigit()


def _check(head: Head, shown: str, size: int) -> None:
    """The failures transfer._stream raises for a status or a length, with the same messages."""
    if head.status != 200:
        retry_after = parse_retry_after(head.headers.get("retry-after"), datetime.now(UTC))
        raise HttpStatusError(shown, head.status, head.reason, retry_after)
    promised = int(head.headers["content-length"])
    if promised != size:
        raise ShortBody(f"{shown}: server sends {promised} bytes, the record says {size}")


def _context(tls: ssl.SSLContext | bool) -> ssl.SSLContext:
    """aiohttp's `ssl` argument as a context for https URLs: False skips the checks, and True (the default
    checks) must not become a plain TCP connection."""
    if isinstance(tls, ssl.SSLContext):
        return tls
    return _unverified() if tls is False else ssl.create_default_context()


def _unverified() -> ssl.SSLContext:
    """`ssl_verify: false`, as aiohttp's ssl=False: TLS without checking the certificate or the name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
