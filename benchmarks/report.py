"""docs/benchmarks.md's fixed parts: machine facts, the targets table with "met?", method and commands."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks import throughput as t
from benchmarks.index_scale import C1, C2, IndexResults
from benchmarks.workloads import REPO


@dataclass(frozen=True)
class Target:
    what: str
    goal: str
    measured: str
    met: bool | None  # None: its section was not run


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"


def _cpu_model() -> str:
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        return platform.processor() or "?"
    return found.group(1) if found else platform.processor() or "?"


def _memory_gb() -> float:
    try:
        found = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    except OSError:
        return 0.0
    return int(found.group(1)) * 1024 / 1e9 if found else 0.0


def engine_revision() -> str:
    head = _first_line(["git", "-C", str(REPO), "log", "-1", "--format=%h %cs %s", "--", "mirror_engine"])
    dirty = _first_line(["git", "-C", str(REPO), "status", "--porcelain", "--", "mirror_engine"]) not in ("?", "")
    return f"{head[:80]}{' (with uncommitted changes to mirror_engine/)' if dirty else ''}"


def machine(work: Path, rss_floor: float, load_before: tuple[float, ...]) -> list[str]:
    filesystem = _first_line(["findmnt", "-n", "-o", "FSTYPE", "-T", str(work)])
    return [
        "## Machine",
        "",
        f"- CPU: {_cpu_model()}, {os.cpu_count()} cores; {_memory_gb():.0f} GB RAM; Linux {platform.release()}; "
        f"work folder on {filesystem}",
        f"- Python {platform.python_version()} ({sys.executable}); engine at `{engine_revision()}`",
        f"- {_first_line(['nginx', '-v'])}; {' '.join(_first_line(['curl', '--version']).split()[:2])}; "
        f"{_first_line(['aria2c', '--version'])}; {_first_line(['sha256sum', '--version'])}",
        f"- load average (1, 5, 15 min) before: {_load(load_before)}; after: {_load(os.getloadavg())}. "
        f"{_busy(load_before, os.getloadavg())}",
        f"- Peak RSS of a measured command is at least that of the small process that starts it "
        f"(`benchmarks/launch.py`, {rss_floor:.0f} MB: Linux carries it into a child started by vfork); "
        f"a figure shown as `≤ {rss_floor:.0f}` means the tool used no more than that.",
        "",
    ]


def _busy(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """A warning when other work shared the machine: the 5-minute load before we started is all theirs;
    over the run (15 minutes after) ours adds about one core, so more than every core means theirs too."""
    cores = os.cpu_count() or 1
    if before[1] > 0.5 * cores or after[2] > cores:
        return (
            f"**The machine was busy with other work** ({cores} cores): runs of one tool can then differ by tens "
            "of percent, so a ratio means little unless it exceeds that spread (compare min and median). "
            "Re-measure on an idle machine before relying on these figures."
        )
    return "Compare ratios within one run, not figures across runs."


def _load(values: tuple[float, ...]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def targets(
    a: t.Workload | None, a_large: t.Workload | None, b: t.Workload | None, c: IndexResults | None
) -> list[Target]:
    """The issue's goals, each checked against this run's medians (RSS: the largest of the repeats)."""
    rows: list[Target] = []
    for workload, name, goals in (
        (a, "A", ((t.CURL_Z, 1.0), (t.XARGS, 2.5), (t.ARIA2, 5.0))),
        (b, "B", ((t.CURL_Z, 1.0), (t.XARGS, 2.0))),
    ):
        for baseline, floor in goals:
            ratio = t.speedup(workload, baseline) if workload else None
            rows.append(_at_least(f"{name}: engine MB/s ÷ {baseline}", floor, ratio, "x"))
        rss = workload.stats[t.ENGINE].rss_mb if workload else None
        rows.append(_at_most(f"{name}: engine peak RSS", 150, rss, " MB"))
    if a and a_large:
        growth = a_large.stats[t.ENGINE].rss_mb / a.stats[t.ENGINE].rss_mb
        rows.append(Target(f"A at {a_large.packages.count:,} files: peak RSS ÷ A's", "≤ 1.10x", f"{growth:.2f}x",
                           growth <= 1.10))  # fmt: skip
    else:
        rows.append(Target("A at 10x the files: peak RSS ÷ A's", "≤ 1.10x", "not measured", None))
    for label, seconds in ((C1, 3.0), (C2, 6.0)):
        stats = c.stats[label] if c else None
        rows.append(_at_most(f"{label.split(':')[0]}: wall (median)", seconds, stats.median if stats else None, " s"))
        rows.append(_at_most(f"{label.split(':')[0]}: peak RSS", 1000, stats.rss_mb if stats else None, " MB"))
    return rows


def _at_least(what: str, floor: float, value: float | None, unit: str) -> Target:
    if value is None:
        return Target(what, f"≥ {floor:g}{unit}", "not measured", None)
    return Target(what, f"≥ {floor:g}{unit}", f"{value:.2f}{unit}", value >= floor)


def _at_most(what: str, ceiling: float, value: float | None, unit: str) -> Target:
    if value is None:
        return Target(what, f"≤ {ceiling:g}{unit}", "not measured", None)
    return Target(what, f"≤ {ceiling:g}{unit}", f"{value:,.2f}{unit}", value <= ceiling)


def targets_table(rows: list[Target]) -> list[str]:
    lines = ["## Targets", "", "| target | goal | measured | met? |", "|---|---|---|---|"]
    for row in rows:
        met = "—" if row.met is None else "yes" if row.met else "**no**"
        lines.append(f"| {row.what} | {row.goal} | {row.measured} | {met} |")
    return [*lines, ""]


METHOD = """\
## Method

