"""Big bodies read off the socket (direct.py) against real servers: each outcome, and the same error, class
and one line, as the aiohttp path gives for the same fault. Run on asyncio's loop and on uvloop (the workers')."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import uvloop

from mirror_engine.bandwidth import TokenBucket
from mirror_engine.direct import DirectPool, parse_head
from mirror_engine.errors import ChecksumMismatch, ConnectionFailed, HttpStatusError, ShortBody, TlsError
from mirror_engine.session import Http, open_session
from mirror_engine.transfer import DIRECT_MIN_BYTES, TransferItem, download
from tests.channel_server import ChannelServer
from tests.helpers import make_config

NAME = "big-1.0-0.conda"
PATH = f"/noarch/{NAME}"
Runner = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    def runner(scenario: Coroutine[Any, Any, None]) -> None:
        (uvloop.run if request.param == "uvloop" else asyncio.run)(scenario)

    return runner


@pytest.fixture
def body(tmp_path: Path) -> bytes:
    data = random.Random(7).randbytes(DIRECT_MIN_BYTES + 12345)
    (tmp_path / "pkgs" / "noarch").mkdir(parents=True)
    (tmp_path / "pkgs" / "noarch" / NAME).write_bytes(data)
    return data


def item_for(server: ChannelServer, data: bytes, *, size: int | None = None, sha256: str | None = None) -> TransferItem:
    digest = sha256 or hashlib.sha256(data).hexdigest()
    return TransferItem(f"{server.url}noarch/{NAME}", "noarch", NAME, size or len(data), digest, None, 0)


def item_at(url: str, data: bytes) -> TransferItem:
    return TransferItem(f"{url}noarch/{NAME}", "noarch", NAME, len(data), hashlib.sha256(data).hexdigest(), None, 0)


async def raw_server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, str]:
    """A hand-written HTTP server on 127.0.0.1, for answers ChannelServer does not give; and its URL."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


@contextlib.asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[ChannelServer, Http]]:
    """The test channel under tmp_path/pkgs on a real server, and a session configured for it."""
    async with (
        ChannelServer(tmp_path / "pkgs") as server,
        open_session(make_config(tmp_path, channels=[server.url])) as session,
    ):
        yield server, session


def pool(session: Http) -> DirectPool:
    assert session.direct is not None
    return session.direct


async def outcome(session: Http, item: TransferItem, temp: Path, **options: Any) -> BaseException | None:
    """Download `item` to `temp`; the error, or None. Nothing may be left behind on an error."""
    try:
        await download(session, item, temp, lambda _: None, **options)
    except Exception as exc:
        assert not temp.exists()
        return exc
    return None


async def both_ways(
    session: Http, server: ChannelServer, item: TransferItem, tmp: Path, fault: str | None
) -> tuple[BaseException | None, BaseException | None]:
    """The same fault met directly, then through aiohttp."""
    direct = pool(session)
    results = []
    for way in (direct, None):
        if fault is not None:
            server.faults[PATH].append(fault)
        session.direct = way
        results.append(await outcome(session, item, tmp / f"{NAME}.part"))
        (tmp / f"{NAME}.part").unlink(missing_ok=True)
    session.direct = direct
    return results[0], results[1]


def same_error(
    direct: BaseException | None, through_aiohttp: BaseException | None, kind: type[Exception], *, counts: bool = True
) -> None:
    """The same class and line; with `counts` false, the same line but for its numbers (a TCP reset discards
    what the server's kernel had not sent yet, so how much each client received before it is chance)."""
    assert isinstance(direct, kind), direct
    assert type(direct) is type(through_aiohttp)
    if counts:
        assert str(direct) == str(through_aiohttp)
    else:
        assert re.sub(r"\d+", "N", str(direct)) == re.sub(r"\d+", "N", str(through_aiohttp))
    assert "\n" not in str(direct)


