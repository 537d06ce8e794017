"""Pure: the static HTML pages a mirror publishes beside its indexes; every upstream string is escaped.

No external assets and one small inline script (the search box), so the pages work from file:// and
behind an air gap.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from mirror_engine.gcpause import without_gc
from mirror_engine.repodata import Record, RecordDetails, Writable

if TYPE_CHECKING:
    from mirror_engine.config import MirrorConfig

STYLE = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}th{background:#f4f4f4}"
    "code{font-size:12px}input{font-size:14px;padding:.3em;width:20em;margin:.5em 0}.num{text-align:right}"
)
SEARCH = (
    "<script>function filter(box){var q=box.value.toLowerCase();"
    "document.querySelectorAll('tr[data-name]').forEach(function(r){"
    "r.style.display=r.dataset.name.indexOf(q)>=0?'':'none';});}</script>"
)


@dataclass(frozen=True, slots=True)
class SubdirFacts:
    subdir: str
    packages: int  # distinct names
    files: int
    size: int


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


_HTML_SPECIAL = re.compile("[&<>\"']")
_ROWS = "\x00rows\x00"  # where a subdir page's rows go: no escaped text can hold a NUL


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp)) if timestamp else "never"


def filters_in_words(config: MirrorConfig) -> list[str]:
    """The config's filters as a reader would say them."""
    words = [f"platforms: {', '.join(config.platforms)} (and noarch)" if config.platforms else "all platforms"]
    if config.python_versions:
        words.append(f"only builds for Python {', '.join(config.python_versions)}")
    if config.license_blacklist:
        words.append(f"license families excluded: {', '.join(config.license_blacklist)}")
    if config.blacklist:
        words.append(f"packages excluded: {', '.join(config.blacklist)}")
    if config.whitelist:
        words.append(f"put back despite the exclusions: {', '.join(config.whitelist)}")
    if config.pkg_list:
        words.append(f"only these packages: {', '.join(config.pkg_list)}")
    if config.include_dependencies:
        words.append("with the dependencies they need")
    if config.prefer_conda:
        words.append("a .tar.bz2 left out where the same build is here as .conda")
    return words


def channel_page(
    channel: str,
    subdirs: Iterable[SubdirFacts],
    names: Mapping[str, Iterable[str]],
    filters: Iterable[str],
    last_success: float | None,
) -> str:
    """`<channel>/index.html`: subdirs, the filters in words, and a searchable table of package names."""
    rows = "".join(
        f"<tr><td><a href='{escape(s.subdir)}/index.html'>{escape(s.subdir)}</a></td>"
        f"<td class='num'>{s.packages}</td><td class='num'>{s.files}</td><td class='num'>{_mb(s.size)}</td></tr>"
        for s in subdirs
    )
    packages = "".join(
        f"<tr data-name='{escape(name.lower())}'><td>{escape(name)}</td>"
        f"<td>{escape(', '.join(sorted(where)))}</td></tr>"
        for name, where in sorted(names.items())
    )
    items = "".join(f"<li>{escape(word)}</li>" for word in filters)
    body = (
        f"<h1>{escape(channel)}</h1><p>Last successful run: {escape(_when(last_success))}</p><ul>{items}</ul>"
        f"<table><tr><th>subdir</th><th>packages</th><th>files</th><th>size</th></tr>{rows}</table>"
        "<h2>Packages</h2><input id='search' placeholder='search package names' oninput='filter(this)'>"
        f"<table id='packages'><tr><th>name</th><th>subdirs</th></tr>{packages}</table>{SEARCH}"
    )
    return _page(channel, body)


def subdir_page(channel: str, subdir: str, records: Iterable[Record]) -> bytes:
    """`write_subdir_page` into bytes."""
    page = io.BytesIO()
    write_subdir_page(page, channel, subdir, records)
    return page.getvalue()  # the buffer itself, not a copy


@without_gc
def write_subdir_page(out: Writable, channel: str, subdir: str, records: Iterable[Record]) -> None:
    """Write `<channel>/<subdir>/index.html`, encoded, to `out`: every file, newest first per name, sha256
    ready to copy.

    Written a thousand rows at a time: 600,000 rows are 200 MB of HTML, which need not lie in memory.
    """
    body = (
        f"<h1><a href='../index.html'>{escape(channel)}</a> / {escape(subdir)}</h1>"
        "<input id='search' placeholder='search package names' oninput='filter(this)'>"
        "<table><tr><th>file</th><th>version</th><th>build</th><th>size</th><th>license</th><th>built</th>"
        f"<th>sha256</th></tr>{_ROWS}</table>{SEARCH}"
    )
    head, tail = _page(f"{channel}/{subdir}", body).split(_ROWS)
    out.write(head.encode())
    rows: list[str] = []
    for group in _by_name(records):
        rows += [_file_row(record, details) for record, details in _newest_first(group)]
        if len(rows) >= 1000:
            out.write("".join(rows).encode())
            rows = []
    out.write("".join(rows).encode())
    out.write(tail.encode())


def _by_name(records: Iterable[Record]) -> list[list[Record]]:
    """Records grouped by lower-cased name, groups in name order, each in the order given."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.name.lower(), []).append(record)
    return [groups[name] for name in sorted(groups)]


def _newest_first(group: list[Record]) -> list[tuple[Record, RecordDetails]]:
    """One name's records with their details, newest build first. Details are decoded one name at a time:
    decoded for the whole page at once they held 300 MB, and decoded once to sort and again for the row,
    they took 40 % of the page's time."""
    pairs = [(record, record.details) for record in group]
    pairs.sort(key=lambda pair: -pair[1].timestamp_ms)
    return pairs


def _file_row(record: Record, details: RecordDetails) -> str:
    texts = [record.name.lower(), record.filename, details.version, details.build, details.license or ""]
    # One search instead of five escapes: a subdir page can have 600,000 rows, and nearly none needs one.
    if _HTML_SPECIAL.search("".join(texts)):
        texts = [escape(text) for text in texts]
    name, filename, version, build, license_text = texts
    built = details.timestamp_ms / 1000 or None
    return (
        f"<tr data-name='{name}'><td><a href='{filename}'>{filename}</a></td><td>{version}</td><td>{build}</td>"
        f"<td class='num'>{_mb(record.size or 0)}</td><td>{license_text}</td><td>{_when(built)}</td>"
        f"<td><code>{record.sha256 or record.md5 or ''}</code></td></tr>"  # checked hex digests
    )


def runs_page(runs: Iterable[Mapping[str, Any]]) -> str:
    """`<mirror_dir>/runs.html`: per run its time, duration, bytes, MB/s, files, failures; an inline SVG chart."""
    runs = list(runs)
    rates = [float(r.get("downloaded_bytes", 0)) / max(float(r.get("duration_seconds", 0)), 1e-9) / 1e6 for r in runs]
    top = max(rates, default=0.0) or 1.0
    bars = "".join(
        f'<rect x="{10 + 22 * i}" y="{110 - 100 * rate / top:.1f}" width="18" height="{100 * rate / top:.1f}" '
        f'fill="#4a7"><title>{rate:.1f} MB/s</title></rect>'
        for i, rate in enumerate(rates)
    )
    rows = "".join(_run_row(run, rate) for run, rate in zip(runs, rates, strict=True))
    body = (
        "<h1>Mirror runs</h1>"
        f'<svg width="{20 + 22 * len(runs)}" height="120" role="img" aria-label="MB/s per run">{bars}</svg>'
        "<table><tr><th>started</th><th>channel</th><th>duration</th><th>downloaded</th><th>MB/s</th>"
        f"<th>files added</th><th>files removed</th><th>failures</th></tr>{rows}</table>"
    )
    return _page("Mirror runs", body)


def _run_row(run: Mapping[str, Any], rate: float) -> str:
    added = sum(int(row.get("downloaded", 0)) for row in run.get("rows", []))
    removed = sum(int(count) for count in run.get("deleted", {}).values())
    failures = "; ".join(f"{f['what']}: {f['why']}" for f in run.get("failures", [])[:5])
    return (
        f"<tr><td>{escape(_when(float(run.get('started_at', 0))))}</td><td>{escape(str(run.get('mirror', '')))}</td>"
        f"<td class='num'>{float(run.get('duration_seconds', 0)):.1f} s</td>"
        f"<td class='num'>{_mb(int(run.get('downloaded_bytes', 0)))}</td><td class='num'>{rate:.1f}</td>"
        f"<td class='num'>{added}</td><td class='num'>{removed}</td><td>{escape(failures)}</td></tr>"
    )
