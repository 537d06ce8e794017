"""What a run did, per channel and subdir, and how it is told to the user at the end."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from mirror_engine.filters import Verdict
from mirror_engine.plan import SubdirPlan
from mirror_engine.transfer import Outcome, TransferResult


@dataclass(slots=True)
class Row:
    """Counts for one channel's share of one destination subdir."""

    upstream: int = 0  # records in upstream's index, before the filters
    selected: int = 0
    to_fetch: int = 0
    to_fetch_bytes: int = 0
    present: int = 0
    downloaded: int = 0
    failed: int = 0
    nbytes: int = 0
    started: float | None = None
    finished: float | None = None


@dataclass(slots=True)
class RunSummary:
    channels: list[str]
    started: float
    finished: float | None = None
    rows: dict[tuple[int, str], Row] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, why)
    conflicts: list[str] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    verdicts: Counter[Verdict] = field(default_factory=Counter)  # every record judged, all channels
    repaired: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # subdirs skipped: same inputs, same files
    unsatisfied: dict[str, set[str]] = field(default_factory=dict)  # "subdir: dependency" -> who needs it
    left_out: dict[str, set[str]] = field(default_factory=dict)  # subdir -> index keys holding unknown records
    interrupted_by: str | None = None  # the signal that stopped the run

    def row(self, channel: int, subdir: str) -> Row:
        return self.rows.setdefault((channel, subdir), Row())

    def add_plan(self, plan: SubdirPlan, now: float | None = None) -> None:
        """Count a planned subdir; `now` starts the clock of its rows that have files to transfer, so that
        their MB/s covers the downloads, not only the time between the first and the last one to end."""
        for channel, counts in plan.verdicts.items():
            self.row(channel, plan.subdir).upstream += sum(counts.values())
            self.verdicts.update(counts)
        for channel, count in Counter(plan.trusted.values()).items():  # C-fast: 600,000 in one subdir
            row = self.row(channel, plan.subdir)
            row.selected += count
            row.present += count
        for item in plan.transfers:
            row = self.row(item.channel, plan.subdir)
            row.started = row.started if row.started is not None else now
            row.selected += 1
            if not item.check_existing:
                row.to_fetch += 1
                row.to_fetch_bytes += item.size
        for conflict in plan.conflicts:
            self.conflicts.append(
                f"{plan.subdir}/{conflict.filename}: {self.channels[conflict.other_channel]} differs from "
                f"{self.channels[conflict.kept_channel]} (kept, listed first)"
            )
        for key in left_out_of(plan):
            self.left_out.setdefault(plan.subdir, set()).add(key)
        for rejected in plan.rejected:
            self.failures.append((f"{self.channels[rejected.channel].rstrip('/')}/{plan.subdir}/{rejected.filename}",
                                  rejected.reason))  # fmt: skip

    def add_unchanged(self, subdir: str, counts: str) -> None:
        """Replay the counts of the plan that published an unchanged subdir: all its files are present."""
        replay = json.loads(counts)
        for channel, selected in replay.get("rows", {}).items():
            row = self.row(int(channel), subdir)
            row.selected += selected
            row.present += selected
        for channel, upstream in replay.get("upstream", {}).items():
            self.row(int(channel), subdir).upstream += upstream
        self.verdicts.update({Verdict(name): n for name, n in replay.get("verdicts", {}).items()})
        if replay.get("left_out"):
            self.left_out.setdefault(subdir, set()).update(replay["left_out"])
        self.unchanged.append(subdir)

    def add_result(self, result: TransferResult, now: float) -> None:
        item = result.item
        row = self.row(item.channel, item.subdir)
        row.started = row.started if row.started is not None else now
        row.finished = now
        if result.outcome is Outcome.PRESENT:
            row.present += 1
        elif result.outcome is Outcome.DOWNLOADED:
            row.downloaded += 1
            row.nbytes += result.nbytes
            if item.check_existing:  # a copy of the right size was there, with the wrong bytes
                self.repaired.append(f"{item.subdir}/{item.filename}")
        else:
            row.failed += 1
            self.failures.append((f"{item.subdir}/{item.filename}", result.error))

    def subdir_failed(self, subdir: str, reason: str) -> None:
        self.failures.append((f"{subdir} (not published)", reason))

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 143 if self.interrupted_by == "SIGTERM" else 130
        return 1 if self.failures else 0

    @property
    def downloaded_bytes(self) -> int:
        return sum(row.nbytes for row in self.rows.values())


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


