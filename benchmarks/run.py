"""`make bench`: measure the engine against baselines in the same run and write docs/benchmarks.md.

Each figure is the median of `--repeat` runs (min beside it) of a real `python -m mirror_engine run`
subprocess; peak RSS and CPU come from the kernel's rusage of that process. Ratios compare against a
baseline measured in the same invocation on the same machine, never against numbers from elsewhere.

Sections: A (3000 small packages), A30k (A at 10x the files, engine only: peak RSS), B (16 x 128 MiB),
C (a 600,000-record index: C1 with a pkg_list, C2 everything), journal (its overhead), bundles
(export/import against tar), noop (a no-op resync of many files).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmarks import report
from benchmarks import throughput as t
from benchmarks.bundles import bench_bundles
from benchmarks.index_scale import IndexResults, section_c
from benchmarks.index_scale import table as c_table
from benchmarks.journal import bench_journal_overhead, bench_noop
from benchmarks.measure import rss_floor_mb
from benchmarks.workloads import REPO

T = TypeVar("T")
SECTIONS = ("A", "A30k", "B", "C", "journal", "bundles", "noop")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool on each workload (default 3)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), metavar="SECTION",
                        help=f"any of {', '.join(SECTIONS)} (default: all)")  # fmt: skip
    parser.add_argument("--a30k-files", type=int, default=30_000, help="files in section A30k (default 30000)")
    parser.add_argument("--a30k-repeat", type=int, default=1,
                        help="runs in A30k, which only compares peak RSS with A's (default 1)")  # fmt: skip
    parser.add_argument("--noop-files", type=int, nargs="*", default=[100_000],
                        help="file counts for the no-op resync (default 100000; 1000000 takes ~12 min)")  # fmt: skip
    parser.add_argument("--small-files", type=int, default=3000, help="files in the journal section")
    parser.add_argument("--work", type=Path, default=REPO / "build" / "bench")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    started, load_before = time.monotonic(), os.getloadavg()
    chosen = set(args.sections)
    a = _timed("A", lambda: t.section_a(args.work, args.repeat)) if "A" in chosen else None
    a_large = (
        _timed("A30k", lambda: t.section_a_scaled(args.work, args.a30k_repeat, args.a30k_files))
        if "A30k" in chosen
        else None
    )
    b = _timed("B", lambda: t.section_b(args.work, args.repeat)) if "B" in chosen else None
    c: IndexResults | None = _timed("C", lambda: section_c(args.work, args.repeat)) if "C" in chosen else None
    floor = rss_floor_mb()  # after every measurement, so at its highest
    body: list[str] = []
    if a:
        body += t.table(a, floor) + t.progress_table(a)
    if a and a_large:
        body += t.scaling_table(a, a_large, floor)
    elif a_large:
        body += t.table(a_large, floor)
    if b:
        body += t.table(b, floor)
    if c:
        body += c_table(c, floor)
    if "journal" in chosen:
        body += _timed("journal", lambda: bench_journal_overhead(args.work, args.repeat, args.small_files, 32 * 1024))
    if "bundles" in chosen:
        body += _timed("bundles", lambda: bench_bundles(args.work, args.repeat))
    for count in args.noop_files if "noop" in chosen else []:
        body += _timed(f"noop {count}", functools.partial(bench_noop, args.work, count))
    minutes = (time.monotonic() - started) / 60
    invocation = "python -m benchmarks.run " + " ".join(argv) if argv else "make bench"
    header = [
        "# Benchmarks",
        "",
        f"Made by `{invocation}` on {time.strftime('%Y-%m-%d')} in {minutes:.0f} minutes (sections: "
        f"{', '.join(s for s in SECTIONS if s in chosen)}; repeats: {args.repeat}). Every ratio is against a "
        "baseline measured in the same invocation; see Method for how, and Commands to run it again.",
        "",
        "What the figures mean, the profiles behind them and what is next: [performance.md](performance.md).",
        "",
    ]
    doc = [
        *header,
        *report.machine(args.work, floor, load_before),
        *report.targets_table(report.targets(a, a_large, b, c)),
        "## Results",
        "",
        *body,
        report.METHOD,
        *report.commands(a, b, c, argv),
    ]
    args.output.write_text("\n".join(doc))
    print(args.output.read_text())
    return 0


def _timed(name: str, work: Callable[[], T]) -> T:
    """Run one section, saying on stderr when it ends: a full run is long, and this shows where it goes."""
    print(f"benchmarks: {name}...", file=sys.stderr, flush=True)
    start = time.monotonic()
    result = work()
    print(f"benchmarks: {name} done in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
