"""Section C: a conda-forge-scale index (600,000 records, one subdir), where the index work is the cost.

C1: a pkg_list of 20 names over that index: fetch and parse it all, fetch those names' few small files.
C2: every record selected and published, with every file already present. The files are empty (size 0,
sha256 of nothing) and lie in the mirror with a journal that vouches for them, as a run that was
interrupted after its last download leaves it; the measured run must fetch, parse, filter and plan all
600,000 records, trust each file from the journal and the listing, and publish the whole index. Fetching
600,000 files, even empty ones, would measure per-file cost instead (section A does that), and at the
engine's rate for empty files it would take many minutes per run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.measure import Sample, Stats, engine, measure
from benchmarks.servers import nginx
from benchmarks.throughput import warm_cache
from benchmarks.workloads import REPO, IndexSet, child_env, index_set

C_SPEC: dict[str, object] = {"kind": "index", "records": 600_000, "names": 25_000, "pkg_list": 20, "seed": 13}
C1 = "C1: pkg_list of 20 names"
C2 = "C2: everything selected, files present"
SUBDIR = "linux-64"
CHANNEL = "anaconda"  # the default dest_channel, which both configs keep


@dataclass
class IndexResults:
    index: IndexSet
    stats: dict[str, Stats] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)


def section_c(work: Path, repeat: int) -> IndexResults:
    index = index_set(work / "workloads" / "c-600k", C_SPEC)
    folder = work / "c"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    results = IndexResults(index)
    runs: dict[str, list[Sample]] = {C1: [], C2: []}
    # One nginx over the workload folder: c1/ and c2/ are two channels.
    with nginx(index.c1.parent, folder / "nginx") as url:
        c1_config = folder / "c1.yaml"
        names = ", ".join(index.pkg_list)
        c1_config.write_text(f"channels: [{url}c1/]\nplatforms: [linux-64]\npkg_list: [{names}]\nmirror_dir: c1-out\n")
        c2_config = folder / "c2.yaml"
        mirror = index.c2_destination.resolve()
        c2_config.write_text(f"channels: [{url}c2/]\nplatforms: [linux-64]\nmirror_dir: {mirror}\n")
        pristine = prepare_c2(index, folder)
        for channel in (index.c1, index.c2):  # into page cache, untimed, as the packages are in A and B
            for name in ("repodata.json", "repodata.json.zst"):
                warm_cache(channel / SUBDIR / name)
        c1_command = engine("c1.yaml", "-q", "--progress", "none", "--report", "c1-report.json")
        c2_command = engine("c2.yaml", "-q", "--progress", "none", "--report", "c2-report.json")
        for _ in range(repeat):
            shutil.rmtree(folder / "c1-out", ignore_errors=True)
            os.sync()
            runs[C1].append(measure(c1_command, folder))
            check_report(folder / "c1-report.json", C1, downloaded=index.c1_files, present=0)
            reset_c2(index, pristine)
            os.sync()
            runs[C2].append(measure(c2_command, folder))
            check_report(folder / "c2-report.json", C2, downloaded=0, present=index.records)
        results.configs = {C1: c1_config.read_text(), C2: c2_config.read_text()}
    results.stats = {label: Stats(tuple(samples)) for label, samples in runs.items()}
    results.commands = {C1: shlex.join(c1_command), C2: shlex.join(c2_command)}
    reset_c2(index, pristine)  # leave the cached workload as it was made
    return results


def prepare_c2(index: IndexSet, folder: Path) -> Path:
    """Seed C2's journal once (in a child, with the engine's Journal) and keep a copy to restore per run."""
    reset_c2(index, None)
    subprocess.run(
        [sys.executable, "-m", "benchmarks.workloads", "seed-journal", str(index.c2_destination), CHANNEL, SUBDIR],
        cwd=REPO, env=child_env(), check=True,
    )  # fmt: skip
    pristine = folder / "c2-state"
    shutil.copytree(index.c2_destination / ".mirror_engine", pristine)
    return pristine


def reset_c2(index: IndexSet, state: Path | None) -> None:
    """Back to the state before a run: the empty package files only (what a run published goes), and the
    seeded journal (`state`) in place, or none."""
    mirror = index.c2_destination
    shutil.rmtree(mirror / ".mirror_engine", ignore_errors=True)
    for entry in os.scandir(mirror / CHANNEL):
        if entry.name != SUBDIR:
            _remove(Path(entry.path))
    packages = 0
    for entry in os.scandir(mirror / CHANNEL / SUBDIR):
        if entry.name.endswith((".conda", ".tar.bz2")) and not entry.name.startswith(".") and entry.is_file():
            packages += 1
        else:
            _remove(Path(entry.path))
    if packages != index.records:
        raise SystemExit(f"{mirror}: {packages} package files, not {index.records}; delete the folder to remake it")
    if state is not None:
        shutil.copytree(state, mirror / ".mirror_engine")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def check_report(path: Path, label: str, *, downloaded: int, present: int) -> None:
    """The run did what the section says it measures: so many files fetched, so many trusted, no failure."""
    report = json.loads(path.read_text())
    got = (sum(row["downloaded"] for row in report["rows"]), sum(row["present"] for row in report["rows"]))
    if got != (downloaded, present) or report["failures"] or SUBDIR not in report["published"]:
        raise SystemExit(
            f"{label}: expected {downloaded} downloaded and {present} present with {SUBDIR} published; the "
            f"report says {got[0]} and {got[1]}, published {report['published']}, failures {report['failures'][:3]}"
        )


def table(results: IndexResults, rss_floor: float) -> list[str]:
    index = results.index
    repeats = min(len(stats.samples) for stats in results.stats.values())
    lines = [
        f"### C: one subdir of {index.records:,} records ({index.names:,} names), index work only",
        "",
        f"`linux-64/repodata.json` is {index.json_bytes / 1e6:,.0f} MB, served as `repodata.json.zst` "
        f"({index.zst_bytes / 1e6:,.0f} MB) beside it; `packages` and `packages.conda` both used. C1 fetches "
        f"{index.c1_files} small files ({index.c1_bytes / 1e6:.1f} MB) of the {len(index.pkg_list)} names in "
        f"pkg_list; C2 fetches none (see below). Medians of {repeats} runs.",
        "",
        "| run | median s | min s | CPU % | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for label, stats in results.stats.items():
        rss = f"{stats.rss_mb:,.0f}" if stats.rss_mb > rss_floor * 1.02 else f"≤ {rss_floor:.0f}"
        lines.append(f"| {label} | {stats.median:.2f} | {stats.fastest:.2f} | {stats.cpu_percent:.0f} | {rss} |")
    return [*lines, ""]
