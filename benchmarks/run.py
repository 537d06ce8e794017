"""`make bench`: measure the engine against baselines in the same run and write docs/benchmarks.md.

Each figure is the median of `--repeat` runs (min beside it) of a real `python -m mirror_engine run`
subprocess; peak RSS and CPU come from the kernel's rusage of that process. Ratios compare against a
baseline measured in the same invocation on the same machine, never against numbers from elsewhere.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import nginx
from benchmarks.workloads import small_files_channel

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # user + system seconds
    rss_mb: float

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu / self.wall if self.wall else 0.0


def measure(command: list[str], cwd: Path) -> Sample:
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        stderr = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"benchmark command failed ({code}): {' '.join(command)}\n{stderr}")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def engine(*args: str) -> list[str]:
    return [sys.executable, "-m", "mirror_engine", "run", *args, "-q", "--progress", "none"]


def summarize(samples: list[Sample]) -> tuple[float, float, float, float]:
    walls = [s.wall for s in samples]
    return (
        statistics.median(walls),
        min(walls),
        statistics.median(s.cpu_percent for s in samples),
        max(s.rss_mb for s in samples),
    )


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
                rows[label].append(measure(engine(str(config), *extra), work / "small"))
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
        median, fastest, cpu, rss = summarize(samples)
        lines.append(
            f"| {label} | {median:.2f} | {fastest:.2f} | {total / median / 1e6:.0f} | {count / median:.0f} | "
            f"{cpu:.0f} | {rss:.0f} | {median / base:.2f}x |"
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
        check=True,
    )
    (root / "c.yaml").write_text("channels: [up]\nplatforms: linux-64\nmirror_dir: out\n")
    find = measure(["find", str(root / "out" / "anaconda"), "-type", "f", "-printf", "%s %T@\n"], root)
    first = measure(engine("c.yaml"), root)  # no journal yet: every file on disk is hashed once
    noop = measure(engine("c.yaml"), root)
    no_journal = measure(engine("c.yaml", "--no-journal"), root)
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


def bench_bundles(work: Path, repeat: int) -> list[str]:
    """Export and import throughput against tar of the same tree, for many small and a few large packages."""
    lines = [
        "### Air-gap bundles: export and import against tar of the same tree",
        "",
        "| workload | step | median s | MB/s | vs tar |",
        "|---|---|---|---|---|",
    ]
    workloads = {"3000 x 32 KiB": (3000, 32 * 1024), "8 x 25 MB": (8, 25_000_000)}
    for label, (count, size) in workloads.items():
        root = work / f"bundle-{count}"
        shutil.rmtree(root, ignore_errors=True)
        total = small_files_channel(root / "anaconda", count, size, seed=count)
        (root / "low.yaml").write_text(f"mirror_dir: {root.resolve()}\nchannels: [https://example.invalid/unused/]\n")
        (root / "high.yaml").write_text("mirror_dir: high\nchannels: [https://example.invalid/unused/]\n")
        steps: dict[str, list[float]] = {"export": [], "tar cf": [], "import": [], "tar xf": []}
        for _ in range(repeat):
            for leftover in ("usb", "high", "untar"):
                shutil.rmtree(root / leftover, ignore_errors=True)
            (root / "bundle.tar").unlink(missing_ok=True)
            cli = [sys.executable, "-m", "mirror_engine"]
            steps["export"].append(measure([*cli, "export", "low.yaml", "usb", "-q"], root).wall)
            steps["tar cf"].append(measure(["tar", "cf", "bundle.tar", "anaconda"], root).wall)
            steps["import"].append(measure([*cli, "import", "usb", "high.yaml", "-q"], root).wall)
            (root / "untar").mkdir()
            steps["tar xf"].append(measure(["tar", "xf", "bundle.tar", "-C", "untar"], root).wall)
        medians = {step: statistics.median(walls) for step, walls in steps.items()}
        for step, baseline in (("export", "tar cf"), ("import", "tar xf")):
            for name in (step, baseline):
                ratio = medians[name] / medians[baseline]
                lines.append(
                    f"| {label} | {name} | {medians[name]:.2f} | {total / medians[name] / 1e6:.0f} | {ratio:.2f}x |"
                )
        shutil.rmtree(root)
    return [
        *lines,
        "",
        "Import includes verifying every volume and file, and mirroring into the destination with fsync.",
        "",
    ]


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
