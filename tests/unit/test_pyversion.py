"""Which Python minor a record was built for: its own version, its python pin, or its build tag."""

from __future__ import annotations

from typing import Any

import pytest

from mirror_engine.pyversion import pinned_minor, record_python_minor
from mirror_engine.repodata import Record


def record(name: str = "pkg", version: str = "1.0", build: str = "h1234_0", **extra: Any) -> Record:
    raw: dict[str, Any] = {"name": name, "version": version, "build": build, **extra}
    return Record.of(f"{name}-{version}-{build}.conda", "packages.conda", raw)


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        # the python package itself: its own major.minor
        pytest.param(record("python", "3.10.14", "h955ad1f_1"), "3.10", id="python-3.10.14"),
        pytest.param(record("python", "2.7.18", "h42bf7aa_3"), "2.7", id="python-2.7.18"),
        pytest.param(record("Python", "3.8.0", "h0_0"), "3.8", id="python-name-any-case"),
        # the single minor its python dependency pins
        pytest.param(record(depends=["python 3.8.*"]), "3.8", id="dep-3.8.*"),
        pytest.param(record(depends=["python >=3.8,<3.9.0a0"]), "3.8", id="dep-range-3.8"),
        pytest.param(record(depends=["python 3.8"]), "3.8", id="dep-3.8"),
        pytest.param(record(depends=["python_abi 3.8.* *_cp38"]), "3.8", id="dep-python_abi"),
        pytest.param(record(depends=["python >=3.10,<3.11.0a0"]), "3.10", id="dep-range-3.10"),
        pytest.param(record(depends=["libgcc-ng >=11", "python >=3.11,<3.12.0a0"]), "3.11", id="dep-not-first"),
        pytest.param(record(depends=["python >=3.8", "python_abi 3.9.* *_cp39"]), "3.9", id="open-then-abi"),
        # the pin wins over the build tag
        pytest.param(record(build="py27_0", depends=["python 3.8.*"]), "3.8", id="pin-beats-build-tag"),
        # the tag in its build string
        pytest.param(record(build="py38h1234_0"), "3.8", id="build-py38h1234_0"),
        pytest.param(record(build="py310_0"), "3.10", id="build-py310_0"),
        pytest.param(record(build="np111py27_0"), "2.7", id="build-np111py27_0"),
        pytest.param(record(build="py38h1234_0", depends=["python"]), "3.8", id="bare-python-dep-then-tag"),
        pytest.param(record(build="py312h1234_0", depends=["python >=3.6"]), "3.12", id="open-dep-then-tag"),
        # nothing pinned: works with any Python
        pytest.param(record(), None, id="no-python-dep"),
        pytest.param(record(depends=["libzlib >=1.2.13"]), None, id="other-deps-only"),
        pytest.param(record(build="pyhd8ed1ab_0", noarch="python", depends=["python 3.8.*"]), None, id="noarch-py"),
        pytest.param(record(build="pyhd8ed1ab_0", depends=["python >=3.6"]), None, id="dep->=3.6"),
        pytest.param(record(depends=["python >=2.7,<4"]), None, id="dep->=2.7,<4"),
        pytest.param(record(depends=["python 3.8.*|3.9.*"]), None, id="dep-either-of-two"),
        pytest.param(record("python", "3", "h0_0"), None, id="python-without-minor"),
    ],
)
def test_record_python_minor(rec: Record, expected: str | None) -> None:
    assert record_python_minor(rec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("3.8.*", (3, 8)),
        ("3.8", (3, 8)),
        ("3.8.10", (3, 8)),
        ("==3.8", (3, 8)),
        (">=3.8,<3.9.0a0", (3, 8)),
        (">=3.8,<3.9", (3, 8)),
        (">=3.8,<3.9.0", (3, 8)),
        ("<3.9.0a0,>=3.8", (3, 8)),
        (">=3.10,<3.11.0a0", (3, 10)),
        (">=3.9,<3.10.0a0", (3, 9)),
        (">=3.8.2,<3.8.5", (3, 8)),
        ("3.10.*", (3, 10)),
        (">=3.6", None),
        ("<3.9", None),
        (">=2.7,<4", None),
        (">=3.8,<3.10.0a0", None),  # 3.8 and 3.9
        (">=3.8,<3.9.5", None),  # 3.8 and part of 3.9
        ("3.8.*|3.9.*", None),
        ("3", None),
        ("", None),
        ("*", None),
        ("~=3.8", None),  # conda's ~=3.8 is >=3.8,==3.*: 3.9 and later satisfy it too
    ],
)
def test_pinned_minor(spec: str, expected: tuple[int, int] | None) -> None:
    assert pinned_minor(spec) == expected
