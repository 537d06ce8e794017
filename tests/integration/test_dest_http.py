"""The HTTP PUT destination against a real nginx with the DAV module on 127.0.0.1, read back only over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from mirror_engine.config import MirrorConfig
from mirror_engine.demo import DEMO_PACKAGES, build_channel
from mirror_engine.destinations import make_destination
from mirror_engine.destinations.http import HttpPutDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.errors import DestinationError, UploadRefused
from mirror_engine.progress import NullReporter
from mirror_engine.shards import read_shard_index
from mirror_engine.summary import RunSummary
from tests.channel_server import ChannelServer
from tests.e2e.conftest import start_cli
from tests.helpers import assert_index_sound, make_config, mirror, names, published
from tests.nginx_dav import PASSWORD, USER, DavServer, nginx_binary, nginx_dav

CHANNEL = "anaconda"
SUBDIRS = ("noarch", "linux-64")
AUTH = {"Authorization": aiohttp.encode_basic_auth(USER, PASSWORD)}
INDEX_FILES = ("repodata.json", "repodata.json.zst", "repodata_shards.msgpack.zst")


needs_nginx = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (apt-get install nginx; `make test` installs it as root)"
)


@pytest.fixture
def dav(tmp_path: Path) -> Iterator[DavServer]:
    with nginx_dav(tmp_path / "dav") as server:
        yield server


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path / "upstream"
    return root, build_channel(root)


def http_config(config_dir: Path, url: str, channels: list[str], **keys: Any) -> MirrorConfig:
    settings = {"kind": "http", "url": url, "username": USER, "password": PASSWORD, **keys.pop("destination", {})}
    config_dir.mkdir(parents=True, exist_ok=True)
    return make_config(config_dir, channels=channels, destination=settings, **keys)


async def mirror_http(config: MirrorConfig) -> RunSummary:
    return await MirrorRun(config, make_destination(config), NullReporter(), rng=random.Random(1)).run()


async def fetch_channel(url: str, into: Path, subdirs: tuple[str, ...], tls: ssl.SSLContext | None = None) -> None:
    """Copy, over HTTP only, what the server publishes: each subdir's index files, the shards its shard index
    names and the packages its repodata.json names; then the local helpers can judge the copy."""
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def get(path: str) -> bytes:
            async with session.get(f"{url}/{CHANNEL}/{path}", ssl=tls or True) as response:
                assert response.status == 200, f"GET {path}: HTTP {response.status}"
                data = await response.read()
            (into / path).parent.mkdir(parents=True, exist_ok=True)
            (into / path).write_bytes(data)
            return data

        await get("channeldata.json")
        for subdir in subdirs:
            for name in INDEX_FILES:
                await get(f"{subdir}/{name}")
            shard_index = read_shard_index((into / subdir / "repodata_shards.msgpack.zst").read_bytes())
            for digest in shard_index["shards"].values():
                await get(f"{subdir}/shards/{bytes(digest).hex()}.msgpack.zst")
            for filename in names(json.loads((into / subdir / "repodata.json").read_bytes())):
                await get(f"{subdir}/{filename}")


async def status_of(url: str, path: str) -> int:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.head(f"{url}/{CHANNEL}/{path}") as response,
    ):
        return response.status


def copy_config(tmp_path: Path) -> MirrorConfig:
    """A config whose channel_dir is where fetch_channel copies to, so tests.helpers can read it."""
    return make_config(tmp_path / "copy", channels=[str(tmp_path / "upstream")])


def package_files(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.iterdir()
        if path.name.endswith((".conda", ".tar.bz2"))
    }


@needs_nginx
async def test_mirror_into_nginx_holds_what_a_local_mirror_holds(tmp_path: Path, dav: DavServer, upstream: Any) -> None:
    root, docs = upstream
    async with ChannelServer(root) as server:
        local = make_config(tmp_path / "local", channels=[server.url])
        assert (await mirror(local)).exit_code == 0
        config = http_config(tmp_path / "remote", dav.url, [server.url])
        summary = await mirror_http(config)
    assert summary.exit_code == 0, summary.failures
    assert sorted(summary.published) == sorted(SUBDIRS)
    copy = copy_config(tmp_path)
    await fetch_channel(dav.url, copy.channel_dir, SUBDIRS)
    for subdir in SUBDIRS:
        doc = assert_index_sound(copy, subdir, docs[subdir])  # sha256 and size of every file named; .zst, shards
        assert names(doc) == names(published(local, subdir))
        assert package_files(copy.channel_dir / subdir) == package_files(local.channel_dir / subdir)
        for name in ("repodata.json", "repodata.json.zst"):
            assert (copy.channel_dir / subdir / name).read_bytes() == (local.channel_dir / subdir / name).read_bytes()
    assert json.loads((copy.channel_dir / "channeldata.json").read_bytes()) == json.loads(
        (local.channel_dir / "channeldata.json").read_bytes()
    )
    assert await status_of(dav.url, "index.html") == 200
    assert not [p for p in (config.state_dir / "staging").rglob("*") if p.is_file()], "uploaded files stay staged"
    assert config.channel_dir.exists() is False, "a remote destination writes no channel folder locally"


@needs_nginx
async def test_second_run_uploads_nothing_and_an_upstream_removal_is_deleted_after_the_new_index(
    tmp_path: Path, dav: DavServer, upstream: Any
) -> None:
    root, _ = upstream
    config = http_config(tmp_path, dav.url, [str(root)])
    first = await mirror_http(config)
    assert sum(row.downloaded for row in first.rows.values()) == 16
    package_heads = [r for r in dav.requests() if r[0] == "HEAD" and r[1].endswith((".conda", ".tar.bz2"))]
    assert len(package_heads) == 16, "one HEAD per upload; the journal's stat asks no more"
    before = len(dav.requests())

    second = await mirror_http(config)
    assert sum(row.downloaded for row in second.rows.values()) == 0
    assert sum(row.present for row in second.rows.values()) == 16
    assert [r for r in dav.requests()[before:] if r[0] in ("PUT", "DELETE")] == []
    planned = await MirrorRun(config, make_destination(config), NullReporter()).run(dry_run=True)
    assert sum(row.to_fetch for row in planned.rows.values()) == 0  # plan reads the listing without open()

    build_channel(root, [package for package in DEMO_PACKAGES if package.name != "zlib"])
    mark = len(dav.requests())
    third = await mirror_http(config)
    assert third.exit_code == 0, third.failures
    assert third.deleted == {"linux-64": 2}  # noarch is unchanged, so not even planned
    log = dav.requests()[mark:]
    index_put = log.index(("PUT", f"/{CHANNEL}/linux-64/repodata.json", 204))
    for filename in ("zlib-1.3.1-h5eee18b_0.conda", "zlib-1.3.1-h5eee18b_0.tar.bz2"):
        assert log.index(("DELETE", f"/{CHANNEL}/linux-64/{filename}", 204)) > index_put
        assert await status_of(dav.url, f"linux-64/{filename}") == 404
    assert not [r for r in log if r[0] == "PUT" and r[1].endswith((".conda", ".tar.bz2"))], "nothing uploaded again"
    copy = copy_config(tmp_path)
    await fetch_channel(dav.url, copy.channel_dir, ("linux-64",))
    assert not any(name.startswith("zlib") for name in names(published(copy, "linux-64")))


@needs_nginx
@pytest.mark.parametrize("where", ["password key", "url"])
async def test_wrong_password_is_one_error_naming_the_url_and_401_and_never_the_password(
    tmp_path: Path, dav: DavServer, upstream: Any, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    root, _ = upstream
    wrong = "not-the-Pa55word"
    if where == "url":  # credentials in the URL must be stripped from it wherever it is shown
        url = dav.url.replace("http://", f"http://{USER}:{wrong}@")
        config = make_config(tmp_path, channels=[str(root)], destination={"kind": "http", "url": url})
    else:
        config = http_config(tmp_path, dav.url, [str(root)], destination={"password": wrong})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(UploadRefused) as raised:
        await mirror_http(config)
    message = str(raised.value)
    assert message.startswith(f"{dav.url}/{CHANNEL}/noarch/repodata.json: HTTP 401"), message
    assert "destination.password" in message and "\n" not in message
    assert any(dav.url in record.getMessage() for record in caplog.records), "URLs are logged: check them"
    for text in (message, caplog.text, *(record.getMessage() for record in caplog.records)):
        assert wrong not in text and PASSWORD not in text
    assert ("GET", f"/{CHANNEL}/noarch/repodata.json", 401) in dav.requests()
    assert [r for r in dav.requests() if r[0] == "PUT"] == []


@needs_nginx
async def test_cli_run_with_password_from_the_environment(
    tmp_path: Path, dav: DavServer, upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: `${VAR}` in the config, exit 0 with the right password, exit 1 and one line with a wrong one."""
    root, docs = upstream
    (tmp_path / "c.yaml").write_text(
        f"channels: [{root}]\nplatforms: [noarch]\nretries: 0\n"
        f"destination:\n  kind: http\n  url: {dav.url}/\n  username: {USER}\n  password: ${{DAV_PASSWORD}}\n"
    )
    outputs: dict[str, tuple[int | None, str, str]] = {}
    for password in (PASSWORD, "wrong-Pa55"):
        monkeypatch.setenv("DAV_PASSWORD", password)
        process = await start_cli("run", "c.yaml", "--progress", "none", cwd=tmp_path)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        outputs[password] = (process.returncode, out.decode(), err.decode())
    code, stdout, stderr = outputs[PASSWORD]
    assert code == 0, stderr
    assert f"mirror: {dav.url}/{CHANNEL}" in stdout
    assert dav.puts().count(f"/{CHANNEL}/noarch/repodata.json") == 1
    code, stdout, stderr = outputs["wrong-Pa55"]
    assert code == 1
    errors = [line for line in stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"mirror-engine: error: {dav.url}/{CHANNEL}/noarch/repodata.json: HTTP 401 Unauthorized: "
                      "check destination.username and destination.password (or destination.token)"]  # fmt: skip
    assert "wrong-Pa55" not in stdout + stderr and PASSWORD not in stdout + stderr
    copy = copy_config(tmp_path)
    await fetch_channel(dav.url, copy.channel_dir, ("noarch",))
    assert names(assert_index_sound(copy, "noarch", docs["noarch"])) == names(docs["noarch"])


