"""nginx on 127.0.0.1 serving a folder, as a real upstream for the benchmarks (sendfile, keepalive)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CONF = """
daemon off;
worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path {state}/body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    types {{ application/json json; application/octet-stream conda bz2 zst; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def nginx(root: Path, state: Path) -> Iterator[str]:
    """Serve `root` until the block ends; yields the base URL. Needs Debian's nginx (`make bench` installs it)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = state / "nginx.conf"
    conf.write_text(CONF.format(state=state, port=port, root=root.resolve()))
    process = subprocess.Popen([binary, "-p", str(state), "-c", str(conf), "-e", str(state / "error.log")])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"nginx did not start: {(state / 'error.log').read_text()}") from None
                time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(10)
