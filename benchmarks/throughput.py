"""Sections A, A30k and B: the engine against curl, aria2c and sha256sum, same files, same nginx, same run.

Every tool downloads every file of the workload into an empty folder, from nginx on 127.0.0.1 serving
it from page cache; the tools take turns within each repeat, so drift on the machine hits all alike.
Before each run the output folder is deleted and `sync` writes back what the previous run left dirty,
so that no run pays for another's writes; nothing is dropped from page cache.

With MIRROR_ENGINE_BASELINE set to another checkout (a `git worktree` of the commit to compare with), A and
B also run the engine from there, in the same turns: a change is then measured against its parent on the
same machine at the same moment, which a shared 2-core box makes the only fair comparison.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.measure import Sample, Stats, engine, measure
from benchmarks.servers import nginx
from benchmarks.workloads import PackageSet, package_set

A_SPEC: dict[str, object] = {"kind": "lognormal", "count": 3000, "median": 150_000, "mean": 433_000, "seed": 11}
B_SPEC: dict[str, object] = {"kind": "fixed", "count": 16, "size": 128 << 20, "seed": 12}
PARALLEL = "16"  # every baseline's parallelism: the engine's default concurrency

ENGINE = "engine: mirror_engine run"
XARGS = "xargs -P 16 curl, then sha256sum -c"
CURL_Z = "curl -Z --parallel-max 16 (no verification)"
ARIA2 = "aria2c -j 16 with checksum=sha-256"
SHA256SUM = "sha256sum -c of the downloaded tree (page cache)"
BAR = "engine, --progress bar (on a pseudo-terminal)"
LOG = "engine, --progress log"
BASELINES = (XARGS, CURL_Z, ARIA2, SHA256SUM)


@dataclass(frozen=True)
class Tool:
    label: str
    command: list[str]
    output: str | None  # folder it writes into, emptied before each run; None: it downloads nothing
    files: str = ""  # where the files land under `output`
    cwd: str = "."
    tty: bool = False


@dataclass
class Workload:
    """What a section measured: a table's worth of figures, and the commands that made them."""

    title: str
    packages: PackageSet
    stats: dict[str, Stats] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)


def write_lists(folder: Path, url: str, packages: PackageSet) -> None:
    """The input each baseline takes, as an operator would write it: a URL list, a checksum list,
    a curl config of url/output pairs, an aria2c input file with a checksum per download."""
    names = [(path, Path(path).name, digest) for path, _, digest in packages.files]
    (folder / "urls.txt").write_text("".join(f"{url}{path}\n" for path, _, _ in names))
    (folder / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for _, name, digest in names))
    (folder / "curl.cfg").write_text("".join(f'url = "{url}{p}"\noutput = "curl-z/{n}"\n' for p, n, _ in names))
    (folder / "aria2.txt").write_text(
        "".join(f"{url}{path}\n  out={name}\n  checksum=sha-256={digest}\n" for path, name, digest in names)
    )
    (folder / "engine.yaml").write_text(f"channels: [{url}]\nplatforms: [linux-64]\nmirror_dir: engine-out\n")


