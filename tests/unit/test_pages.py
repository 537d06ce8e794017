"""The HTML pages: upstream text is escaped, and the pages say what the mirror holds."""

from __future__ import annotations

from mirror_engine.pages import SubdirFacts, channel_page, runs_page, subdir_page
from mirror_engine.repodata import Record

EVIL = "<script>alert(1)</script>"


def record(name: str, license_text: str = "MIT", timestamp: int = 1_700_000_000_000) -> Record:
    raw = {"name": name, "version": "1.0", "build": "0", "size": 1234, "sha256": "ab" * 32, "license": license_text,
           "timestamp": timestamp}  # fmt: skip
    return Record.of(f"{name}-1.0-0.conda", "packages.conda", raw)


def test_upstream_text_is_escaped_everywhere() -> None:
    page = subdir_page("demo", "noarch", [record("evil", EVIL), record("a<b>", "MIT")]).decode()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>" not in page and "a&lt;b&gt;" in page
    channel = channel_page("demo", [SubdirFacts("noarch", 1, 1, 10)], {"x'><img src=x>": ["noarch"]}, [EVIL], None)
    assert EVIL not in channel and "<img" not in channel
    runs = runs_page([{"failures": [{"what": "noarch/x", "why": EVIL}], "started_at": 0}])
    assert EVIL not in runs


def test_subdir_page_lists_files_newest_first_per_name_with_sha256() -> None:
    page = subdir_page(
        "demo", "noarch", [record("b"), record("a", timestamp=1), record("a", timestamp=2_000_000_000_000)]
    ).decode()
    rows = [line for line in page.split("<tr data-name=")[1:]]
    assert [row.split("'")[1] for row in rows] == ["a", "a", "b"]
    assert "2033-05-18" in rows[0] and "ab" * 32 in page


def test_channel_page_has_a_search_box_and_every_package() -> None:
    where = {"numpy": ["linux-64"], "zlib": ["linux-64"]}
    page = channel_page("demo", [SubdirFacts("linux-64", 2, 3, 2_000_000)], where, ["all platforms"], 1_700_000_000.0)
    assert "id='search'" in page and "function filter" in page
    assert "data-name='numpy'" in page and "data-name='zlib'" in page
    assert "2.0 MB" in page and "2023-11-14" in page and "<li>all platforms</li>" in page
