"""The end-of-run table: a subdir's seconds and MB/s run from its plan to its last file."""

from __future__ import annotations

from mirror_engine.plan import SubdirPlan
from mirror_engine.summary import RunSummary, format_summary
from mirror_engine.transfer import Outcome, TransferItem, TransferResult


def test_a_subdirs_rate_counts_from_its_plan_not_from_its_first_finished_file() -> None:
    item = TransferItem("http://x/noarch/a-1-0.conda", "noarch", "a-1-0.conda", 2_000_000, "ab" * 32, None, 0)
    plan = SubdirPlan(subdir="noarch", upstream=(), wanted={}, transfers=(item,), stale=())
    summary = RunSummary(channels=["http://x/"], started=0.0)
    summary.add_plan(plan, now=10.0)
    summary.add_result(TransferResult(item, Outcome.DOWNLOADED, nbytes=2_000_000), now=12.0)
    row = format_summary(summary).splitlines()[2].split()
    assert row[-2:] == ["2.0", "1.0"]  # secs, MB/s: one file ending alone is not an instant at infinite speed