- Every tool is started by `benchmarks/launch.py`, a small process the runner starts for each run:
  it measures the wall time from start to exit, and takes CPU (user + system) and peak RSS from the
  kernel's rusage of the tool's process tree (`os.wait4`): CPU is summed over the tree, peak RSS is
  that of its largest single process. CPU % above 100 means more than one core. nginx's own CPU is not
  counted for anyone. MB is 10^6 bytes, MB/s too.
- The engine runs as `python -m mirror_engine run` with this checkout first on `PYTHONPATH`, with its
  default config (concurrency 16) and only channels, platforms and mirror_dir set; every baseline
  gets the same parallelism of 16.
- Files come from nginx on 127.0.0.1 (`sendfile on`, keepalive, access log off, one worker), which
  serves them from page cache: the workloads are generated once (seeded, so the same bytes on every
  machine) and kept under `build/bench/workloads/`; each is read once, untimed, before its runs, and
  nothing is dropped from cache (A30k's 13 GB, with its copy, may not all fit). Each run writes into an
  empty folder (deleted between repeats); `sync` runs before each run so that no run pays for the
  write-back of another's files. The engine makes every file durable (a syncfs per journal batch);
  curl and aria2c do not.
- Tools take turns within each repeat, each repeat starting one tool later, so that drift on a shared
  machine hits all of them alike and no tool always follows the same one. Figures are the median of the
  repeats, min beside it; ratios divide medians of the same run. "engine speed ÷ this" is the
  baseline's median wall over the engine's: the engine's MB/s divided by the baseline's, and its
  files/s too, since both move the same files.
- Baselines: `xargs -P 16 curl` with one curl per URL then `sha256sum -c` (what an operator would
  script, verification included); `curl -Z --parallel-max 16` with no verification (the transfer
  ceiling); `aria2c -j 16` with `checksum=sha-256=...` per file in its input file (aria2c checks each
  file when it completes and fails on a mismatch); `sha256sum -c` of the tree curl just wrote, from
  page cache (the hashing ceiling of a script on one core: coreutils' own SHA-256 may not use the CPU's
  SHA instructions, which OpenSSL, and so Python's hashlib, does).
- Progress: `--progress bar` runs on a pseudo-terminal (120x40) that the runner reads and discards,
  so the live display draws as it would for a person; `--progress log` writes a log line every 10 s.
- C2 cannot fetch 600,000 files and still measure the index: even empty files cost the engine its full
  per-file price (a request, a temp file, a rename, a journal row; section A measures that),
  which at several hundred files a second would be over ten minutes per run. So C2's files are empty
  (size 0, the sha256 of nothing), already in the mirror, and vouched for by a journal written through
  the engine's own `Journal` class, as a run interrupted right after its last download leaves it
  (verified, nothing published). The measured run fetches `repodata.json.zst`, parses, filters and
  plans all 600,000 records, lists the 600,000 files and reads their journal rows, trusts every one,
  and publishes repodata.json, .zst, the CEP-16 shards and the pages. Before each repeat the runner
  puts back the journal and removes what the previous run published. Both C runs check the engine's
  `--report` (C1: only the pkg_list files fetched; C2: none fetched, all present).
"""


def commands(a: t.Workload | None, b: t.Workload | None, c: IndexResults | None, argv: list[str]) -> list[str]:
    invocation = "python -m benchmarks.run " + " ".join(argv) if argv else "make bench"
    lines = [
        "## Commands",
        "",
        f"This file: `{invocation}` (`make bench` installs nginx, curl and aria2 with apt-get when missing, then",
        "runs `python -m benchmarks.run`: every section, 3 repeats). Select with `--sections A A30k B C journal",
        "bundles noop` and `--repeat N`; `--a30k-files`, `--a30k-repeat` and `--noop-files` size those sections",
        "(`--noop-files 100000 1000000` adds the million-file resync, about 12 minutes more). The first run",
        "generates the workloads into `build/bench/workloads/` (about 17 GB, 1.2 million inodes; a few minutes)",
        "and later runs reuse them; A30k needs as much again free while it runs. `make clean` removes them.",
        "",
    ]
    for workload, folder in ((a, "build/bench/a"), (b, "build/bench/b")):
        if workload is None:
            continue
        lines += [f"{workload.title.split(':')[0]}, run in `{folder}`:", ""]
        lines += [f"- {label}: `{_readable(command)}`" for label, command in workload.commands.items()]
        lines.append("")
    if a or b:
        lines += [
            "The input files, one line (or block) per package (PORT is nginx's, chosen free per run):",
            "",
            "```",
            "engine.yaml:  channels: [http://127.0.0.1:PORT/]  platforms: [linux-64]  mirror_dir: engine-out",
            "urls.txt:     http://127.0.0.1:PORT/linux-64/NAME-VERSION-BUILD.conda",
            "SHA256SUMS:   <sha256>  NAME-VERSION-BUILD.conda",
            'curl.cfg:     url = "http://127.0.0.1:PORT/linux-64/NAME-VERSION-BUILD.conda"',
            '              output = "curl-z/NAME-VERSION-BUILD.conda"',
            "aria2.txt:    http://127.0.0.1:PORT/linux-64/NAME-VERSION-BUILD.conda",
            "                out=NAME-VERSION-BUILD.conda",
            "                checksum=sha-256=<sha256>",
            "```",
            "",
        ]
    if c is not None:
        lines += ["C, run in `build/bench/c`:", ""]
        for label, command in c.commands.items():
            config = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", c.configs[label].strip().replace("\n", "  "))
            lines.append(f"- {label}: `{_readable(command)}` with `{config}`")
        lines.append("")
    return lines


def _readable(command: str) -> str:
    """Commands as a person would type them: `python`, not the venv's full path."""
    return command.replace(sys.executable, "python")
