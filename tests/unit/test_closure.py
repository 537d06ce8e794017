"""The dependency closure: satisfied dependencies add nothing, unsatisfied ones add every fitting candidate."""

from __future__ import annotations

from mirror_engine.closure import Candidate, close_over, universes
from mirror_engine.repodata import Record


def rec(name: str, version: str, build: str = "0", depends: tuple[str, ...] = (), subdir: str = "linux-64") -> Record:
    raw = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": list(depends),
        "subdir": subdir,
    }
    return Record.of(f"{name}-{version}-{build}.conda", "packages.conda", raw)


def everything(record: Record) -> bool:
    return True


def test_unsatisfied_dependency_adds_every_fitting_version_and_their_needs() -> None:
    app = rec("app", "1", depends=("lib >=2", "__glibc >=2.17"))
    libs = [rec("lib", "1"), rec("lib", "2", depends=("zlib",)), rec("lib", "3", depends=("zlib",))]
    zlib = rec("zlib", "1.3")
    universe = [Candidate("linux-64", r) for r in (app, *libs, zlib)]
    closure = close_over([Candidate("linux-64", app)], universe, everything)
    assert closure.added == {"linux-64": {"lib-2-0.conda", "lib-3-0.conda", "zlib-1.3-0.conda"}}
    assert closure.unsatisfied == {}  # __glibc is the client machine's, never the channel's


def test_a_satisfied_dependency_adds_nothing() -> None:
    app = rec("app", "1", depends=("lib >=2",))
    lib3 = rec("lib", "3")
    universe = [Candidate("linux-64", r) for r in (app, rec("lib", "2"), lib3)]
    closure = close_over([Candidate("linux-64", app), Candidate("linux-64", lib3)], universe, everything)
    assert closure.added == {}


def test_disallowed_candidates_are_not_added_and_the_need_is_reported() -> None:
    app = rec("app", "1", depends=("gpl-lib",))
    universe = [Candidate("linux-64", r) for r in (app, rec("gpl-lib", "1"))]
    closure = close_over([Candidate("linux-64", app)], universe, lambda r: r.name != "gpl-lib")
    assert closure.added == {}
    assert closure.unsatisfied == {"gpl-lib": {"app"}}


def test_build_strings_and_noarch_count() -> None:
    tool = rec("tool", "1", subdir="noarch", depends=("python 3.11.* *_cpython",))
    pythons = [
        rec("python", "3.11.9", "h0_0_cpython"),
        rec("python", "3.12.1", "h0_0_cpython"),
        rec("python", "3.11.9", "pypy"),
    ]
    views = universes({"noarch": [tool], "linux-64": pythons})
    assert set(views) == {"linux-64"}
    closure = close_over([Candidate("noarch", tool)], views["linux-64"], everything)
    assert closure.added == {"linux-64": {"python-3.11.9-h0_0_cpython.conda"}}