def tools(*, progress: bool) -> list[Tool]:
    """The engine with its default config (concurrency 16), then the baselines, in the order they run."""
    mirrored = "anaconda/linux-64"  # where the engine's files land: mirror_dir/dest_channel/subdir
    script = f"cd xargs && xargs -P {PARALLEL} -n 1 curl -sSf -O < ../urls.txt && sha256sum --quiet -c ../SHA256SUMS"
    aria2 = ["aria2c", "-q", "-j", PARALLEL, "-i", "aria2.txt", "-d", "aria2"]
    listed = [
        Tool(ENGINE, engine("engine.yaml", "-q", "--progress", "none"), "engine-out", mirrored),
        Tool(XARGS, ["sh", "-c", script], "xargs"),
        Tool(CURL_Z, ["curl", "-sSf", "-Z", "--parallel-max", PARALLEL, "-K", "curl.cfg"], "curl-z"),
        Tool(SHA256SUM, ["sha256sum", "--quiet", "-c", "../SHA256SUMS"], None, cwd="curl-z"),
        Tool(ARIA2, [*aria2, "--allow-overwrite=true", "--auto-file-renaming=false"], "aria2"),
    ]
    baseline = os.environ.get("MIRROR_ENGINE_BASELINE")
    if baseline:  # its own code first on the path; its workers follow the code they were imported from
        run = ["env", f"PYTHONPATH={baseline}", sys.executable, "-m", "mirror_engine", "run", "engine.yaml"]
        listed.insert(1, Tool(f"engine at {baseline}", [*run, "-q", "--progress", "none"], "engine-out", mirrored))
    if progress:  # -q keeps the log quiet, so that the bar is all that differs from the first run
        listed.append(Tool(BAR, engine("engine.yaml", "-q", "--progress", "bar"), "engine-out", mirrored, tty=True))
        listed.append(Tool(LOG, engine("engine.yaml", "--progress", "log"), "engine-out", mirrored))
    return listed