def format_summary(summary: RunSummary) -> str:
    elapsed = (summary.finished or summary.started) - summary.started
    header = f"{'channel/subdir':<48} {'selected':>8} {'present':>8} {'fetched':>8} {'failed':>7} " \
             f"{'bytes':>12} {'secs':>7} {'MB/s':>7}"  # fmt: skip
    lines = [header, "-" * len(header)]
    for (channel, subdir), row in sorted(summary.rows.items()):
        secs = (row.finished - row.started) if row.started is not None and row.finished is not None else 0.0
        rate = row.nbytes / secs / 1e6 if secs > 0 else 0.0
        name = f"{summary.channels[channel].rstrip('/')}/{subdir}"
        if len(name) > 48:
            name = "…" + name[-47:]
        lines.append(
            f"{name:<48} {row.selected:>8} {row.present:>8} {row.downloaded:>8} {row.failed:>7} "
            f"{_mb(row.nbytes):>12} {secs:>7.1f} {rate:>7.1f}"
        )
    total = summary.downloaded_bytes
    rate = total / elapsed / 1e6 if elapsed > 0 else 0.0
    lines.append(f"downloaded {_mb(total)} in {elapsed:.1f}s ({rate:.1f} MB/s); "
                 f"published {', '.join(summary.published) or 'nothing'}")  # fmt: skip
    if summary.unchanged:
        lines.append(f"unchanged upstream and on disk, index kept: {', '.join(summary.unchanged)}")
    lines.extend(_filter_line(summary.verdicts))
    deleted = ", ".join(f"{subdir}: {count}" for subdir, count in sorted(summary.deleted.items()) if count)
    if deleted:
        lines.append(f"deleted files no longer selected: {deleted}")
    if summary.unsatisfied:
        lines.append(f"{len(summary.unsatisfied)} dependencies no mirrored package satisfies (filters or upstream):")
        lines.extend(
            f"  {dep} (needed by {', '.join(sorted(who))})" for dep, who in sorted(summary.unsatisfied.items())
        )
    lines.extend(_left_out_lines(summary.left_out))
    if summary.repaired:
        lines.append(f"repaired {len(summary.repaired)} file(s) whose bytes on disk did not match their record:")
        lines.extend(f"  {name}" for name in summary.repaired)
    if summary.conflicts:
        lines.append(f"{len(summary.conflicts)} file name conflict(s) between channels:")
        lines.extend(f"  {conflict}" for conflict in summary.conflicts)
    if summary.failures:
        lines.append(f"{len(summary.failures)} failure(s):")
        lines.extend(f"  {what}: {why}" for what, why in summary.failures)
    if summary.interrupted_by is not None:
        lines.append(f"interrupted by {summary.interrupted_by}: run the same command again to resume")
    return "\n".join(lines)


def format_plan(summary: RunSummary, stale: dict[str, int]) -> str:
    """The dry run's report: what a run would fetch and delete, without touching anything."""
    header = f"{'channel/subdir':<40} {'upstream':>8} {'selected':>8} {'present':>8} {'to check':>8} {'to fetch':>8} " \
             f"{'bytes':>12}"  # fmt: skip
    lines = [header, "-" * len(header)]
    for (channel, subdir), row in sorted(summary.rows.items()):
        name = f"{summary.channels[channel].rstrip('/')}/{subdir}"
        to_check = row.selected - row.to_fetch - row.present
        lines.append(f"{name[-40:]:<40} {row.upstream:>8} {row.selected:>8} {row.present:>8} {to_check:>8} "
                     f"{row.to_fetch:>8} {_mb(row.to_fetch_bytes):>12}")  # fmt: skip
    total = sum(row.to_fetch_bytes for row in summary.rows.values())
    lines.append(f"would download {sum(r.to_fetch for r in summary.rows.values())} files, {_mb(total)}")
    lines.extend(_filter_line(summary.verdicts))
    deleted = ", ".join(f"{subdir}: {count}" for subdir, count in sorted(stale.items()) if count)
    if deleted:
        lines.append(f"would delete files no longer selected: {deleted}")
    if summary.conflicts:
        lines.extend(f"conflict: {conflict}" for conflict in summary.conflicts)
    if summary.unchanged:
        lines.append(f"unchanged upstream and on disk, nothing to do: {', '.join(summary.unchanged)}")
    lines.extend(_left_out_lines(summary.left_out))
    lines.extend(f"problem: {what}: {why}" for what, why in summary.failures)
    return "\n".join(lines)


def _filter_line(verdicts: Counter[Verdict]) -> list[str]:
    """What the filters did, in their order of evaluation: `filters: 3 dropped by python_versions, ...`."""
    parts = [
        f"{verdicts[verdict]} {verdict.value}"
        for verdict in Verdict
        if verdict is not Verdict.KEPT and verdicts[verdict]
    ]
    return [f"filters: {'; '.join(parts)}"] if parts else []


def left_out_of(plan: SubdirPlan) -> list[str]:
    """The keys of the subdir's upstream indexes left out of what it publishes: records of a shape we do
    not know (a future `v4`, a new v3 bucket), which we can neither filter nor check."""
    return sorted({key for repodata in plan.upstream for key in repodata.dropped})


def _left_out_lines(left_out: dict[str, set[str]]) -> list[str]:
    if not left_out:
        return []
    count = sum(len(keys) for keys in left_out.values())
    return [
        f"{count} index key(s) holding records of an unknown shape, left out of the published index:",
        *(f"  {subdir}: {', '.join(sorted(keys))}" for subdir, keys in sorted(left_out.items())),
    ]


def plan_counts(plan: SubdirPlan) -> str:
    """A plan's summary counts as JSON, kept in the journal so that an unchanged subdir can be reported."""
    rows: Counter[int] = Counter(plan.trusted.values())
    rows.update(item.channel for item in plan.transfers)
    verdicts: Counter[Verdict] = Counter()
    for counts in plan.verdicts.values():
        verdicts.update(counts)
    upstream = {channel: sum(counts.values()) for channel, counts in plan.verdicts.items()}
    doc: dict[str, object] = {
        "rows": dict(rows),
        "upstream": upstream,
        "verdicts": {verdict.value: n for verdict, n in verdicts.items()},
    }
    if left_out := left_out_of(plan):
        doc["left_out"] = left_out
    return json.dumps(doc)
