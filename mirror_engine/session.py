"""The one HTTP session of a run: connection limits, timeouts, TLS (`ssl_verify`), proxies; aiohttp's
exceptions become ours here, in `client_error`, and nowhere else."""

from __future__ import annotations

import logging
import netrc
import os
import re
import ssl
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from mirror_engine import __version__
from mirror_engine.direct import DirectPool
from mirror_engine.errors import (
    ConfigError,
    ConnectionFailed,
    HttpStatusError,
    MirrorError,
    ShortBody,
    TlsError,
    os_reason,
)

if TYPE_CHECKING:  # config imports redact() from here
    from mirror_engine.config import MirrorConfig

log = logging.getLogger(__name__)
_TOKEN = re.compile(r"/t/[^/]+/")
USER_AGENT = f"mirror_engine/{__version__} (+conda channel mirror)"


class Http:
    """The run's aiohttp session with conda's `ssl_verify` and `proxy_servers` applied to every request."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tls: ssl.SSLContext | bool,
        proxies: dict[str, str],
        logins: netrc.netrc | None = None,
        direct: DirectPool | None = None,
    ) -> None:
        self.session = session
        self.direct = direct  # big bodies read off the socket without aiohttp (direct.py); None: never
        self._tls = tls
        self._proxies = proxies
        self._no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy")
        self._logins = logins

    def get(self, url: str, **options: Any) -> Any:
        return self.session.get(url, ssl=self._tls, **self._proxy(url, self._login(url, options)))

    def head(self, url: str, **options: Any) -> Any:
        return self.session.head(url, ssl=self._tls, **self._proxy(url, self._login(url, options)))

    def direct_headers(self, url: str) -> dict[str, str] | None:
        """The headers `get` would send for `url`, for a request made without aiohttp; None when only aiohttp
        may make it: no direct pool, a proxy applies, or the URL carries credentials (aiohttp's basic auth)."""
        parts = urlsplit(url)
        if self.direct is None or parts.scheme not in ("http", "https") or parts.username is not None:
            return None
        if "proxy" in self._proxy(url, {}):
            return None
        options = self._login(url, {"headers": {"Accept-Encoding": "identity"}})
        return {"User-Agent": USER_AGENT, "Accept": "*/*", **options["headers"]}

    def _login(self, url: str, options: dict[str, Any]) -> dict[str, Any]:
        """~/.netrc credentials for the host, as conda (through requests) sends them."""
        if self._logins is None or "Authorization" in options.get("headers", {}):
            return options
        host = urlsplit(url).hostname or ""
        found = self._logins.authenticators(host)
        if found is None or urlsplit(url).username is not None:
            return options
        login, _, password = found
        header = {"Authorization": aiohttp.encode_basic_auth(login or "", password or "")}
        return {**options, "headers": {**options.get("headers", {}), **header}}

    def _proxy(self, url: str, options: dict[str, Any]) -> dict[str, Any]:
        """The request's options with the proxy for its scheme, unless NO_PROXY names the host."""
        parts = urlsplit(url)
        proxy = self._proxies.get(parts.scheme)
        if proxy is None or bypasses_proxy(parts.hostname or "", self._no_proxy):
            return options
        proxy_parts = urlsplit(proxy)
        if proxy_parts.username is None:
            return {**options, "proxy": proxy}
        user, password = unquote(proxy_parts.username), unquote(proxy_parts.password or "")
        auth = {"Proxy-Authorization": aiohttp.encode_basic_auth(user, password)}
        if parts.scheme == "https":  # the credentials go to the proxy in the CONNECT, never to the server
            return {**options, "proxy": redact(proxy), "proxy_headers": auth}
        return {**options, "proxy": redact(proxy), "headers": {**options.get("headers", {}), **auth}}

    async def __aenter__(self) -> Http:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.direct is not None:
            self.direct.close()
        await self.session.close()


def bypasses_proxy(host: str, no_proxy: str | None) -> bool:
    """NO_PROXY as curl and aiohttp read it: `*`, host names, and domain suffixes (`.corp` or `corp`)."""
    for entry in (no_proxy or "").replace(" ", "").split(","):
        if entry == "*":
            return True
        entry = entry.lstrip(".").lower()
        if entry and (host.lower() == entry or host.lower().endswith("." + entry)):
            return True
    return False


def open_session(config: MirrorConfig) -> Http:
    """A session sized for the worker pool; `total=None` because a big package may take longer than any fixed cap."""
    connector = aiohttp.TCPConnector(
        limit=config.concurrency + 8,  # + room for repodata fetches beside the workers
        limit_per_host=config.concurrency + 8,
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout)
    # The environment is read once here: aiohttp's trust_env would read it, and ~/.netrc, per request.
    session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT})
    tls = tls_context(config)
    direct = DirectPool(tls, config.connect_timeout, config.read_timeout, keep=config.concurrency + 8)
    return Http(session, tls, environment_proxies() | dict(config.proxy_servers), _netrc(), direct)


