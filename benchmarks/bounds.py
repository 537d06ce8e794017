"""What the tests no longer time: a run's wall time under max_bandwidth, and an HTTP PUT upload's memory peak.

The tests check the throttle's waits on an injected clock and that an upload arrives whole; this says
what those cost on a real clock and a real heap. Run: `python -m benchmarks.bounds` (needs nginx).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from mirror_engine.demo import DemoPackage, build_channel
from mirror_engine.destinations.http import HttpPutDestination
from tests.channel_server import ChannelServer
from tests.helpers import make_config, mirror
from tests.nginx_dav import PASSWORD, USER, nginx_dav

RATE = 1_000_000  # bytes per second: max_bandwidth "1MB/s"
MIB = 1024 * 1024


async def throttled_run(work: Path, package_bytes: int) -> tuple[float, float]:
    """(wall seconds, the least the cap allows) for two packages of `package_bytes` each at RATE."""
    root = work / "upstream"
    packages = [DemoPackage(name, "1", "0", subdir="noarch", payload_size=package_bytes) for name in ("big", "bigger")]
    docs = build_channel(root, packages, zst=False)
    total = sum(record["size"] for record in docs["noarch"]["packages.conda"].values())
    async with ChannelServer(root) as server:
        config = make_config(work, channels=[server.url], platforms=["noarch"], max_bandwidth=f"{RATE}B/s")
        started = time.monotonic()
        summary = await mirror(config)
        elapsed = time.monotonic() - started
    assert summary.exit_code == 0, summary.failures
    return elapsed, (total - RATE) / RATE  # the bucket starts with one second's worth


async def upload_peak(work: Path, size: int) -> int:
    """Bytes allocated at the peak (tracemalloc) while one `size`-byte file is PUT to nginx."""
    with nginx_dav(work / "dav") as dav:
        config = make_config(
            work,
            channels=[str(work)],
            destination={"kind": "http", "url": dav.url, "username": USER, "password": PASSWORD},
        )
        destination = HttpPutDestination(config, work / "staging")
        await destination.open()
        try:
            source = destination.temp_path("noarch", "big-1-0.conda")
            source.write_bytes(random.Random(3).randbytes(size))
            tracemalloc.start()
            try:
                await destination.upload_file(source, "noarch", "big-1-0.conda")
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        finally:
            await destination.close()


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bounds", description=__doc__)
    parser.add_argument("--package-mb", type=float, default=1.0, help="size of each of the two packages (MB)")
    parser.add_argument("--upload-mib", type=int, default=24, help="size of the uploaded file (MiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        elapsed, least = await throttled_run(Path(scratch) / "bw", int(args.package_mb * 1e6))
        print(f"max_bandwidth 1MB/s: run took {elapsed:.2f} s; the cap allows no less than {least:.2f} s")
        peak = await upload_peak(Path(scratch) / "up", args.upload_mib * MIB)
        print(f"PUT of {args.upload_mib} MiB: peak {peak / MIB:.2f} MiB allocated (streamed if far below the file)")


if __name__ == "__main__":
    asyncio.run(main())
