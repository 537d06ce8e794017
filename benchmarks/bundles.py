"""Air-gap bundles: `export` and `import` throughput against tar of the same tree."""

from __future__ import annotations

import shutil
import statistics
import sys
from pathlib import Path

from benchmarks.measure import measure
from benchmarks.workloads import small_files_channel


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
