"""A real channel server for the tests: aiohttp on 127.0.0.1 serving a folder, with faults on demand."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer


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

    Faults: "500", "503", "404", "429" (Retry-After 0), "short" (promises the full length, sends half,
    closes), "corrupt" (right length, wrong bytes), "stall" (sends half, then nothing for `stall_seconds`).
    """

    root: Path
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    requests: list[tuple[str, str]] = field(default_factory=list)
    stall_seconds: float = 5.0
    drip: tuple[int, float] | None = None  # (bytes, seconds): send package bodies this slowly
    served: list[Served] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    def fetched(self, suffix: str) -> list[str]:
        return [path for method, path in self.requests if method == "GET" and path.endswith(suffix)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append((request.method, path))
        pending = self.faults.get(path)
        fault = pending.pop(0) if pending else None
        if fault is not None and fault.isdigit():
            headers = {"Retry-After": "0"} if fault == "429" else {}
            return web.Response(status=int(fault), headers=headers)
        file = (self.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return web.Response(status=404)
        data = file.read_bytes()
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(data))})
        if fault == "corrupt":
            return web.Response(body=bytes(len(data)))
        if fault in ("short", "stall"):
            response = web.StreamResponse()
            response.content_length = len(data)
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            if fault == "stall":
                await asyncio.sleep(self.stall_seconds)
            if request.transport is not None:
                request.transport.close()
            return response
        if self.drip is not None and path.endswith((".conda", ".tar.bz2")):
            return await self._drip(request, path, data, *self.drip)
        return web.Response(body=data)

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
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()