def test_a_big_file_is_read_directly_verified_and_its_connection_kept(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (server, session):
            counted: list[int] = []
            for number in range(2):
                temp = tmp_path / f"{number}.part"
                await download(session, item_for(server, body), temp, counted.append)
                assert temp.read_bytes() == body
            assert pool(session).answered == 2
            assert pool(session).opened == 1  # the second request went over the first connection
            assert sum(counted) == 2 * len(body)

    run(scenario())


def test_a_wrong_sha256_fails_as_through_aiohttp_and_leaves_nothing(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (server, session):
            direct, through_aiohttp = await both_ways(session, server, item_for(server, body), tmp_path, "corrupt")
            assert pool(session).answered == 1
        same_error(direct, through_aiohttp, ChecksumMismatch)

    run(scenario())


@pytest.mark.parametrize("fault", ["short", "reset"])
def test_a_body_cut_short_or_reset_fails_as_through_aiohttp(
    tmp_path: Path, body: bytes, run: Runner, fault: str
) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (server, session):
            direct, through_aiohttp = await both_ways(session, server, item_for(server, body), tmp_path, fault)
            assert pool(session).answered == 1
        same_error(direct, through_aiohttp, ShortBody, counts=fault != "reset")

    run(scenario())


def test_a_stalled_body_fails_after_read_timeout_as_through_aiohttp(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with ChannelServer(tmp_path / "pkgs", stall_seconds=3) as server:
            config = make_config(tmp_path, channels=[server.url], read_timeout=0.5)
            async with open_session(config) as session:
                direct, through_aiohttp = await both_ways(session, server, item_for(server, body), tmp_path, "stall")
                assert pool(session).answered == 1
        same_error(direct, through_aiohttp, ConnectionFailed)
        assert "stalled, no data within read_timeout" in str(direct)

    run(scenario())


@pytest.mark.parametrize("fault", ["404", "500", "429", "429-date"])
def test_an_error_status_fails_as_through_aiohttp(tmp_path: Path, body: bytes, run: Runner, fault: str) -> None:
    async def scenario() -> None:
        async with (
            ChannelServer(tmp_path / "pkgs", retry_after=7, retry_after_date=30) as server,
            open_session(make_config(tmp_path, channels=[server.url])) as session,
        ):
            direct, through_aiohttp = await both_ways(session, server, item_for(server, body), tmp_path, fault)
            assert pool(session).answered == 1
        same_error(direct, through_aiohttp, HttpStatusError)
        assert isinstance(direct, HttpStatusError) and isinstance(through_aiohttp, HttpStatusError)
        assert direct.status == through_aiohttp.status == int(fault[:3])
        if fault == "429":
            assert direct.retry_after == through_aiohttp.retry_after == 7
        if fault == "429-date":
            assert direct.retry_after is not None and 20 < direct.retry_after <= 30

    run(scenario())


def test_a_length_other_than_the_records_fails_as_through_aiohttp(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (server, session):
            item = item_for(server, body, size=len(body) + 1)
            direct, through_aiohttp = await both_ways(session, server, item, tmp_path, None)
        same_error(direct, through_aiohttp, ShortBody)
        assert "server sends" in str(direct)

    run(scenario())


def test_a_redirect_is_left_to_aiohttp_which_follows_it(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (server, session):
            server.faults[PATH] += ["redirect", "redirect"]  # as a real server would, every time
            temp = tmp_path / "r.part"
            await download(session, item_for(server, body), temp, lambda _: None)
            assert temp.read_bytes() == body
            assert pool(session).answered == 0
            assert server.fetched(NAME) == [PATH, PATH, f"/r{PATH}"]  # asked directly, then by aiohttp

    run(scenario())


def test_https_with_a_private_ca(tmp_path: Path, body: bytes, run: Runner) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)

    async def scenario() -> None:
        async with ChannelServer(tmp_path / "pkgs", tls=tls) as server:
            assert server.url.startswith("https://")
            trusted = make_config(tmp_path, channels=[server.url], ssl_verify=str(bundle))
            async with open_session(trusted) as session:
                temp = tmp_path / "t.part"
                await download(session, item_for(server, body), temp, lambda _: None)
                assert temp.read_bytes() == body
                assert pool(session).answered == 1
                direct, through_aiohttp = await both_ways(session, server, item_for(server, body), tmp_path, "short")
                same_error(direct, through_aiohttp, ShortBody)
            async with open_session(make_config(tmp_path, channels=[server.url])) as session:
                direct, through_aiohttp = await both_ways(session, server, item_for(server, body), tmp_path, None)
                assert pool(session).answered == 0
            same_error(direct, through_aiohttp, TlsError)
            unchecked = make_config(tmp_path, channels=[server.url], ssl_verify=False)
            async with open_session(unchecked) as session:
                await download(session, item_for(server, body), tmp_path / "u.part", lambda _: None)
                assert pool(session).answered == 1

    run(scenario())


def test_cancelling_a_direct_download_removes_its_temporary_file(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with (
            ChannelServer(tmp_path / "pkgs", drip=(256 << 10, 0.05)) as server,
            open_session(make_config(tmp_path, channels=[server.url])) as session,
        ):
            temp = tmp_path / "c.part"
            started = asyncio.Event()
            task = asyncio.create_task(download(session, item_for(server, body), temp, lambda _: started.set()))
            await started.wait()  # a first MiB is written
            assert temp.exists()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not temp.exists()
            assert pool(session).answered == 1
            # the connection was dropped, not kept: the next download opens another and succeeds
            await download(session, item_for(server, body), temp, lambda _: None)
            assert temp.read_bytes() == body
            assert pool(session).opened == 2

    run(scenario())


class _Recorder(TokenBucket):
    """A bucket that asks for a short pause now and then and records what was taken."""

    def __init__(self) -> None:
        super().__init__(1 << 40)
        self.taken = 0

    def delay_for(self, nbytes: int) -> float:
        self.taken += nbytes
        return 0.002 if self.taken % 3 == 0 else 0.0


def test_the_throttle_is_asked_for_every_byte(tmp_path: Path, body: bytes, run: Runner) -> None:
    async def scenario() -> None:
        async with served(tmp_path) as (server, session):
            throttle = _Recorder()
            temp = tmp_path / "b.part"
            await download(session, item_for(server, body), temp, lambda _: None, throttle)
            assert temp.read_bytes() == body
            assert throttle.taken == len(body)
            assert pool(session).answered == 1

    run(scenario())


def test_small_files_proxies_and_credentials_stay_with_aiohttp(tmp_path: Path, body: bytes, run: Runner) -> None:
    (tmp_path / "pkgs" / "noarch" / "small-1-0.conda").write_bytes(b"x" * 1000)

    async def scenario() -> None:
        async with ChannelServer(tmp_path / "pkgs") as server:
            config = make_config(tmp_path, channels=[server.url], proxy_servers={"https": "http://127.0.0.1:9"})
            async with open_session(config) as session:
                small = TransferItem(
                    f"{server.url}noarch/small-1-0.conda", "noarch", "small-1-0.conda", 1000,
                    hashlib.sha256(b"x" * 1000).hexdigest(), None, 0,
                )  # fmt: skip
                await download(session, small, tmp_path / "s.part", lambda _: None)
                assert pool(session).answered == 0
                assert session.direct_headers(f"{server.url}noarch/{NAME}") is not None
                assert session.direct_headers(f"http://u:p@127.0.0.1:{server.server.port}/x") is None  # type: ignore[union-attr]
                assert session.direct_headers(f"https://127.0.0.1:{server.server.port}/x") is None  # type: ignore[union-attr]

    run(scenario())


def test_heads_that_are_not_plain_are_left_to_aiohttp() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\nX-A: 1\r\nx-a: 2")
    assert head is not None and head.status == 200 and head.reason == "OK" and not head.keep_alive
    assert head.headers["x-a"] == "1, 2"
    assert parse_head(b"HTTP/1.1 200 OK\r\n folded: header") is None
    assert parse_head(b"ICY 200 OK") is None
    assert parse_head(b"HTTP/1.1 2000 OK") is None
    assert parse_head(b"HTTP/1.0 200 OK").keep_alive is False  # type: ignore[union-attr]


def test_a_kept_alive_connection_the_server_dropped_is_replaced_unseen(
    tmp_path: Path, body: bytes, run: Runner
) -> None:
    """A server that answers one request per connection and drops the next one unanswered (as at its idle
    timeout): the second download goes over a new connection, not to aiohttp, and nothing fails."""

    async def scenario() -> None:
        connections = 0

        async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
                await reader.readuntil(b"\r\n\r\n")  # the next request on this connection: dropped
            except asyncio.IncompleteReadError:
                pass  # the client closed it first
            finally:
                writer.close()

        server, url = await raw_server(one_answer)
        async with server, open_session(make_config(tmp_path, channels=[url])) as session:
            item = item_at(url, body)
            for number in range(2):
                temp = tmp_path / f"{number}.part"
                await download(session, item, temp, lambda _: None)
                assert temp.read_bytes() == body
            assert pool(session).answered == 2 and pool(session).opened == 2 and connections == 2

    run(scenario())


def test_the_request_carries_the_headers_aiohttp_would_send_netrc_login_included(
    tmp_path: Path, body: bytes, run: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    async def scenario() -> None:
        heads: list[bytes] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                await writer.drain()
            finally:
                writer.close()

        server, url = await raw_server(answer)
        port = server.sockets[0].getsockname()[1]
        async with server, open_session(make_config(tmp_path, channels=[url])) as session:
            item = item_at(url, body)
            await download(session, item, tmp_path / "n.part", lambda _: None)
            assert pool(session).answered == 1
        head = heads[0].decode()
        assert head.startswith(f"GET /noarch/{NAME} HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}\r\n" in head and "Accept: */*\r\n" in head
        assert f"Authorization: {aiohttp.encode_basic_auth('alice', 's3cret')}\r\n" in head
        assert "Accept-Encoding: identity\r\n" in head and "User-Agent: mirror_engine/" in head

    run(scenario())


def test_no_connection_fails_as_through_aiohttp(tmp_path: Path, body: bytes, run: Runner, black_hole: int) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        refusing = unused.getsockname()[1]  # closed when the block ends: nothing listens there

    async def scenario() -> None:
        for port, kind in ((refusing, "cannot connect to 127.0.0.1"), (black_hole, "no connection within")):
            url = f"http://127.0.0.1:{port}/"
            config = make_config(tmp_path, channels=[url], connect_timeout=0.3)
            async with open_session(config) as session:
                item = TransferItem(f"{url}noarch/{NAME}", "noarch", NAME, len(body), None, None, 0)
                direct = pool(session)
                failed = await outcome(session, item, tmp_path / "x.part")
                session.direct = None
                through_aiohttp = await outcome(session, item, tmp_path / "x.part")
                session.direct = direct
                assert direct.opened == 0 and direct.answered == 0
            same_error(failed, through_aiohttp, ConnectionFailed)
            assert kind in str(failed)

    run(scenario())


@pytest.mark.parametrize("tls", [True, False])
def test_https_is_never_plain_tcp_whatever_the_tls_argument(tls: bool) -> None:
    context = DirectPool(tls, 1.0, 1.0, keep=1).tls
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == (ssl.CERT_REQUIRED if tls else ssl.CERT_NONE)
    assert context.check_hostname is tls
