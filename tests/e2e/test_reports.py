"""Machine-readable outputs: the JSON report, Prometheus metrics, JSON log lines, and no credentials in them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer
from tests.e2e.conftest import start_cli, wait_for


async def run(tmp_path: Path, *args: str, expect: int) -> tuple[str, str]:
    """`run c.yaml ARGS` to its end, which must exit with `expect`; its stdout and stderr."""
    process = await start_cli("run", "c.yaml", *args, cwd=tmp_path)
    stdout, stderr = await process.communicate()
    assert process.returncode == expect, stderr.decode()
    return stdout.decode(), stderr.decode()


async def test_report_metrics_and_json_logs(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    async with ChannelServer(tmp_path / "pkgs") as server:
        secret_url = server.url.replace("http://", "http://mirror:s3cr3t@")
        (tmp_path / "c.yaml").write_text(f"channels: [{secret_url}]\nplatforms: noarch\nretries: 0\n")
        stdout, stderr = await run(
            tmp_path, "--report", "r.json", "--metrics-file", "m.prom", "--log-format", "json", expect=0
        )
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["report_version"] == 1 and report["exit_code"] == 0
        assert report["rows"][0]["subdir"] == "noarch" and report["rows"][0]["downloaded"] == 3
        assert report["downloaded_bytes"] == sum(r["size"] for r in docs["noarch"]["packages.conda"].values())
        metrics = (tmp_path / "m.prom").read_text()
        assert 'mirror_engine_files{channel="anaconda",outcome="downloaded"} 3' in metrics
        assert 'mirror_engine_exit_code{channel="anaconda"} 0' in metrics
        success = next(line for line in metrics.splitlines() if line.startswith("mirror_engine_last_success"))
        log_lines = [json.loads(line) for line in stderr.splitlines()]
        assert {line["level"] for line in log_lines} <= {"info", "warning", "error"} and log_lines

        (tmp_path / "pkgs" / "noarch" / "tzdata-2024a-h0c530f3_0.conda").write_bytes(b"now broken")
        (tmp_path / "mirror" / "anaconda" / "noarch" / "tzdata-2024a-h0c530f3_0.conda").unlink()
        stdout, stderr = await run(tmp_path, "--report", "r.json", "--metrics-file", "m.prom", "-v", expect=1)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["failures"][0]["what"] == "noarch/tzdata-2024a-h0c530f3_0.conda"
    metrics = (tmp_path / "m.prom").read_text()
    assert success in metrics.splitlines()  # a failed run keeps the last success's time
    assert 'mirror_engine_exit_code{channel="anaconda"} 1' in metrics
    for text in (stdout, stderr, (tmp_path / "r.json").read_text(), metrics):
        assert "s3cr3t" not in text


async def test_metrics_are_written_while_a_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mirror_engine import cli
    from mirror_engine.demo import DEMO_PACKAGES, DemoPackage
    from mirror_engine.destinations.local import LocalDestination
    from mirror_engine.engine import MirrorRun
    from mirror_engine.progress import NullReporter
    from tests.helpers import make_config

    big = DemoPackage("big", "1.0", "0", subdir="noarch", payload_size=3_000_000)
    build_channel(tmp_path / "pkgs", [*DEMO_PACKAGES, big])
    monkeypatch.setattr(cli, "METRICS_INTERVAL", 0.05)
    metrics = tmp_path / "m.prom"
    async with ChannelServer(tmp_path / "pkgs", stall_seconds=30) as server:
        server.faults["/noarch/big-1.0-0.conda"] = ["stall"]
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"])
        run = MirrorRun(config, LocalDestination(config.channel_dir), NullReporter())
        task = asyncio.create_task(cli._until_signalled(run, dry_run=False, metrics=metrics))
        await wait_for(lambda: metrics.exists() and 'outcome="downloaded"} 3' in metrics.read_text())
        assert 'mirror_engine_running{channel="anaconda"} 1' in metrics.read_text()
        assert 'mirror_engine_last_success_timestamp_seconds{channel="anaconda"} 0' in metrics.read_text()
        run.request_stop("SIGTERM")
        summary = await asyncio.wait_for(task, 10)
    assert summary.interrupted_by == "SIGTERM"
