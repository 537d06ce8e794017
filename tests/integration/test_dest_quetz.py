"""The quetz destination against a real quetz server on 127.0.0.1 (see tests/quetz_server.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import ssl
import subprocess
import sys
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
from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel, package_bytes
from mirror_engine.destinations import make_destination
from mirror_engine.destinations.base import FileStat
from mirror_engine.destinations.quetz import QuetzDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.errors import DestinationError, UploadRefused
from mirror_engine.progress import NullReporter
from mirror_engine.summary import RunSummary
from tests.channel_server import ChannelServer
from tests.helpers import make_config, mirror, names, published
from tests.quetz_server import QuetzServer, quetz_venv, running_quetz

REPO = Path(__file__).resolve().parents[2]
NOARCH = [package for package in DEMO_PACKAGES if package.subdir == "noarch"]
TZDATA = "tzdata-2024a-h0c530f3_0.conda"
PATCHED = "numpy-1.26.4-py311h64a7726_0.conda"  # DEMO_PATCHES adds `constrains` to its served record


@pytest.fixture(scope="session")
def quetz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuetzServer]:
    venv = quetz_venv()
    if venv is None:
        pytest.skip("quetz-server is not installed: run `make quetz` (build/quetz-venv) or set QUETZ_VENV")
    with running_quetz(venv, tmp_path_factory.mktemp("quetz")) as server:
        yield server


@pytest.fixture
def channel_name(request: pytest.FixtureRequest) -> str:
    """A channel of its own for each test on the shared server (quetz: no '_', at most 50 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    return f"{slug[:32].strip('-')}-{hashlib.sha256(request.node.name.encode()).hexdigest()[:8]}"


def quetz_config(tmp_path: Path, server: QuetzServer, channel: str, **keys: Any) -> MirrorConfig:
    destination = {"kind": "quetz", "url": server.url, "api_key": "${QUETZ_API_KEY}", **keys.pop("destination", {})}
    return make_config(tmp_path, dest_channel=channel, destination=destination, **keys)


async def mirror_to_quetz(config: MirrorConfig) -> RunSummary:
    run = MirrorRun(config, make_destination(config), NullReporter(), rng=random.Random(1))
    return await run.run()


async def http(method: str, url: str, **options: Any) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **options) as response:
        return response.status, await response.read()


async def server_index(server: QuetzServer, channel: str, subdir: str) -> dict[str, Any]:
    status, body = await http("GET", f"{server.url}/get/{channel}/{subdir}/repodata.json")
    assert status == 200, body
    doc: dict[str, Any] = json.loads(body)
    return doc


async def served_sha256(server: QuetzServer, channel: str, subdir: str, filename: str) -> str | None:
    status, body = await http("GET", f"{server.url}/get/{channel}/{subdir}/{filename}")
    return hashlib.sha256(body).hexdigest() if status == 200 else None


async def upload(server: QuetzServer, channel: str, filename: str, data: bytes, *, force: bool = False) -> int:
    """Upload as another client of the server would, with the owner's key."""
    params = {"sha256": hashlib.sha256(data).hexdigest(), "force": str(force).lower()}
    url = f"{server.url}/api/channels/{channel}/upload/{filename}"
    status, _ = await http("POST", url, params=params, data=data, headers={"X-API-Key": server.api_key})
    return status


async def create_channel(server: QuetzServer, channel: str) -> None:
    body = {"name": channel, "private": False}
    status, _ = await http("POST", f"{server.url}/api/channels", json=body, headers={"X-API-Key": server.api_key})
    assert status == 201