def environment_proxies() -> dict[str, str]:
    """HTTP_PROXY and HTTPS_PROXY (either case) by scheme, as operators behind proxies expect."""
    found = urllib.request.getproxies_environment()
    return {scheme: url for scheme, url in found.items() if scheme in ("http", "https")}


def _netrc() -> netrc.netrc | None:
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        return netrc.netrc(path) if os.path.isfile(path) else None
    except (netrc.NetrcParseError, OSError) as exc:
        log.warning("%s: not read: %s", path, exc)
        return None


def tls_context(config: MirrorConfig) -> ssl.SSLContext | bool:
    """`ssl_verify`: true checks upstream against the system's CAs, a path against that bundle only."""
    if config.ssl_verify is False:
        log.warning("ssl_verify: false: upstream TLS certificates are not checked")
        return False
    cafile = str(config.ssl_verify) if not isinstance(config.ssl_verify, bool) else None
    try:
        context = ssl.create_default_context(cafile=cafile)
        if config.client_ssl_cert is not None:
            key = str(config.client_ssl_cert_key) if config.client_ssl_cert_key else None
            context.load_cert_chain(str(config.client_ssl_cert), key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError("config", "ssl_verify" if cafile else "client_ssl_cert", f"cannot load: {exc}") from None
    return context


def client_error(url: str, exc: BaseException) -> MirrorError:
    """The one-line error of ours for an aiohttp or timeout error while fetching `url` (already redacted)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        host = exc.host
        return TlsError(
            f"{url}: the TLS certificate of {host} is not trusted ({exc.certificate_error}); set ssl_verify to "
            "the CA bundle that signed it, or ssl_verify: false"
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ShortBody(f"{url}: body cut short ({describe_error(exc)})")
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # also a TimeoutError: tell it apart from a stall
        return ConnectionFailed(f"{url}: no connection within connect_timeout")
    if isinstance(exc, TimeoutError):
        return ConnectionFailed(f"{url}: stalled, no data within read_timeout")
    if isinstance(exc, aiohttp.TooManyRedirects):
        return HttpStatusError(url, 310, "too many redirects")
    return ConnectionFailed(f"{url}: {describe_error(exc)}")


def redact(url: str) -> str:
    """A URL fit for logs and messages: user, password and anaconda.org-style `/t/<token>/` removed."""
    parts = urlsplit(url)
    path = _TOKEN.sub("/t/<token>/", parts.path)
    if parts.username is None and parts.password is None and path == parts.path:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, path, parts.query, parts.fragment))


def describe_error(exc: BaseException) -> str:
    """One short line for an aiohttp or timeout error, without aiohttp's internals."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = os_reason(exc.os_error) if exc.os_error else "failed"
        return f"cannot connect to {exc.host}:{exc.port}: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
