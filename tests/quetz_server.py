"""A real quetz server for the tests: a deployment in a temp folder, an owner with an API key, on 127.0.0.1.

quetz-server 0.10.4 lives in its own venv (`make quetz`: build/quetz-venv, or $QUETZ_VENV), as it needs an
older FastAPI than anything else here. Every quetz command runs with its cwd in the temp folder, since
quetz writes quetz.log to its cwd.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
OWNER = "mirror-owner"
START_TIMEOUT = 60.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a developer's HTTP_PROXY must not matter

CONFIG_TOML = """\
[sqlalchemy]
database_url = "sqlite:///./quetz.sqlite"

[session]
secret = "{secret}"
https_only = false

[logging]
level = "INFO"
"""

# Run by the quetz venv's python in the deployment folder: an owner user and an API key with the owner's rights.
SEED = """\
import os, sys
from quetz import rest_models
from quetz.config import Config
from quetz.dao import Dao
from quetz.database import get_session

config = Config("config.toml")
db = get_session(config.sqlalchemy_database_url)
dao = Dao(db)
user = dao.create_user_with_role(sys.argv[1], role="owner")
dao.create_api_key(user.id, rest_models.BaseApiKey(description="mirror_engine tests", roles=None),
                   os.environ["SEED_API_KEY"])
db.commit()
"""


@dataclass(frozen=True)
class QuetzServer:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    api_key: str  # an owner's key
    deployment: Path
    log: Path  # the server's stdout and stderr: uvicorn's access log lists every request

    def access_log(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def requests(self, method: str, path_part: str) -> list[str]:
        """Access-log lines of `method` requests whose path contains `path_part`."""
        return [line for line in self.access_log() if f'"{method} ' in line and path_part in line]


def quetz_venv() -> Path | None:
    """The venv `make quetz` makes (or $QUETZ_VENV); None when it is not there."""
    venv = Path(os.environ.get("QUETZ_VENV") or REPO / "build" / "quetz-venv")
    return venv if (venv / "bin" / "quetz").is_file() else None


@contextlib.contextmanager
def running_quetz(venv: Path, workdir: Path) -> Iterator[QuetzServer]:
    """Create a deployment under `workdir`, seed the owner and key, start quetz, stop it by its pid."""
    deployment = workdir / "deployment"
    deployment.mkdir(parents=True)
    (deployment / "config.toml").write_text(CONFIG_TOML.format(secret=secrets.token_hex(16)))
    env = {**os.environ, "QUETZ_CONFIG_FILE": str(deployment / "config.toml")}
    env.pop("QUETZ_API_KEY", None)
    quetz = str(venv / "bin" / "quetz")
    _run([quetz, "create", str(deployment)], cwd=workdir, env=env)
    api_key = secrets.token_hex(16)
    _run([str(venv / "bin" / "python"), "-c", SEED, OWNER], cwd=deployment, env={**env, "SEED_API_KEY": api_key})
    port = free_port()
    log = workdir / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [quetz, "start", str(deployment), "--host", "127.0.0.1", "--port", str(port), "--no-supervisor"],
            cwd=workdir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(server, f"{url}/health/ready", log)
        yield QuetzServer(url, api_key, deployment, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _run(command: list[str], *, cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:2])} failed ({result.returncode}): {result.stderr[-2000:]}")


def _wait_ready(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"quetz exited with {server.returncode} at start: {log.read_text()[-2000:]}")
        try:
            with _NO_PROXY.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"quetz not ready after {START_TIMEOUT:g}s: {log.read_text()[-2000:]}")