@pytest.fixture
def api_key(quetz: QuetzServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QUETZ_API_KEY", quetz.api_key)
    return quetz.api_key


async def test_channel_is_created_and_serves_upstream_bytes_like_a_local_mirror(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    docs = build_channel(tmp_path / "upstream")
    async with ChannelServer(tmp_path / "upstream") as upstream:
        assert (await http("GET", f"{quetz.url}/api/channels/{channel_name}"))[0] == 404
        config = quetz_config(tmp_path / "to-quetz", quetz, channel_name, channels=[upstream.url])
        summary = await mirror_to_quetz(config)
        local = make_config(tmp_path / "to-folder", channels=[upstream.url])
        assert (await mirror(local)).exit_code == 0
    assert summary.exit_code == 0, summary.failures
    assert sorted(summary.published) == ["linux-64", "noarch"]
    # Not one look at quetz's index per uploaded file (16 in linux-64): that would be quadratic in a big subdir.
    assert len(quetz.requests("GET", f"/get/{channel_name}/linux-64/repodata.json")) <= 6
    assert (await http("GET", f"{quetz.url}/api/channels/{channel_name}"))[0] == 200
    in_quetz: dict[tuple[str, str], str | None] = {}
    in_folder: dict[tuple[str, str], str] = {}
    for subdir, upstream_doc in docs.items():
        index = await server_index(quetz, channel_name, subdir)
        assert names(index) == names(upstream_doc)
        for filename in names(index):
            in_quetz[subdir, filename] = await served_sha256(quetz, channel_name, subdir, filename)
            record = index["packages.conda"].get(filename) or index["packages"][filename]
            assert record["sha256"] == in_quetz[subdir, filename]
        for filename in names(published(local, subdir)):
            data = (local.channel_dir / subdir / filename).read_bytes()
            in_folder[subdir, filename] = hashlib.sha256(data).hexdigest()
    expected = {
        (subdir, filename): record["sha256"]
        for subdir, doc in docs.items()
        for section in ("packages", "packages.conda")
        for filename, record in doc[section].items()
    }
    assert in_quetz == in_folder == expected
    # The caveat the docs state: quetz indexes the archive's own metadata, so upstream's hot-fix is lost.
    linux = await server_index(quetz, channel_name, "linux-64")
    assert "constrains" not in linux["packages.conda"][PATCHED]
    assert published(local, "linux-64")["packages.conda"][PATCHED]["constrains"] == ["numpy-base <0a0"]
    assert not any((config.state_dir / "staging").rglob("*.part"))


async def test_second_run_uploads_and_downloads_nothing(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    build_channel(tmp_path / "upstream", NOARCH)
    async with ChannelServer(tmp_path / "upstream") as upstream:
        config = quetz_config(tmp_path, quetz, channel_name, channels=[upstream.url])
        first = await mirror_to_quetz(config)
        uploads = len(quetz.requests("POST", f"/api/channels/{channel_name}/upload/"))
        upstream.requests.clear()
        second = await mirror_to_quetz(config)
    assert first.exit_code == 0 and second.exit_code == 0, (first.failures, second.failures)
    assert uploads == len(NOARCH) == sum(row.downloaded for row in first.rows.values())
    assert len(quetz.requests("POST", f"/api/channels/{channel_name}/upload/")) == uploads
    assert sum(row.downloaded for row in second.rows.values()) == 0
    assert not upstream.fetched(".conda")
    assert second.unchanged and not second.published  # the journal vouched for quetz's listing


async def test_a_lost_journal_costs_downloads_but_no_duplicate(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    """Without the journal quetz's copies are not trusted by name: each 409 is checked against its sha256."""
    build_channel(tmp_path / "upstream", NOARCH)
    async with ChannelServer(tmp_path / "upstream") as upstream:
        config = quetz_config(tmp_path, quetz, channel_name, channels=[upstream.url])
        assert (await mirror_to_quetz(config)).exit_code == 0
        (config.state_dir / "journal.sqlite").unlink()
        again = await mirror_to_quetz(config)
    assert again.exit_code == 0, again.failures
    conflicts = [line for line in quetz.requests("POST", f"/{channel_name}/upload/") if " 409" in line]
    assert len(conflicts) == len(NOARCH)
    checked = quetz.requests("GET", f"/get/{channel_name}/noarch/{TZDATA}")
    assert len(checked) == 1


async def test_other_bytes_under_the_same_name_are_reported_not_trusted(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    docs = build_channel(tmp_path / "upstream", NOARCH)
    tzdata = next(package for package in NOARCH if package.name == "tzdata")
    impostor = package_bytes(DemoPackage(**{**tzdata.__dict__, "payload_size": 1234}), ".conda")
    await create_channel(quetz, channel_name)
    assert await upload(quetz, channel_name, TZDATA, impostor, force=True) == 201
    async with ChannelServer(tmp_path / "upstream") as upstream:
        config = quetz_config(tmp_path, quetz, channel_name, channels=[upstream.url])
        summary = await mirror_to_quetz(config)
    assert summary.exit_code == 1
    [(what, why)] = summary.failures
    assert what == f"noarch/{TZDATA}"
    assert "other bytes" in why and hashlib.sha256(impostor).hexdigest() in why and "\n" not in why
    assert await served_sha256(quetz, channel_name, "noarch", TZDATA) == hashlib.sha256(impostor).hexdigest()
    index = await server_index(quetz, channel_name, "noarch")
    for filename in names(docs["noarch"]) - {TZDATA}:
        assert index["packages.conda"][filename]["sha256"] == docs["noarch"]["packages.conda"][filename]["sha256"]


@pytest.mark.parametrize("channel_exists", [False, True], ids=["new-channel", "existing-channel"])
async def test_a_wrong_api_key_is_one_line_and_never_shown(
    tmp_path: Path,
    quetz: QuetzServer,
    channel_name: str,
    channel_exists: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "wrong-key-" + os.urandom(8).hex()
    monkeypatch.setenv("QUETZ_API_KEY", wrong)
    if channel_exists:
        await create_channel(quetz, channel_name)
    build_channel(tmp_path / "upstream", NOARCH)
    caplog.set_level(logging.DEBUG)
    async with ChannelServer(tmp_path / "upstream") as upstream:
        config = quetz_config(tmp_path, quetz, channel_name, channels=[upstream.url])
        with pytest.raises(UploadRefused) as refused:
            await mirror_to_quetz(config)
        assert not upstream.fetched(".conda")  # refused before any download
    message = str(refused.value)
    assert message.startswith(quetz.url) and "API key" in message and "destination.api_key" in message
    assert "\n" not in message and wrong not in message and wrong not in caplog.text
    assert not quetz.requests("POST", f"/{channel_name}/upload/")
    if not channel_exists:
        assert (await http("GET", f"{quetz.url}/api/channels/{channel_name}"))[0] == 404


def test_a_wrong_api_key_fails_the_command_with_one_line(tmp_path: Path, quetz: QuetzServer) -> None:
    build_channel(tmp_path / "upstream", NOARCH)
    (tmp_path / "c.yaml").write_text(
        f"channels: [upstream]\ndest_channel: cli-wrong-key\nretries: 0\n"
        f"destination:\n  kind: quetz\n  url: {quetz.url}\n  api_key: ${{QUETZ_API_KEY}}\n"
    )
    wrong = "wrong-key-" + os.urandom(8).hex()
    env = {**os.environ, "PYTHONPATH": str(REPO), "QUETZ_API_KEY": wrong}
    result = subprocess.run(
        [sys.executable, "-m", "mirror_engine", "run", "c.yaml", "-v"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if line.startswith("mirror-engine: error:")]
    assert quetz.url in error and "API key" in error
    assert wrong not in result.stdout + result.stderr  # -v: the debug log too, traceback included


async def test_publishing_waits_for_quetz_to_list_the_uploads_and_names_what_it_lacks(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    build_channel(tmp_path / "upstream", NOARCH)
    config = quetz_config(tmp_path, quetz, channel_name, channels=["upstream"])
    assert config.destination is not None
    destination = QuetzDestination(config.destination, config, tmp_path / "staging", index_wait=1.0)
    tzdata = tmp_path / "upstream" / "noarch" / TZDATA
    sha256 = hashlib.sha256(tzdata.read_bytes()).hexdigest()
    conda: dict[str, dict[str, str]] = {TZDATA: {"sha256": sha256}}
    ours = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": conda}
    try:
        await destination.open()
        await destination.upload_file(tzdata, "noarch", TZDATA)
        # quetz indexes in the background: right after the upload its index may not list the file yet
        await destination.write_index("noarch", "repodata.json", json.dumps(ours).encode())
        assert TZDATA in names(await server_index(quetz, channel_name, "noarch"))
        assert await destination.stat("noarch", TZDATA) == FileStat(tzdata.stat().st_size, 0)
        ghosts = {f"ghost-{n}-0.conda": {"sha256": "0" * 64} for n in range(5)}
        conda |= ghosts
        with pytest.raises(DestinationError) as lacking:
            await destination.write_index("noarch", "repodata.json", json.dumps(ours).encode())
    finally:
        await destination.close()
    assert "lacks 5 uploaded file(s) (ghost-0-0.conda, ghost-1-0.conda, ghost-2-0.conda, and 2 more)" in str(
        lacking.value
    )
    assert str(lacking.value).startswith(f"{quetz.url}/get/{channel_name}/noarch/repodata.json: ")


@dataclass
class FaultyProxy:
    """Forwards to quetz; `faults[path]` spoils one request each: "503" answers itself, "corrupt" flips a
    byte of the body on the way, so quetz itself refuses it (406)."""

    target: str
    faults: dict[str, list[str]] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # serve https:// with this context
    server: TestServer | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path))
        pending = self.faults.get(request.path)
        fault = pending.pop(0) if pending else None
        if fault == "503":
            return web.Response(status=503)
        if fault == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 1])
        headers = {name: value for name, value in request.headers.items() if name in ("X-API-Key", "Content-Type")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.target + request.path_qs, data=body, headers=headers, allow_redirects=False
            ) as answer,
        ):
            return web.Response(status=answer.status, body=await answer.read(), content_type=answer.content_type)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def __aenter__(self) -> FaultyProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server(ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.close()


async def test_refused_hashes_and_server_errors_are_retried_then_reported_per_file(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    docs = build_channel(tmp_path / "upstream", NOARCH)
    urllib3 = "urllib3-2.2.2-pyhd8ed1ab_1.conda"
    async with ChannelServer(tmp_path / "upstream") as upstream, FaultyProxy(quetz.url) as proxy:
        proxy.faults[f"/api/channels/{channel_name}/upload/{TZDATA}"] = ["corrupt", "503"]
        proxy.faults[f"/api/channels/{channel_name}/upload/{urllib3}"] = ["503"] * 10
        config = quetz_config(
            tmp_path, quetz, channel_name, channels=[upstream.url], retries=2, destination={"url": proxy.url}
        )
        summary = await mirror_to_quetz(config)
    assert [what for what, _ in summary.failures] == [f"noarch/{urllib3}"]
    assert "HTTP 503" in summary.failures[0][1]
    assert proxy.seen.count(("POST", f"/api/channels/{channel_name}/upload/{TZDATA}")) == 3
    assert proxy.seen.count(("POST", f"/api/channels/{channel_name}/upload/{urllib3}")) == 3
    assert [line for line in quetz.requests("POST", f"/upload/{TZDATA}") if " 406" in line]
    sha256 = docs["noarch"]["packages.conda"][TZDATA]["sha256"]
    assert await served_sha256(quetz, channel_name, "noarch", TZDATA) == sha256
    assert names(await server_index(quetz, channel_name, "noarch")) == names(docs["noarch"]) - {urllib3}


async def test_a_quetz_behind_a_private_ca_needs_ssl_verify_to_name_it(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    docs = build_channel(tmp_path / "upstream", NOARCH)
    ca = trustme.CA()
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    async with ChannelServer(tmp_path / "upstream") as upstream, FaultyProxy(quetz.url, tls=tls) as front:
        assert front.url.startswith("https://127.0.0.1:")

        def config(run: str, **destination: object) -> MirrorConfig:
            keys = {"url": front.url, **destination}
            return quetz_config(tmp_path / run, quetz, channel_name, channels=[upstream.url], destination=keys)

        with pytest.raises(DestinationError) as untrusted:
            await mirror_to_quetz(config("system-cas"))
        trusted = await mirror_to_quetz(config("private-ca", ssl_verify=str(bundle)))
        unchecked = await mirror_to_quetz(config("unchecked", ssl_verify=False))
    message = str(untrusted.value)
    assert "TLS certificate of 127.0.0.1 is not trusted" in message and "destination.ssl_verify" in message
    assert trusted.exit_code == 0 and unchecked.exit_code == 0, (trusted.failures, unchecked.failures)
    assert "the server's TLS certificate is not checked" in caplog.text
    sha256 = docs["noarch"]["packages.conda"][TZDATA]["sha256"]
    assert await served_sha256(quetz, channel_name, "noarch", TZDATA) == sha256


async def test_deselected_packages_are_deleted_from_the_channel(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    build_channel(tmp_path / "upstream", NOARCH)
    async with ChannelServer(tmp_path / "upstream") as upstream:
        config = quetz_config(tmp_path, quetz, channel_name, channels=[upstream.url])
        assert (await mirror_to_quetz(config)).exit_code == 0
        summary = await mirror_to_quetz(config.model_copy(update={"blacklist": ("tzdata",)}))
    assert summary.exit_code == 0, summary.failures
    assert summary.deleted == {"noarch": 1}
    assert await served_sha256(quetz, channel_name, "noarch", TZDATA) is None
    destination = make_destination(config)
    try:
        assert TZDATA not in await destination.listing("noarch")  # quetz re-indexes in the background
    finally:
        await destination.close()


async def test_a_dry_run_plans_against_quetz_and_creates_nothing(
    tmp_path: Path, quetz: QuetzServer, api_key: str, channel_name: str
) -> None:
    build_channel(tmp_path / "upstream", NOARCH)
    async with ChannelServer(tmp_path / "upstream") as upstream:
        config = quetz_config(tmp_path, quetz, channel_name, channels=[upstream.url])
        assert isinstance(make_destination(config), QuetzDestination)
        run = MirrorRun(config, make_destination(config), NullReporter())
        summary = await run.run(dry_run=True)
    assert sum(row.to_fetch for row in summary.rows.values()) == len(NOARCH)
    assert (await http("GET", f"{quetz.url}/api/channels/{channel_name}"))[0] == 404
