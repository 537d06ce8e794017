"""The one aiohttp ClientSession of a run: connection limits, timeouts, proxies from the environment."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import aiohttp

from mirror_engine import __version__
from mirror_engine.config import MirrorConfig

USER_AGENT = f"mirror_engine/{__version__} (+conda channel mirror)"


def open_session(config: MirrorConfig) -> aiohttp.ClientSession:
    """A session sized for the worker pool; `total=None` because a big package may take longer than any fixed cap."""
    connector = aiohttp.TCPConnector(
        limit=config.concurrency + 8,  # + room for repodata fetches beside the workers
        limit_per_host=config.concurrency + 8,
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        trust_env=True,  # HTTP(S)_PROXY and NO_PROXY, as operators behind proxies expect
        headers={"User-Agent": USER_AGENT},
    )


def redact(url: str) -> str:
    """A URL fit for logs and messages: user and password removed."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def describe_error(exc: BaseException) -> str:
    """One short line for an aiohttp or timeout error, without aiohttp's internals."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error) if exc.os_error else "failed"
        return f"cannot connect to {exc.host}:{exc.port}: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
