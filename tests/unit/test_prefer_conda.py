"""prefer_conda in the plan: a .tar.bz2 goes only where its own build is selected as .conda, usable."""

from __future__ import annotations

import dataclasses

from mirror_engine.explain import explain
from mirror_engine.filters import FilterRules, Verdict, judge, tar_bz2_twins
from mirror_engine.plan import plan_subdir
from tests.unit.test_repodata_plan import rec, upstream

PREFER = dataclasses.replace(FilterRules.build(), prefer_conda=True)


def test_a_tar_bz2_goes_where_the_same_build_is_there_as_conda() -> None:
    both = rec("zlib-1.3-h0.conda"), rec("zlib-1.3-h0.tar.bz2", "packages")
    only_bz2 = rec("zlib-1.2-h0.tar.bz2", "packages")  # an older build never repacked
    other_build = rec("zlib-1.3-h1.tar.bz2", "packages")
    plan = plan_subdir("linux-64", [upstream(0, *both, only_bz2, other_build)], PREFER, {})
    assert set(plan.wanted) == {"zlib-1.3-h0.conda", "zlib-1.2-h0.tar.bz2", "zlib-1.3-h1.tar.bz2"}
    assert plan.verdicts[0][Verdict.PREFER_CONDA] == 1
    unset = plan_subdir("linux-64", [upstream(0, *both, only_bz2, other_build)], FilterRules.build(), {})
    assert len(unset.wanted) == 4 and unset.verdicts[0][Verdict.PREFER_CONDA] == 0


def test_the_tar_bz2_stays_when_its_conda_cannot_be_mirrored_or_is_not_selected() -> None:
    unusable = rec("a-1-0.conda", sha256=None, md5=None), rec("a-1-0.tar.bz2", "packages")
    blacklisted = rec("b-1-0.conda"), rec("b-1-0.tar.bz2", "packages")
    rules = dataclasses.replace(FilterRules.build(blacklist=["b"]), prefer_conda=True)
    plan = plan_subdir("linux-64", [upstream(0, *unusable, *blacklisted)], rules, {})
    assert set(plan.wanted) == {"a-1-0.tar.bz2"}
    assert plan.verdicts[0][Verdict.PREFER_CONDA] == 0


def test_a_dependency_counts_as_selected_for_its_twin() -> None:
    pair = rec("c-1-0.conda"), rec("c-1-0.tar.bz2", "packages")
    rules = dataclasses.replace(FilterRules.build(pkg_list=["other"]), prefer_conda=True)
    plan = plan_subdir("linux-64", [upstream(0, *pair)], rules, {}, dependencies={"c-1-0.conda", "c-1-0.tar.bz2"})
    assert set(plan.wanted) == {"c-1-0.conda"}


def test_explain_names_prefer_conda() -> None:
    pair = [rec("d-1-0.conda"), rec("d-1-0.tar.bz2", "packages")]
    twins = tar_bz2_twins(pair, lambda record: judge(record, PREFER).kept)
    assert explain(pair[1], "linux-64", PREFER, twins) == (
        False,
        "dropped by prefer_conda: the same build is mirrored as .conda",
    )
    assert explain(pair[0], "linux-64", PREFER, twins) == (True, "selected")