@needs_nginx
async def test_tls_needs_the_ca_in_destination_ssl_verify(tmp_path: Path, upstream: Any) -> None:
    root, docs = upstream
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with nginx_dav(tmp_path / "dav", tls=ca) as dav:
        assert dav.url.startswith("https://127.0.0.1:")
        untrusting = http_config(tmp_path / "a", dav.url, [str(root)], platforms=["noarch"])
        with pytest.raises(DestinationError) as raised:
            await mirror_http(untrusting)
        assert "127.0.0.1" in str(raised.value) and "destination.ssl_verify" in str(raised.value)
        assert "not trusted" in str(raised.value)
        config = http_config(
            tmp_path / "b", dav.url, [str(root)], platforms=["noarch"], destination={"ssl_verify": str(ca_file)}
        )
        summary = await mirror_http(config)
        assert summary.exit_code == 0, summary.failures
        client_tls = ssl.create_default_context()
        ca.configure_trust(client_tls)
        copy = copy_config(tmp_path)
        await fetch_channel(dav.url, copy.channel_dir, ("noarch",), tls=client_tls)
    assert names(assert_index_sound(copy, "noarch", docs["noarch"])) == names(docs["noarch"])


@needs_nginx
async def test_a_refused_body_stops_the_run_and_no_index_names_an_unverified_file(
    tmp_path: Path, upstream: Any
) -> None:
    root, docs = upstream
    store = tmp_path / "store"
    with nginx_dav(tmp_path / "dav1", root=store) as dav:
        assert (await mirror_http(http_config(tmp_path, dav.url, [str(root)], platforms=["noarch"]))).exit_code == 0
    with nginx_dav(tmp_path / "dav2", root=store, max_body="100k") as dav:  # the same files, a lower limit
        config = http_config(tmp_path, dav.url, [str(root)], platforms=["linux-64"])
        with pytest.raises(UploadRefused) as raised:
            await mirror_http(config)
        log = dav.requests()
        copy = copy_config(tmp_path)
        await fetch_channel(dav.url, copy.channel_dir, ("noarch",))
        linux_index = await status_of(dav.url, "linux-64/repodata.json")
    message = str(raised.value)
    assert f"{dav.url}/{CHANNEL}/linux-64/" in message and "HTTP 413" in message and "client_max_body_size" in message
    refused = {path for method, path, status in log if method == "PUT" and status == 413}
    stored = {path for method, path, status in log if method == "PUT" and status == 201}
    assert refused and stored, "the limit should refuse some packages and let smaller ones through"
    assert names(assert_index_sound(copy, "noarch", docs["noarch"])) == names(docs["noarch"])
    assert linux_index == 404, "linux-64 was not complete, so it must not be published"
    for path in (store / CHANNEL / "linux-64").iterdir():  # whatever reached the store is whole
        record = {**docs["linux-64"]["packages"], **docs["linux-64"]["packages.conda"]}[path.name]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]


@needs_nginx
async def test_a_big_upload_arrives_whole(tmp_path: Path, dav: DavServer) -> None:
    config = http_config(tmp_path, dav.url, [str(tmp_path)])
    destination = HttpPutDestination(config, tmp_path / "staging")
    await destination.open()
    try:
        source = destination.temp_path("noarch", "big-1-0.conda")
        data = random.Random(3).randbytes(24 * 1024 * 1024)
        source.write_bytes(data)
        await destination.upload_file(source, "noarch", "big-1-0.conda")  # its memory: python -m benchmarks.bounds
        stat = await destination.stat("noarch", "big-1-0.conda")
    finally:
        await destination.close()
    assert stat is not None and stat.size == 24 * 1024 * 1024 and stat.mtime_ns == 0
    stored = (dav.root / CHANNEL / "noarch" / "big-1-0.conda").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()


@dataclass
class FakeStore:
    """A PUT store for what nginx will not do on demand: keep half of each body, or answer 5xx first."""

    files: dict[str, bytes] = field(default_factory=dict)
    truncate: bool = False
    put_faults: list[int] = field(default_factory=list)  # statuses for the next PUTs, one each
    authorizations: set[str] = field(default_factory=set)
    stalled: asyncio.Event | None = None  # set: PUTs wait, reading nothing, until the event is set

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.add(request.headers.get("Authorization", ""))
        if request.method == "PUT" and self.stalled is not None:
            await self.stalled.wait()
            return web.Response(status=500)
        if request.method == "PUT":
            body = await request.read()
            if self.put_faults:
                return web.Response(status=self.put_faults.pop(0))
            self.files[request.path] = body[: len(body) // 2] if self.truncate else body
            return web.Response(status=201)
        if request.method == "DELETE":
            self.files.pop(request.path, None)
            return web.Response(status=204)
        if request.path not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[request.path])  # HEAD: the same headers, no body


async def serve(store: FakeStore) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", store.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_store_that_keeps_fewer_bytes_does_not_pass(tmp_path: Path, upstream: Any) -> None:
    root, _ = upstream
    store = FakeStore(truncate=True)
    server = await serve(store)
    try:
        config = http_config(tmp_path, str(server.make_url("/")), [str(root)], platforms=["noarch"], retries=1)
        with pytest.raises(DestinationError, match=r"the server holds \d+ bytes after the upload, not \d+"):
            await mirror_http(config)
    finally:
        await server.close()
    assert store.files, "the uploads reached the store"
    assert not [path for path in store.files if "repodata" in path], "nothing may be published over them"


async def test_server_errors_are_retried_and_a_token_is_sent_as_bearer(tmp_path: Path, upstream: Any) -> None:
    root, docs = upstream
    store = FakeStore(put_faults=[503, 500])
    server = await serve(store)
    try:
        url = str(server.make_url("/")).rstrip("/")
        config = make_config(
            tmp_path,
            channels=[str(root)],
            platforms=["noarch"],
            destination={"kind": "http", "url": url, "token": "t0k"},
        )
        summary = await mirror_http(config)
    finally:
        await server.close()
    assert summary.exit_code == 0, summary.failures
    assert store.put_faults == []
    assert store.authorizations == {"Bearer t0k"}
    held = {path.rpartition("/")[2] for path in store.files if path.startswith(f"/{CHANNEL}/noarch/")}
    assert names(docs["noarch"]) <= held


async def test_an_upload_the_server_stops_reading_ends_at_file_timeout(tmp_path: Path) -> None:
    release = asyncio.Event()
    store = FakeStore(stalled=release)
    server = await serve(store)
    url = str(server.make_url("/")).rstrip("/")
    config = http_config(tmp_path, url, [str(tmp_path)], retries=0, file_timeout=0.5)
    destination = HttpPutDestination(config, tmp_path / "staging")
    await destination.open()
    try:
        source = destination.temp_path("noarch", "big-1-0.conda")
        source.write_bytes(bytes(32 * 1024 * 1024))  # far more than the socket buffers hold
        with pytest.raises(DestinationError, match=r"big-1-0.conda: upload not done within file_timeout \(0.5s\)"):
            await destination.upload_file(source, "noarch", "big-1-0.conda")
    finally:
        release.set()
        await destination.close()
        await server.close()
    assert store.files == {}
