"""A real HTTP PUT store for the tests: Debian's nginx with the DAV module on 127.0.0.1, basic auth, TLS on demand."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.helpers import free_port

USER, PASSWORD = "mirror", "s3cret-Dav-pw"
NGINX = "/usr/sbin/nginx"

CONF = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format ops '$request_method $uri $status';
    access_log {state}/access.log ops;
    default_type application/octet-stream;
    client_body_temp_path {state}/body;  # beside the root: the rename into place stays atomic
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {certificate}
        root {root};
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size {max_body};
            auth_basic "mirror";
            auth_basic_user_file {state}/htpasswd;
        }}
    }}
}}
"""


@dataclass(frozen=True)
class DavServer:
    """A running nginx: `url` is its base (no trailing slash), `root` the folder PUTs land in."""

    url: str
    root: Path
    state: Path

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request answered so far, in the order nginx finished them."""
        log = self.state / "access.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [(method, path, int(status)) for method, path, status in (line.split(" ") for line in lines)]

    def puts(self) -> list[str]:
        return [path for method, path, status in self.requests() if method == "PUT" and status < 300]


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or (NGINX if os.access(NGINX, os.X_OK) else None)
    return found


@contextmanager
def nginx_dav(
    base: Path, *, tls: trustme.CA | None = None, max_body: str = "0", root: Path | None = None
) -> Iterator[DavServer]:
    """Run nginx serving (and accepting PUT/DELETE into) `root` (default `base/root`) until the block ends."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed")
    state = base / f"nginx-{time.monotonic_ns()}"
    state.mkdir(parents=True)
    root = root or base / "root"
    root.mkdir(parents=True, exist_ok=True)
    (state / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    certificate = ""
    if tls is not None:
        cert = tls.issue_cert("127.0.0.1", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(state / "server.pem"))
        certificate = f"ssl_certificate {state}/server.pem; ssl_certificate_key {state}/server.pem;"
    port = free_port()
    conf = state / "nginx.conf"
    conf.write_text(
        CONF.format(
            # as root, nginx's workers would drop to `nobody`, who cannot enter pytest's private tmp folder
            user="user root;" if os.geteuid() == 0 else "",
            state=state,
            port=port,
            ssl=" ssl" if tls is not None else "",
            certificate=certificate,
            root=root.resolve(),
            max_body=max_body,
        )
    )
    process = subprocess.Popen(
        [binary, "-p", str(state), "-c", str(conf), "-e", str(state / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, process, state)
        scheme = "https" if tls is not None else "http"
        yield DavServer(f"{scheme}://127.0.0.1:{port}", root, state)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], state: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                log = state / "error.log"
                raise RuntimeError(f"nginx did not start: {log.read_text() if log.exists() else ''}") from None
            time.sleep(0.02)
