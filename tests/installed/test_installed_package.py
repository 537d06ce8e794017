"""The package as a user installs it: the wheel `make installed` builds, in a venv of its own without the dev
extras, driven through its `mirror-engine` console script, from a folder outside the repository."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.s3_server import S3Server, seaweedfs, unique_prefix

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MIRROR_ENGINE_INSTALLED_VENV") or REPO / "build" / "installed-venv")
SCRIPT = VENV / "bin" / "mirror-engine"


@pytest.fixture(scope="module")
def installed() -> Path:
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} is not there: `make installed` builds the wheel and installs it")
    return SCRIPT


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory, installed: Path) -> Path:
    """The demo channel, built by the installed package's own demo module, as `make demo` does."""
    root = tmp_path_factory.mktemp("upstream") / "demo-channel"
    cli(VENV / "bin" / "python", "-m", "mirror_engine.demo", str(root), cwd=root.parent)
    return root


def cli(*args: str | Path, cwd: Path, expect: int = 0, env: dict[str, str] | None = None) -> str:
    """Run a command of the installed venv; its output, after checking its exit status."""
    # No PYTHONPATH: the repository's own mirror_engine must not be what runs.
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | (env or {})
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=180)
    assert done.returncode == expect, f"exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout + done.stderr


def write_config(folder: Path, **keys: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"dest_channel": "demo", "mirror_dir": "mirror", **keys}))
    return path


def sound_index(channel_dir: Path, subdir: str) -> dict[str, Any]:
    """Every record of the published index names a file that is there with its size and sha256."""
    doc: dict[str, Any] = json.loads((channel_dir / subdir / "repodata.json").read_bytes())
    for section in ("packages", "packages.conda"):
        for filename, record in doc[section].items():
            data = (channel_dir / subdir / filename).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (record["size"], record["sha256"]), filename
    return doc


def record_names(doc: dict[str, Any]) -> set[str]:
    return {record["name"] for section in ("packages", "packages.conda") for record in doc[section].values()}


def test_the_installed_package_comes_without_the_dev_extras(installed: Path) -> None:
    listed = cli(VENV / "bin" / "python", "-m", "pip", "list", "--format", "json", cwd=VENV)
    present = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.splitlines()[0])}
    assert {"mirror-engine", "py-rattler", "aiohttp", "aiobotocore"} <= present
    assert not present & {"pytest", "hypothesis", "mypy", "msgpack", "trustme"}
    origin = cli(VENV / "bin" / "python", "-c", "import mirror_engine; print(mirror_engine.__file__)", cwd=VENV)
    assert Path(origin.strip()).is_relative_to(VENV), origin


def test_version(installed: Path, tmp_path: Path) -> None:
    from mirror_engine import __version__

    assert cli(installed, "--version", cwd=tmp_path).split()[-1] == __version__


def test_the_demo_job_then_plan_explain_status_and_verify(installed: Path, channel: Path, tmp_path: Path) -> None:
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text()) | {"channels": [str(channel)]}
    config = write_config(tmp_path, **{**demo, "mirror_dir": "mirror"})
    out = cli(installed, "run", config, "--progress", "log", cwd=tmp_path)
    mirrored = tmp_path / "mirror" / "demo"
    doc = sound_index(mirrored, "linux-64")
    assert "readline" in record_names(doc) and "gdbm" not in record_names(doc), out
    sound_index(mirrored, "noarch")

    plan = cli(installed, "plan", config, cwd=tmp_path)
    assert "linux-64" in plan and "license_blacklist" in plan, plan
    explained = cli(installed, "explain", config, "gdbm", cwd=tmp_path)
    assert "license_blacklist" in explained, explained
    status = cli(installed, "status", config, cwd=tmp_path)
    assert "): done, started" in status and "0 failure(s)" in status and "left to fetch: 0 files" in status, status

    victim = next(iter(doc["packages.conda"]))
    path = mirrored / "linux-64" / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    repaired = cli(installed, "run", config, "--verify", "--progress", "none", cwd=tmp_path)
    assert victim in repaired, repaired
    sound_index(mirrored, "linux-64")


def test_include_dependencies_reads_matchspecs_with_the_installed_rattler(
    installed: Path, channel: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, channels=[str(channel)], platforms=["linux-64"], pkg_list=["numpy"], include_dependencies=True
    )
    out = cli(installed, "run", config, "--progress", "none", cwd=tmp_path)
    doc = sound_index(tmp_path / "mirror" / "demo", "linux-64")
    assert {"numpy", "python", "python_abi"} <= record_names(doc), out
    assert "gdbm" not in record_names(doc)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


async def test_a_run_into_s3(installed: Path, channel: Path, tmp_path: Path, s3: S3Server) -> None:
    prefix = unique_prefix()
    destination = s3.destination(prefix) | {"secret_access_key": "${MIRROR_S3_SECRET}"}
    config = write_config(tmp_path, channels=[str(channel)], platforms=["linux-64"], destination=destination)
    env = {"MIRROR_S3_SECRET": s3.secret_key, "AWS_EC2_METADATA_DISABLED": "true"}
    out = cli(installed, "run", config, "--progress", "none", cwd=tmp_path, env=env)
    (tmp_path / "fetched").mkdir()
    await s3.download(f"{prefix}/demo/", tmp_path / "fetched")
    doc = sound_index(tmp_path / "fetched", "linux-64")
    assert "numpy" in record_names(doc), out
    assert s3.secret_key not in out
