"""The network keys as a user sets them, through the CLI: a client certificate for an upstream that requires
one, an https upstream through a CONNECT proxy, and a destination's `credentials_file`."""

from __future__ import annotations

import re
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

from mirror_engine.config import MirrorConfig, load_config, parse_config
from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from tests.channel_server import ChannelServer
from tests.e2e.conftest import cli, wait_for
from tests.helpers import PROXY_PASSWORD, PROXY_USER, assert_index_sound, names, proxy_py, published

# Above transfer.DIRECT_MIN_BYTES (4 MiB): read off the socket by direct.py, whose connections must carry the
# client certificate too, not only aiohttp's.
BIG = DemoPackage("big", "1.0", "0", subdir="noarch", payload_size=5_000_000)


@pytest.fixture(autouse=True)
def no_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The children inherit os.environ: a proxy or NO_PROXY of the machine's must not decide these tests."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def ca(tmp_path: Path) -> trustme.CA:
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return authority


def server_tls(ca: trustme.CA, *, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_cert:
        context.verify_mode = ssl.CERT_REQUIRED  # no certificate signed by our CA: no handshake
        ca.configure_trust(context)
        # Under TLS 1.3 the server refuses a missing certificate only after the client's handshake is done, and
        # direct.py, seeing the connection close before a response, hands the request to aiohttp: a direct path
        # without the certificate would go unseen. Under 1.2 the handshake itself fails, on either path.
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def config_at(tmp_path: Path, name: str) -> MirrorConfig:
    return load_config(tmp_path / name)


async def test_a_client_certificate_is_refused_without_it_and_accepted_with_it(tmp_path: Path, ca: trustme.CA) -> None:
    docs = build_channel(tmp_path / "pkgs", [*DEMO_PACKAGES, BIG])
    client = ca.issue_cert("mirror-client.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client-and-key.pem"))
    async with ChannelServer(tmp_path / "pkgs", tls=server_tls(ca, client_cert=True)) as server:
        # two processes: the downloads happen in the workers, which must load the certificate as well
        common = f"channels: [{server.url}]\nplatforms: noarch\nretries: 0\nssl_verify: ca.pem\nprocesses: 2\n"
        (tmp_path / "none.yaml").write_text(f"{common}mirror_dir: none\n")
        (tmp_path / "pair.yaml").write_text(
            f"{common}mirror_dir: pair\nclient_ssl_cert: client.pem\nclient_ssl_cert_key: client.key\n"
        )
        (tmp_path / "one.yaml").write_text(f"{common}mirror_dir: one\nclient_ssl_cert: client-and-key.pem\n")
        refused = await cli("run", "none.yaml", "-q", cwd=tmp_path)
        assert server.requests == []  # no request got past the handshake
        pair = await cli("run", "pair.yaml", "-q", cwd=tmp_path)
        one = await cli("run", "one.yaml", "-q", cwd=tmp_path)
        assert server.fetched(BIG.filename(".conda")) == [f"/noarch/{BIG.filename('.conda')}"] * 2
        index = f"{server.url}noarch/repodata.json.zst"
    assert refused.code == 1, refused.stdout
    (why,) = [line for line in refused.stdout.splitlines() if line.startswith("  noarch (not published): ")]
    # the server's refusal may reach us as a reset with no text of its own: the line still says what happened
    assert re.fullmatch(
        rf"  noarch \(not published\): {re.escape(index)}: cannot connect to 127\.0\.0\.1:\d+: \w.*", why
    )
    assert not list((tmp_path / "none").rglob("*.conda"))
    assert names(published(config_at(tmp_path, "none.yaml"), "noarch")) == set()  # conda's empty noarch, no 404
    for ran, name in ((pair, "pair.yaml"), (one, "one.yaml")):
        assert ran.code == 0, ran.stdout + ran.stderr
        doc = assert_index_sound(config_at(tmp_path, name), "noarch", docs["noarch"])
        assert names(doc) == names(docs["noarch"])


@pytest.fixture
def connect_proxy(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """proxy.py on 127.0.0.1, asking for basic auth; yields its port and its log file."""
    with proxy_py(tmp_path / "proxy.log") as port:
        yield port, tmp_path / "proxy.log"


def tunnels(log: Path) -> list[tuple[str, int]]:
    """(target, bytes) of each CONNECT tunnel proxy.py logged; it logs one when the tunnel closes."""
    text = log.read_text() if log.exists() else ""
    return [(target, int(sent)) for target, sent in re.findall(r" - CONNECT (\S+) - (\d+) bytes", text)]


async def test_an_https_upstream_is_reached_through_a_connect_proxy(
    tmp_path: Path, ca: trustme.CA, connect_proxy: tuple[int, Path]
) -> None:
    port, log = connect_proxy
    docs = build_channel(tmp_path / "pkgs", [*DEMO_PACKAGES, BIG])
    async with ChannelServer(tmp_path / "pkgs", tls=server_tls(ca)) as server:
        upstream = server.url.removeprefix("https://").rstrip("/")
        for name, password in (("wrong", "not-it"), ("right", PROXY_PASSWORD)):
            (tmp_path / f"{name}.yaml").write_text(
                f"channels: [{server.url}]\nplatforms: noarch\nretries: 0\nssl_verify: ca.pem\nprocesses: 2\n"
                f"mirror_dir: {name}\nproxy_servers:\n  https: http://{PROXY_USER}:{password}@127.0.0.1:{port}\n"
            )
        wrong = await cli("run", "wrong.yaml", "-q", cwd=tmp_path)
        assert server.requests == []  # the proxy refused the tunnel: nothing went round it
        right = await cli("run", "right.yaml", "-q", cwd=tmp_path)
    assert wrong.code == 1 and "407" in wrong.stdout
    assert right.code == 0, right.stdout + right.stderr
    assert names(assert_index_sound(config_at(tmp_path, "right.yaml"), "noarch", docs["noarch"])) == names(
        docs["noarch"]
    )
    packages = sum(record["size"] for record in docs["noarch"]["packages.conda"].values())
    await wait_for(lambda: sum(sent for target, sent in tunnels(log) if target == upstream) >= packages)
    assert {target for target, _ in tunnels(log)} <= {upstream, "None:None"}  # None:None: the refused one
    for ran in (wrong, right):
        assert PROXY_PASSWORD not in ran.stdout + ran.stderr and "not-it" not in ran.stdout + ran.stderr


@dataclass
class AuthStore:
    """An HTTP PUT store that answers 401 to any request without the one Authorization header it accepts."""

    root: Path
    accepts: str
    refused: list[tuple[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.accepts:
            self.refused.append((request.method, request.path))
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="store"'})
        path = (self.root / request.path.lstrip("/")).resolve()
        assert path.is_relative_to(self.root.resolve())
        if request.method == "PUT":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(await request.read())
            return web.Response(status=201)
        if request.method == "DELETE":
            path.unlink(missing_ok=True)
            return web.Response(status=204)
        if not path.is_file():
            return web.Response(status=404)
        return web.Response(body=path.read_bytes())  # HEAD: the same headers, no body


def held(root: Path, config_dir: Path) -> MirrorConfig:
    """A config whose channel folder is what the store holds, for the index checks."""
    return parse_config({"channels": ["pkgs"], "mirror_dir": str(root)}, config_dir / "held.yaml")


async def test_credentials_file_supplies_the_destination_login(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    store = AuthStore(tmp_path / "store-basic", aiohttp.encode_basic_auth("uploader", "fr0m-the-file"))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", store.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/")).rstrip("/")

        async def run(name: str, credentials: dict[str, Any] | None) -> tuple[int, str]:
            line = ""
            if credentials is not None:
                (tmp_path / f"{name}.creds.yaml").write_text("".join(f"{k}: {v}\n" for k, v in credentials.items()))
                line = f"  credentials_file: {name}.creds.yaml\n"
            (tmp_path / f"{name}.yaml").write_text(
                f"channels: [pkgs]\nplatforms: noarch\nretries: 0\nmirror_dir: {name}\n"
                f"destination:\n  kind: http\n  url: {url}\n{line}"
            )
            ran = await cli("run", f"{name}.yaml", "-q", cwd=tmp_path)
            for secret in ("fr0m-the-file", "t0ken-in-file"):
                assert secret not in ran.stdout + ran.stderr
            return ran.code, ran.stderr

        code, stderr = await run("anonymous", None)
        assert code == 1
        assert stderr.strip().splitlines()[-1] == (
            f"mirror-engine: error: {url}/anaconda/noarch/repodata.json: HTTP 401 Unauthorized: "
            "check destination.username and destination.password (or destination.token)"
        )
        assert not store.root.exists()  # nothing was stored

        code, stderr = await run("basic", {"username": "uploader", "password": "fr0m-the-file"})
        assert code == 0, stderr
        doc = assert_index_sound(held(store.root, tmp_path), "noarch", docs["noarch"])
        assert names(doc) == names(docs["noarch"])

        store.root, store.accepts = tmp_path / "store-token", "Bearer t0ken-in-file"
        refused_before = len(store.refused)
        code, stderr = await run("token", {"token": "t0ken-in-file"})
        assert code == 0, stderr
        assert len(store.refused) == refused_before
        assert names(assert_index_sound(held(store.root, tmp_path), "noarch", docs["noarch"])) == names(docs["noarch"])
    finally:
        await server.close()

    (tmp_path / "missing.yaml").write_text(
        "channels: [pkgs]\ndestination:\n  kind: http\n  url: http://127.0.0.1:9/\n  credentials_file: gone.yaml\n"
    )
    missing = await cli("run", "missing.yaml", cwd=tmp_path)
    assert missing.code == 2
    assert missing.stderr.strip().splitlines() == [
        f"mirror-engine: error: missing.yaml: destination: credentials_file: {tmp_path}/gone.yaml: cannot read: "
        "No such file or directory"
    ]
