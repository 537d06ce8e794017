"""Interrupting a run: Ctrl-C exits 130 and leaves neither temporary files nor a half-published index."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer

REPO = Path(__file__).resolve().parents[2]


async def _wait_for(predicate: object, limit: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_ctrl_c_exits_130_and_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root)
    async with ChannelServer(root, stall_seconds=60) as server:
        for filename in docs["noarch"]["packages.conda"]:
            server.faults[f"/noarch/{filename}"] = ["stall"]
        (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\nplatforms: noarch\n")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mirror_engine", "run", "c.yaml",
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        mirror = tmp_path / "mirror"
        await _wait_for(lambda: len(list(mirror.rglob("*.part"))) == 3)
        process.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 130, stderr
    assert stderr.decode().strip().splitlines()[-1] == (
        "mirror-engine: interrupted; run the same command again to resume"
    )
    assert not list(mirror.rglob("*.part"))
    assert not (mirror / "anaconda" / "noarch" / "repodata.json").exists()
