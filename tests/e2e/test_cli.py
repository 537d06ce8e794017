"""`python -m mirror_engine` as a user runs it: a subprocess, its output and its exit status."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mirror_engine.demo import build_channel

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "mirror_engine", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_demo_config_mirrors_and_summarises(tmp_path: Path) -> None:
    build_channel(tmp_path / "build" / "demo-channel")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "demo.yaml").write_text((REPO / "config" / "demo.yaml").read_text())
    result = run_cli("run", "config/demo.yaml", "--progress", "log", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    published = next(line for line in result.stdout.splitlines() if line.startswith("downloaded "))
    assert sorted(published.partition("published ")[2].split(", ")) == ["linux-64", "noarch"]
    assert f"mirror: {tmp_path / 'build' / 'demo-mirror' / 'demo'}" in result.stdout
    assert "Traceback" not in result.stderr
    assert (tmp_path / "build" / "demo-mirror" / "demo" / "linux-64" / "repodata.json.zst").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: linux-64\n")
    result = run_cli("run", "c.yaml", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "would download 16 files" in result.stdout
    assert not (tmp_path / "mirror").exists()


def test_failed_files_exit_1_and_are_listed(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    (tmp_path / "pkgs" / "noarch" / "tzdata-2024a-h0c530f3_0.conda").write_bytes(b"x")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: noarch\nretries: 0\n")
    result = run_cli("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "1 failure(s):" in result.stdout and "noarch/tzdata-2024a-h0c530f3_0.conda" in result.stdout
    assert "Traceback" not in result.stderr


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("channels: [https://example.invalid/]\nlicense_blacklist: [GPL2, GPLv3]\n")
    result = run_cli("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mirror-engine: error: c.yaml: license_blacklist[1]: 'GPLv3' is not a license family; use one of "
        "AGPL, GPL, GPL2, GPL3, LGPL, BSD, MIT, APACHE, PSF, PUBLIC-DOMAIN, PROPRIETARY, OTHER, CC, MOZILLA, NONE"
    ]
    assert not (tmp_path / "mirror").exists()


def test_usage_errors_exit_2_and_help_explains(tmp_path: Path) -> None:
    assert run_cli("frobnicate", cwd=tmp_path).returncode == 2
    assert run_cli("run", cwd=tmp_path).returncode == 2
    helped = run_cli("run", "--help", cwd=tmp_path)
    assert helped.returncode == 0
    for option in ("--dry-run", "--verbose", "--quiet", "--progress", "exit status"):
        assert option in helped.stdout


def test_unreachable_channel_is_one_line_after_retries(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (tmp_path / "c.yaml").write_text(f"channels: [http://127.0.0.1:{port}/c/]\nretries: 1\nretry_backoff: 0.01\n")
    result = run_cli("run", "c.yaml", "-q", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mirror-engine: error: http://127.0.0.1:{port}/c/channeldata.json: cannot connect")
    assert "Traceback" not in result.stderr


def test_plan_json_counts_every_filter_step(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text(
        "channels: [pkgs]\nplatforms: linux-64\npython_versions: [3.11]\nlicense_blacklist: GPL\n"
        "whitelist: [readline]\nblacklist: [zlib]\n"
    )
    result = run_cli("plan", "c.yaml", "--json", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    linux = next(row for row in plan["rows"] if row["subdir"] == "linux-64")
    assert (linux["upstream"], linux["selected"], linux["to_fetch"]) == (13, 7, 7)
    assert plan["filters"] == {
        "kept": 8, "dropped by python_versions": 3, "dropped by license_blacklist": 1,
        "dropped by blacklist": 2, "put back by whitelist": 2,
    }  # fmt: skip
    assert not (tmp_path / "mirror").exists()


def test_export_verify_import_from_the_command_line(tmp_path: Path) -> None:
    build_channel(tmp_path / "up")
    (tmp_path / "low.yaml").write_text("channels: [up]\nmirror_dir: low\nplatforms: noarch\n")
    (tmp_path / "high.yaml").write_text("channels: [https://example.invalid/unused/]\nmirror_dir: high\n")
    assert run_cli("run", "low.yaml", "-q", cwd=tmp_path).returncode == 0
    exported = run_cli("export", "low.yaml", "usb", "--split-size", "100kB", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "keep snapshot-" in exported.stdout
    verified = run_cli("verify-bundle", "usb", cwd=tmp_path)
    assert verified.returncode == 0 and "match the manifest" in verified.stdout
    imported = run_cli("import", "usb", "high.yaml", "-q", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert (tmp_path / "high" / "anaconda" / "noarch" / "repodata.json").read_bytes() == (
        tmp_path / "low" / "anaconda" / "noarch" / "repodata.json"
    ).read_bytes()
    (tmp_path / "usb" / "bundle.tar.001").unlink()
    broken = run_cli("verify-bundle", "usb", cwd=tmp_path)
    assert broken.returncode == 1
    assert broken.stderr.strip().splitlines()[-1] == "mirror-engine: error: usb/bundle.tar.001: volume missing"