def run_workload(folder: Path, workload: Workload, chosen: list[Tool], repeat: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    samples: dict[str, list[Sample]] = {tool.label: [] for tool in chosen}
    with nginx(workload.packages.channel, folder / "nginx") as url:
        write_lists(folder, url, workload.packages)
        warm_cache(*(workload.packages.channel / path for path, _, _ in workload.packages.files))
        for turn in range(repeat):
            # Each repeat starts one tool later, so that no tool always runs first or after the same one.
            for tool in chosen[turn % len(chosen) :] + chosen[: turn % len(chosen)]:
                if tool.output is not None:
                    shutil.rmtree(folder / tool.output, ignore_errors=True)
                    (folder / tool.output).mkdir()
                os.sync()
                samples[tool.label].append(measure(tool.command, folder / tool.cwd, tty=tool.tty))
                if tool.output is not None:
                    check_download(folder / tool.output / tool.files, workload.packages, tool.label)
    for output in {tool.output for tool in chosen if tool.output is not None}:
        shutil.rmtree(folder / output)  # copies of the workload: A30k's alone is over 10 GB
    for tool in chosen:
        workload.stats[tool.label] = Stats(tuple(samples[tool.label]), workload.packages.total, workload.packages.count)
        workload.commands[tool.label] = shlex.join(tool.command)


def warm_cache(*paths: Path) -> None:
    """Read each file once, untimed: a workload made long ago may have left page cache since, and the
    first tool to run would pay for reading it from disk. In small reads, so the runner stays small."""
    for path in paths:
        with path.open("rb", buffering=0) as source:
            while source.read(1 << 20):
                pass


def check_download(folder: Path, packages: PackageSet, label: str) -> None:
    """Every file there with its size: a tool that skipped files must not look fast."""
    sizes = {entry.name: entry.stat().st_size for entry in os.scandir(folder) if entry.name.endswith(("conda", "bz2"))}
    wanted = {Path(path).name: size for path, size, _ in packages.files}
    if sizes != wanted:
        missing = len(wanted.keys() - sizes.keys())
        raise SystemExit(f"{label}: {folder} does not hold the workload ({missing} missing of {len(wanted)})")


def section_a(work: Path, repeat: int) -> Workload:
    packages = package_set(work / "workloads" / "a-3000", A_SPEC)
    workload = Workload(f"A: {packages.count} packages, log-normal sizes (median 150 kB)", packages)
    run_workload(work / "a", workload, tools(progress=True), repeat)
    return workload


def section_a_scaled(work: Path, repeat: int, count: int) -> Workload:
    """A's distribution at `count` files, the engine alone: does its peak RSS grow with the file count?"""
    spec = {**A_SPEC, "count": count}
    packages = package_set(work / "workloads" / f"a-{count}", spec)
    workload = Workload(f"A30k: A at {count:,} packages, engine only", packages)
    run_workload(work / f"a-{count}", workload, tools(progress=False)[:1], repeat)
    return workload


def section_b(work: Path, repeat: int) -> Workload:
    packages = package_set(work / "workloads" / "b-16", B_SPEC)
    workload = Workload(f"B: {packages.count} packages of 128 MiB", packages)
    run_workload(work / "b", workload, tools(progress=False), repeat)
    return workload


def speedup(workload: Workload, baseline: str) -> float:
    """Engine MB/s (and files/s: the same files) divided by the baseline's, from median walls."""
    return workload.stats[baseline].median / workload.stats[ENGINE].median


def table(workload: Workload, rss_floor: float) -> list[str]:
    packages = workload.packages
    lines = [
        f"### {workload.title}",
        "",
        f"{packages.count:,} files, {packages.total / 1e6:,.0f} MB, medians of {_repeats(workload)} runs.",
        "",
        "| tool | median s | min s | MB/s | files/s | CPU % | peak RSS MB | engine speed ÷ this |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, stats in workload.stats.items():
        ratio = f"{speedup(workload, label):.2f}x" if ENGINE in workload.stats else ""
        lines.append(
            f"| {label} | {stats.median:.2f} | {stats.fastest:.2f} | {stats.mb_per_s:,.0f} | {stats.files_per_s:,.0f} "
            f"| {stats.cpu_percent:.0f} | {_rss(stats.rss_mb, rss_floor)} | {ratio} |"
        )
    return [*lines, ""]


def progress_table(workload: Workload) -> list[str]:
    base = workload.stats[ENGINE]
    lines = [
        f"### Progress display cost on A ({workload.packages.count:,} files)",
        "",
        "| engine run | median s | min s | CPU % | wall ÷ `--progress none` |",
        "|---|---|---|---|---|",
    ]
    for label in (ENGINE, BAR, LOG):
        stats = workload.stats[label]
        lines.append(f"| {label} | {stats.median:.2f} | {stats.fastest:.2f} | {stats.cpu_percent:.0f} | "
                     f"{stats.median / base.median:.2f}x |")  # fmt: skip
    return [*lines, ""]


def scaling_table(small: Workload, large: Workload, rss_floor: float) -> list[str]:
    lines = [
        f"### A at {large.packages.count:,} files: peak RSS",
        "",
        f"A's size distribution and seed at {large.packages.count:,} files, the engine alone. "
        f"{large.packages.total / 1e9:.0f} GB upstream plus as much mirrored may not fit in page cache, "
        "so its wall time is not comparable with A's; the point is peak RSS.",
        "",
        "| engine run | files | MB | median s | MB/s | files/s | CPU % | peak RSS MB | RSS ÷ 3000-file run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = small.stats[ENGINE].rss_mb
    for label, workload in (("A", small), ("A30k", large)):
        stats = workload.stats[ENGINE]
        lines.append(
            f"| {label} | {workload.packages.count:,} | {workload.packages.total / 1e6:,.0f} | "
            f"{stats.median:.2f} | {stats.mb_per_s:,.0f} | {stats.files_per_s:,.0f} | {stats.cpu_percent:.0f} | "
            f"{_rss(stats.rss_mb, rss_floor)} | {stats.rss_mb / base:.2f}x |"
        )
    return [*lines, ""]


def commands(workload: Workload, describe: Callable[[str], str] = str) -> list[str]:
    return [f"- {label}: `{describe(command)}`" for label, command in workload.commands.items()]


def _repeats(workload: Workload) -> int:
    return min(len(stats.samples) for stats in workload.stats.values())


def _rss(rss_mb: float, floor: float) -> str:
    """Below the runner's own RSS the kernel cannot tell us the figure, only that it is at most that."""
    return f"≤ {floor:.0f}" if rss_mb <= floor * 1.02 else f"{rss_mb:.0f}"
