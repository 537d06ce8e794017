"""A run's outcome for machines: the JSON report (`--report`) and Prometheus textfile metrics (`--metrics-file`)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from mirror_engine.pages import runs_page
from mirror_engine.summary import RunSummary

REPORT_VERSION = 1


def report_json(summary: RunSummary, *, mirror: str, started_at: float) -> dict[str, Any]:
    """Stable keys (documented in docs/operations.md); counts are files unless a key says bytes."""
    rows = [
        {
            "channel": summary.channels[channel],
            "subdir": subdir,
            "selected": row.selected,
            "present": row.present,
            "downloaded": row.downloaded,
            "failed": row.failed,
            "downloaded_bytes": row.nbytes,
        }
        for (channel, subdir), row in sorted(summary.rows.items())
    ]
    return {
        "report_version": REPORT_VERSION,
        "mirror": mirror,
        "started_at": started_at,
        "duration_seconds": round((summary.finished or summary.started) - summary.started, 3),
        "exit_code": summary.exit_code,
        "interrupted_by": summary.interrupted_by,
        "rows": rows,
        "downloaded_bytes": summary.downloaded_bytes,
        "published": sorted(summary.published),
        "unchanged": sorted(summary.unchanged),
        "deleted": dict(sorted(summary.deleted.items())),
        "filters": {verdict.value: n for verdict, n in summary.verdicts.items()},
        "failures": [{"what": what, "why": why} for what, why in summary.failures],
        "conflicts": list(summary.conflicts),
        "repaired": list(summary.repaired),
        "unsatisfied": {dep: sorted(who) for dep, who in sorted(summary.unsatisfied.items())},
        "left_out": {subdir: sorted(keys) for subdir, keys in sorted(summary.left_out.items())},
    }


def plan_json(summary: RunSummary, stale: dict[str, int]) -> dict[str, Any]:
    """`plan --json`: what a run would do, without doing it."""
    return {
        "report_version": REPORT_VERSION,
        "rows": [
            {
                "channel": summary.channels[channel],
                "subdir": subdir,
                "upstream": row.upstream,
                "selected": row.selected,
                "present": row.present,
                "to_check": row.selected - row.to_fetch - row.present,
                "to_fetch": row.to_fetch,
                "to_fetch_bytes": row.to_fetch_bytes,
            }
            for (channel, subdir), row in sorted(summary.rows.items())
        ],
        "filters": {verdict.value: n for verdict, n in summary.verdicts.items()},
        "to_delete": {subdir: count for subdir, count in sorted(stale.items()) if count},
        "unchanged": sorted(summary.unchanged),
        "conflicts": list(summary.conflicts),
        "problems": [{"what": what, "why": why} for what, why in summary.failures],
        "unsatisfied": {dep: sorted(who) for dep, who in sorted(summary.unsatisfied.items())},
        "left_out": {subdir: sorted(keys) for subdir, keys in sorted(summary.left_out.items())},
    }


RUNS_KEPT = 200


def record_run(state_dir: Path, mirror_dir: Path, report: dict[str, Any], *, page: bool) -> None:
    """Keep the report in the run history (`<state_dir>/runs.jsonl`) and redraw `<mirror_dir>/runs.html`."""
    history = state_dir / "runs.jsonl"
    lines = history.read_text().splitlines() if history.exists() else []
    lines = [*lines, json.dumps(report, sort_keys=True)][-RUNS_KEPT:]
    state_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(history, "\n".join(lines) + "\n")
    if page:
        runs = []
        for line in lines:
            try:
                runs.append(json.loads(line))
            except ValueError:  # a line cut by a crash: the others still tell the story
                continue
        _write_atomically(mirror_dir / "runs.html", runs_page(runs))


def write_report(path: Path, report: dict[str, Any]) -> None:
    _write_atomically(path, json.dumps(report, indent=2, sort_keys=True) + "\n")


_LAST_SUCCESS = re.compile(r"^mirror_engine_last_success_timestamp_seconds\{[^}]*\} (\S+)$", re.MULTILINE)


def write_metrics(path: Path, summary: RunSummary, *, channel: str, finished_at: float, running: bool = False) -> None:
    """Prometheus text format for node_exporter's textfile collector; the last success survives failed runs.

    While `running`, it shows progress so far: the last run's end and success times are left as they were.
    """
    label = f'channel="{channel}"'
    previous = _previous_last_success(path)
    last_success = finished_at if summary.exit_code == 0 and not running else previous
    duration = (summary.finished or time.monotonic()) - summary.started
    rows = summary.rows.values()
    lines = [
        "# HELP mirror_engine_files Files of the last run, by outcome.",
        "# TYPE mirror_engine_files gauge",
        *(
            f'mirror_engine_files{{{label},outcome="{outcome}"}} {count}'
            for outcome, count in (
                ("selected", sum(r.selected for r in rows)),
                ("present", sum(r.present for r in rows)),
                ("downloaded", sum(r.downloaded for r in rows)),
                ("failed", sum(r.failed for r in rows)),
            )
        ),
        "# HELP mirror_engine_downloaded_bytes Bytes downloaded by the last run.",
        "# TYPE mirror_engine_downloaded_bytes gauge",
        f"mirror_engine_downloaded_bytes{{{label}}} {summary.downloaded_bytes}",
        "# HELP mirror_engine_failures Failures (files and subdirs) of the last run.",
        "# TYPE mirror_engine_failures gauge",
        f"mirror_engine_failures{{{label}}} {len(summary.failures)}",
        "# HELP mirror_engine_run_duration_seconds Wall time of the last run.",
        "# TYPE mirror_engine_run_duration_seconds gauge",
        f"mirror_engine_run_duration_seconds{{{label}}} {duration:.3f}",
        "# HELP mirror_engine_running 1 while a run is writing this file, 0 once it has ended.",
        "# TYPE mirror_engine_running gauge",
        f"mirror_engine_running{{{label}}} {int(running)}",
        "# HELP mirror_engine_exit_code Exit status of the last run (0 is success).",
        "# TYPE mirror_engine_exit_code gauge",
        f"mirror_engine_exit_code{{{label}}} {summary.exit_code}",
        "# HELP mirror_engine_last_run_timestamp_seconds When the last run ended (or, while running, now).",
        "# TYPE mirror_engine_last_run_timestamp_seconds gauge",
        f"mirror_engine_last_run_timestamp_seconds{{{label}}} {finished_at:.0f}",
        "# HELP mirror_engine_last_success_timestamp_seconds When a run last ended with everything mirrored.",
        "# TYPE mirror_engine_last_success_timestamp_seconds gauge",
        f"mirror_engine_last_success_timestamp_seconds{{{label}}} {last_success:.0f}",
    ]
    _write_atomically(path, "\n".join(lines) + "\n")


def _previous_last_success(path: Path) -> float:
    try:
        match = _LAST_SUCCESS.search(path.read_text())
    except OSError:
        return 0.0
    return float(match.group(1)) if match else 0.0


def _write_atomically(path: Path, text: str) -> None:
    """The collector or a script may read at any moment: it sees the old file or the new one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


class JsonLogFormatter(logging.Formatter):
    """`--log-format json`: one JSON object per line for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )
