"""The journal's sections: its overhead on a small-file mirror, and a no-op resync of many files it vouches for."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.measure import Sample, Stats, engine, measure
from benchmarks.servers import nginx
from benchmarks.workloads import REPO, child_env, small_files_channel

QUIET = ("-q", "--progress", "none")


def bench_journal_overhead(work: Path, repeat: int, count: int, size: int) -> list[str]:
    upstream = work / "small" / "upstream"
    total = small_files_channel(upstream, count, size)
    rows: dict[str, list[Sample]] = {
        "engine, journal on": [],
        "engine, --no-journal": [],
        "curl --parallel (no verify)": [],
    }
    with nginx(upstream, work / "small" / "nginx") as url:
        config = work / "small" / "c.yaml"
        config.write_text(f"channels: [{url}]\nplatforms: linux-64\nmirror_dir: out\nconcurrency: 16\n")
        urls = work / "small" / "urls.txt"
        names = sorted(p.name for p in (upstream / "linux-64").iterdir() if p.name.endswith(".conda"))
        urls.write_text("".join(f'url = "{url}linux-64/{name}"\noutput = "curl-out/{name}"\n' for name in names))
        for _ in range(repeat):  # interleaved, so drift on the machine hits every variant alike
            for label, extra in (("engine, journal on", []), ("engine, --no-journal", ["--no-journal"])):
                shutil.rmtree(work / "small" / "out", ignore_errors=True)
                rows[label].append(measure(engine(str(config), *QUIET, *extra), work / "small"))
            shutil.rmtree(work / "small" / "curl-out", ignore_errors=True)
            rows["curl --parallel (no verify)"].append(
                measure(
                    ["curl", "-sS", "--parallel", "--parallel-max", "16", "--create-dirs", "-K", str(urls)],
                    work / "small",
                )
            )
    base = statistics.median(s.wall for s in rows["engine, --no-journal"])
    lines = [
        f"### Journal overhead: {count} files of {size // 1024} KiB ({total / 1e6:.0f} MB) from nginx on 127.0.0.1",
        "",
        "| variant | median s | min s | MB/s | files/s | CPU % | peak RSS MB | wall vs --no-journal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, samples in rows.items():
        stats = Stats(tuple(samples), total, count)
        lines.append(
            f"| {label} | {stats.median:.2f} | {stats.fastest:.2f} | {stats.mb_per_s:.0f} | {stats.files_per_s:.0f} | "
            f"{stats.cpu_percent:.0f} | {stats.rss_mb:.0f} | {stats.median / base:.2f}x |"
        )
    return [*lines, ""]


def bench_noop(work: Path, count: int) -> list[str]:
    root = work / f"noop-{count}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.workloads",
            "empty",
            str(root / "up"),
            str(root / "out" / "anaconda"),
            str(count),
        ],
        cwd=REPO,
        env=child_env(),
        check=True,
    )
    (root / "c.yaml").write_text("channels: [up]\nplatforms: linux-64\nmirror_dir: out\n")
    find = measure(["find", str(root / "out" / "anaconda"), "-type", "f", "-printf", "%s %T@\n"], root)
    first = measure(engine("c.yaml", *QUIET), root)  # no journal yet: every file on disk is hashed once
    noop = measure(engine("c.yaml", *QUIET), root)
    no_journal = measure(engine("c.yaml", *QUIET, "--no-journal"), root)
    shutil.rmtree(root)
    return [
        f"### No-op resync of {count:,} files already mirrored (empty files: inodes, no data)",
        "",
        "| run | wall s | CPU % | peak RSS MB | wall vs `find -printf` |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {s.wall:.2f} | {s.cpu_percent:.0f} | {s.rss_mb:.0f} | {s.wall / find.wall:.1f}x |"
            for label, s in (
                ("baseline: `find -type f -printf '%s %T@'` (stat every file)", find),
                ("first run, no journal yet (hashes every file)", first),
                ("no-op run, journal on (the nightly case)", noop),
                ("no-op run, --no-journal (hashes every file)", no_journal),
            )
        ),
        "",
    ]
