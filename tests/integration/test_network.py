"""Upstream TLS with a private CA (`ssl_verify`) and a real forward proxy (`proxy_servers`, NO_PROXY)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from mirror_engine.config import MirrorConfig
from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer
from tests.helpers import PROXY_PASSWORD, PROXY_USER, assert_index_sound, make_config, mirror, proxy_py


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_a_private_ca_is_refused_until_ssl_verify_names_it(
    tmp_path: Path, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    docs = build_channel(tmp_path / "pkgs")
    bundle = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with ChannelServer(tmp_path / "pkgs", tls=server_tls(ca)) as server:
        assert server.url.startswith("https://127.0.0.1:")
        refused = await mirror(make_config(tmp_path, channels=[server.url], platforms=["noarch"], retries=3))
        retries_logged = caplog.text.count("retrying in")
        requests_through = list(server.requests)
        trusted = make_config(tmp_path, channels=[server.url], platforms=["noarch"], ssl_verify=str(bundle))
        accepted = await mirror(trusted)
        unchecked = await mirror(
            make_config(tmp_path / "x", channels=[server.url], platforms=["noarch"], ssl_verify=False)
        )
    assert refused.exit_code == 1
    _, why = refused.failures[0]
    assert "the TLS certificate of 127.0.0.1 is not trusted" in why and "set ssl_verify to" in why
    # Refused at the handshake, so no request reached the server, and not retried: retries: 3 is for
    # faults that may pass, and an untrusted certificate will not.
    assert requests_through == [] and retries_logged == 0
    assert accepted.exit_code == 0, accepted.failures
    assert_index_sound(trusted, "noarch", docs["noarch"])
    assert unchecked.exit_code == 0
    assert "ssl_verify: false: upstream TLS certificates are not checked" in caplog.text


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """proxy.py on 127.0.0.1 with basic auth; yields its URL with credentials and its log file."""
    with proxy_py(tmp_path / "proxy.log") as port:
        yield f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}", tmp_path / "proxy.log"


def proxied(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "access_log" in line] if log.exists() else []


async def test_traffic_goes_through_the_proxy_unless_no_proxy_names_the_host(
    tmp_path: Path, forward_proxy: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proxy_url, log = forward_proxy
    wrong_password = proxy_url.replace(PROXY_PASSWORD, "wrong")
    docs = build_channel(tmp_path / "pkgs")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ChannelServer(tmp_path / "pkgs") as server:
        port = server.url.rstrip("/").rsplit(":", 1)[1]

        def config(where: str, proxy: str) -> MirrorConfig:
            return make_config(
                tmp_path / where, channels=[server.url], platforms=["noarch"], proxy_servers={"http": proxy}
            )

        through = config("a", proxy_url)
        summary = await mirror(through)
        assert summary.exit_code == 0, summary.failures
        assert_index_sound(through, "noarch", docs["noarch"])
        # proxy.py logs a connection when it ends; the refused password proves every request is proxied
        refused = await mirror(config("b", wrong_password))
        assert refused.exit_code == 1 and "HTTP 407" in refused.failures[0][1]
        await asyncio.sleep(0.5)
        assert any(f"127.0.0.1:{port}/" in line for line in proxied(log))
        seen = proxied(log)

        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        bypassed = await mirror(config("c", wrong_password))  # the proxy would refuse it: it is not asked
        assert bypassed.exit_code == 0, bypassed.failures
        await asyncio.sleep(0.5)
        assert proxied(log) == seen
    for text in (caplog.text, str(summary.failures), str(refused.failures)):
        assert PROXY_PASSWORD not in text and "wrong@" not in text


async def test_http_proxy_from_the_environment_is_used_read_once_per_run(
    tmp_path: Path, forward_proxy: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_url, log = forward_proxy
    docs = build_channel(tmp_path / "pkgs")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ChannelServer(tmp_path / "pkgs") as server:
        monkeypatch.setenv("HTTP_PROXY", proxy_url.replace(PROXY_PASSWORD, "wrong"))
        refused = await mirror(make_config(tmp_path / "a", channels=[server.url], platforms=["noarch"]))
        assert refused.exit_code == 1 and "HTTP 407" in refused.failures[0][1]

        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        config = make_config(tmp_path / "b", channels=[server.url], platforms=["noarch"], processes=2)
        summary = await mirror(config)  # the worker processes inherit the environment's proxy too
        assert summary.exit_code == 0, summary.failures
        assert_index_sound(config, "noarch", docs["noarch"])
        await asyncio.sleep(0.5)
        host = server.url.split("//")[1]
        fetched = {
            line.split(f"GET {host}noarch/")[1].split()[0] for line in proxied(log) if f"GET {host}noarch/" in line
        }
        assert set(docs["noarch"]["packages.conda"]) <= fetched  # downloaded by the workers, through the proxy
