"""A real channel server for the tests: aiohttp on 127.0.0.1 serving a folder, with faults on demand."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

REDIRECT_PREFIX = "/r"  # "redirect" sends a request here: `/r/<path>` serves `<path>` with no fault
LOOP_PREFIX = "/loop"  # "redirect-loop" sends a request here: `/loop/<path>` redirects to itself, forever
PACKAGE_SUFFIXES = (".conda", ".tar.bz2")

FAULTS = (
    "500", "502", "503", "404", "429", "429-date", "short", "corrupt", "stall", "reset", "redirect", "redirect-loop",
)  # fmt: skip


@dataclass
class Served:
    """One response body as the server saw it: when it started and ended, and how much it sent."""

    path: str
    started: float
    ended: float | None = None
    sent: int = 0


@dataclass
class ChannelServer:
    """Serves `root`; `faults[path]` is a list of faults, one used up per request to that path.

    Faults: "500", "502", "503", "404" (that status, empty body); "429" (Retry-After in seconds,
    `retry_after`, 0 unless set); "429-date" (Retry-After as an HTTP-date `retry_after_date` seconds
    ahead); "short" (promises the full length, sends half, closes); "corrupt" (right length, wrong bytes);
    "stall" (sends half, then nothing for `stall_seconds`); "reset" (sends half, then resets the
    connection: RST, not FIN); "redirect" (302 to `/r/<path>`, which serves the file); "redirect-loop"
    (302 to `/loop/<path>`, which redirects to itself).

    `random_faults(rate, seed, kinds)` also injects a fault from `kinds` into that fraction of package
    requests that have no fault queued. Every fault injected, queued or random, is logged in `injected`.
    """

    root: Path
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, str]] = field(default_factory=list)
    stall_seconds: float = 5.0
    drip: tuple[int, float] | None = None  # (bytes, seconds): send package bodies this slowly
    served: list[Served] = field(default_factory=list)
    injected: list[tuple[str, str]] = field(default_factory=list)  # (path, fault), in order
    retry_after: int = 0
    retry_after_date: float = 1.0
    tls: ssl.SSLContext | None = None  # serve https:// with this context
    server: TestServer | None = None
    _random: tuple[float, int, tuple[str, ...]] | None = field(default=None, init=False)
    _seen: dict[str, int] = field(default_factory=lambda: defaultdict(int), init=False)  # requests per path

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    def fetched(self, suffix: str) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and path.endswith(suffix)]

    def random_faults(self, rate: float, seed: int, kinds: list[str]) -> None:
        """Fault `rate` of package requests with a kind from `kinds`.

        Each decision is drawn from (seed, path, how many times that path was asked for), so the same seed
        faults the same attempts of the same files however the client orders its requests.
        """
        unknown = set(kinds) - set(FAULTS)
        if unknown or not kinds or not 0 <= rate <= 1:
            raise ValueError(f"random_faults: bad rate {rate!r} or kinds {sorted(unknown) or kinds!r}")
        self._random = (rate, seed, tuple(kinds))

    def _next_fault(self, path: str) -> str | None:
        pending = self.faults.get(path)
        if pending:
            return pending.pop(0)
        if self._random is not None and path.endswith(PACKAGE_SUFFIXES):
            rate, seed, kinds = self._random
            rng = random.Random(f"{seed}:{path}:{self._seen[path]}")
            if rng.random() < rate:
                return rng.choice(kinds)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append((request.method, path))
        if path.startswith(f"{LOOP_PREFIX}/"):
            raise web.HTTPFound(path)
        redirected = path.startswith(f"{REDIRECT_PREFIX}/")
        if redirected:
            path = path.removeprefix(REDIRECT_PREFIX)
            fault = None
        else:
            fault = self._next_fault(path)
            self._seen[path] += 1
        if fault is not None:
            self.injected.append((path, fault))
        if fault is not None and fault.isdigit():
            headers = {"Retry-After": str(self.retry_after)} if fault == "429" else {}
            return web.Response(status=int(fault), headers=headers)
        if fault == "429-date":
            when = datetime.now(UTC) + timedelta(seconds=self.retry_after_date)
            return web.Response(status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
        if fault == "redirect":
            raise web.HTTPFound(f"{REDIRECT_PREFIX}{path}")
        if fault == "redirect-loop":
            raise web.HTTPFound(f"{LOOP_PREFIX}{path}")
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return web.Response(status=404)
        data = file.read_bytes()
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(data))})
        if fault == "corrupt":
            return web.Response(body=bytes(len(data)))
        if fault in ("short", "stall", "reset"):
            response = web.StreamResponse()
            response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if fault == "stall":
                await asyncio.sleep(self.stall_seconds)
            if request.transport is not None:
                if fault == "reset":
                    _reset(request.transport)
                else:
                    request.transport.close()
            return response
        if self.drip is not None and path.endswith(PACKAGE_SUFFIXES):
            return await self._drip(request, path, data, *self.drip)
        content_type = "text/html" if path.endswith(".html") else "application/octet-stream"
        return web.Response(body=data, content_type=content_type)

    async def _drip(self, request: web.Request, path: str, data: bytes, step: int, pause: float) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        record = Served(path, loop.time())
        self.served.append(record)
        response = web.StreamResponse()
        response.content_length = len(data)
        try:
            await response.prepare(request)
            for start in range(0, len(data), step):
                await response.write(data[start : start + step])
                record.sent += len(data[start : start + step])
                await asyncio.sleep(pause)
            await response.write_eof()
        finally:
            record.ended = loop.time()
        return response

    async def __aenter__(self) -> ChannelServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server(ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


def _reset(transport: asyncio.Transport) -> None:
    """Drop the connection with a TCP RST: SO_LINGER 0, then close without flushing."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
