"""`make bench`: measure the engine against baselines in the same run and write docs/benchmarks.md.

Each figure is the median of `--repeat` runs (min beside it) of a real `python -m mirror_engine run`
subprocess; peak RSS and CPU come from the kernel's rusage of that process. Ratios compare against a
baseline measured in the same invocation on the same machine, never against numbers from elsewhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.bundles import bench_bundles
from benchmarks.journal import bench_journal_overhead, bench_noop
from benchmarks.workloads import REPO


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--noop-files", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--small-files", type=int, default=3000)
    parser.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    parser.add_argument(
        "--sections", nargs="+", choices=("journal", "bundles", "noop"), default=["journal", "bundles", "noop"]
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    command = "make bench" if len(sys.argv) == 1 else "python -m benchmarks.run " + " ".join(sys.argv[1:])
    sections: list[str] = []
    if "journal" in args.sections:
        sections += bench_journal_overhead(args.work, args.repeat, args.small_files, 32 * 1024)
    if "bundles" in args.sections:
        sections += bench_bundles(args.work, args.repeat)
    for count in args.noop_files if "noop" in args.sections else []:
        sections += bench_noop(args.work, count)
    header = [
        "# Benchmarks",
        "",
        f"Made by `{command}` on {time.strftime('%Y-%m-%d')}: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, Linux {platform.release()}. Medians of {args.repeat} runs where a row "
        "says so; every ratio is against a baseline measured in the same invocation.",
        "",
    ]
    args.output.write_text("\n".join(header + sections))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
