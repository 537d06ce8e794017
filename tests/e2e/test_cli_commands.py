"""What the README and `--help` promise of each command, run as a user runs it: `status`, `explain`, `plan`,
`run --verify`, `--no-journal`, `--progress bar` on a terminal, `export --since`, `--mirror-dir`, runs.html."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from mirror_engine.config import MirrorConfig, load_config, override_mirror_dir
from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from tests.channel_server import ChannelServer
from tests.e2e.conftest import REPO, cli
from tests.helpers import assert_index_sound, names, published

NUMPY_311 = "numpy-1.26.4-py311h64a7726_0.conda"
TZDATA = "tzdata-2024a-h0c530f3_0.conda"
FILTERED = "platforms: linux-64\npython_versions: [3.11]\nlicense_blacklist: GPL\nblacklist: [zlib]\n" \
           "whitelist: [readline]\n"  # fmt: skip


def flip_byte(path: Path, at: int = 100) -> None:
    """Corrupt one byte of `path` and put its mtime back: the size and mtime a journal trusts stay as they were."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256 and mtime; SQLite's `-shm` (its shared-memory index, rewritten
    by every reader of a WAL database) left out."""
    return {
        path.relative_to(root).as_posix(): f"{sha256_of(path)} {path.stat().st_mtime_ns}"
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.endswith("-shm")
    }


def config_of(tmp_path: Path, name: str = "c.yaml") -> MirrorConfig:
    return load_config(tmp_path / name)


async def test_status_reads_the_journal_and_needs_no_network(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    good = (tmp_path / "pkgs" / "noarch" / TZDATA).read_bytes()
    (tmp_path / "pkgs" / "noarch" / TZDATA).write_bytes(b"x")
    (tmp_path / "c.yaml").write_text("channels: [http://127.0.0.1:9/unused/]\nplatforms: noarch\nretries: 0\n")
    empty = await cli("status", "c.yaml", cwd=tmp_path)
    assert empty.code == 0, empty.stderr
    assert empty.stdout.strip().endswith(
        f"no journal at {tmp_path}/mirror/.mirror_engine/journal.sqlite; nothing has been mirrored here yet"
    )

    async with ChannelServer(tmp_path / "pkgs") as server:
        (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\nplatforms: noarch\nretries: 0\n")
        first = await cli("run", "c.yaml", "-q", cwd=tmp_path)
        served_at = server.url
    assert first.code == 1
    # the server is gone: status reads the journal only
    failed = await cli("status", "c.yaml", cwd=tmp_path)
    assert failed.code == 0, failed.stderr
    lines = failed.stdout.splitlines()
    assert lines[0] == f"mirror: {tmp_path}/mirror/anaconda"
    assert re.fullmatch(rf"last run #1 \(pid {first.pid}\): failed, started .+, finished .+; 1 failure\(s\)", lines[1])
    assert lines[2].split() == ["published", "2", "files", "0.1", "MB"]
    assert lines[3].split() == ["failed", "1", "files", "0.3", "MB"]  # the record's size, not the 1 byte served
    assert lines[4] == "left to fetch: 0 files"
    assert re.fullmatch(r"index noarch: 2 files, published .+", lines[5])
    assert lines[6] == "1 failed file(s):"
    assert lines[7] == f"  noarch/{TZDATA}: {served_at}noarch/{TZDATA}: server sends 1 bytes, the record says 301417"

    (tmp_path / "pkgs" / "noarch" / TZDATA).write_bytes(good)
    async with ChannelServer(tmp_path / "pkgs") as server:
        (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\nplatforms: noarch\nretries: 0\n")
        second = await cli("run", "c.yaml", "-q", cwd=tmp_path)
    assert second.code == 0, second.stdout
    done = await cli("status", "c.yaml", cwd=tmp_path)
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(rf"last run #2 \(pid {second.pid}\): done, started .+; 0 failure\(s\)", lines[1])
    assert lines[2].split() == ["published", "3", "files", "0.4", "MB"]
    assert "failed" not in done.stdout
    assert re.fullmatch(r"index noarch: 3 files, published .+", lines[4])
    assert names(assert_index_sound(config_of(tmp_path), "noarch", docs["noarch"])) == names(docs["noarch"])


async def test_explain_names_the_step_that_decided_each_record_and_downloads_no_package(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    async with ChannelServer(tmp_path / "pkgs") as server:
        (tmp_path / "c.yaml").write_text(f"channels: [{server.url}]\n{FILTERED}")
        at = f"{server.url}linux-64/"

        async def explain(query: str) -> set[str]:
            ran = await cli("explain", "c.yaml", query, "-q", cwd=tmp_path)
            assert ran.code == 0, ran.stderr
            return set(ran.stdout.splitlines())

        assert await explain("zlib") == {
            f"{at}zlib-1.3.1-h5eee18b_0.conda: not mirrored; dropped by blacklist",
            f"{at}zlib-1.3.1-h5eee18b_0.tar.bz2: not mirrored; dropped by blacklist",
        }
        rescued = "not mirrored; rescued by whitelist from license_blacklist (family GPL3)"
        assert await explain("readline=8.2") == {
            f"{at}readline-8.2-h5eee18b_0.conda: {rescued}",
            f"{at}readline-8.2-h5eee18b_0.tar.bz2: {rescued}",
        }
        assert await explain("numpy") == {
            f"{at}numpy-1.26.4-py310hb13e2d6_0.conda: not mirrored; dropped by python_versions: built for Python 3.10",
            f"{at}{NUMPY_311}: not mirrored; selected (built for Python 3.11)",
        }
        assert await explain("nothere") == {"no upstream record matches nothere"}
        assert server.fetched(".conda") == [] and server.fetched(".tar.bz2") == []
        assert not (tmp_path / "mirror" / "anaconda").exists()

        assert (await cli("run", "c.yaml", "-q", cwd=tmp_path)).code == 0
        assert await explain("numpy=1.26.4=py311h64a7726_0") == {
            f"{at}{NUMPY_311}: mirrored; selected (built for Python 3.11)"
        }


async def test_plan_prints_what_a_run_would_do_and_writes_nothing(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: noarch\n")
    fresh = await cli("plan", "c.yaml", cwd=tmp_path)
    assert fresh.code == 0, fresh.stderr
    assert not (tmp_path / "mirror").exists()
    shown = f"{tmp_path}/pkgs/noarch"[-40:].ljust(40)  # the table keeps a name's last 40 characters
    header, rule, row, total = fresh.stdout.splitlines()
    assert header == f"{'channel/subdir':<40} upstream selected  present to check to fetch        bytes"
    assert set(rule) == {"-"}
    assert row == shown + "        3        3        0        0        3       0.4 MB"
    assert total == "would download 3 files, 0.4 MB"

    assert (await cli("run", "c.yaml", "-q", cwd=tmp_path)).code == 0
    unchanged = await cli("plan", "c.yaml", cwd=tmp_path)
    assert unchanged.stdout.splitlines()[2:] == [
        shown + "        3        3        3        0        0       0.0 MB",
        "would download 0 files, 0.0 MB",
        "unchanged upstream and on disk, nothing to do: noarch",
    ]

    # one file gone, one touched (no longer trusted), one blacklisted: to fetch, to check, to delete
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: noarch\nblacklist: [tzdata]\n")
    noarch = tmp_path / "mirror" / "anaconda" / "noarch"
    (noarch / "urllib3-2.2.2-pyhd8ed1ab_1.conda").unlink()
    os.utime(noarch / "requests-2.32.3-pyhd8ed1ab_0.conda", ns=(1, 1))
    before = tree(tmp_path / "mirror")
    changed = await cli("plan", "c.yaml", cwd=tmp_path)
    assert changed.code == 0, changed.stderr
    urllib3 = docs["noarch"]["packages.conda"]["urllib3-2.2.2-pyhd8ed1ab_1.conda"]["size"]
    assert changed.stdout.splitlines()[2:] == [
        shown + f"        3        2        0        1        1       {urllib3 / 1e6:.1f} MB",
        "would download 1 files, 0.1 MB",
        "filters: 1 dropped by blacklist",
        "would delete files no longer selected: noarch: 1",
    ]
    assert tree(tmp_path / "mirror") == before


async def test_verify_repairs_a_flipped_byte_the_journal_would_trust(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: linux-64\n")
    assert (await cli("run", "c.yaml", "-q", cwd=tmp_path)).code == 0
    config = config_of(tmp_path)
    victim = config.channel_dir / "linux-64" / NUMPY_311
    flip_byte(victim)

    trusting = await cli("run", "c.yaml", "-q", cwd=tmp_path)
    assert trusting.code == 0 and "repaired" not in trusting.stdout
    assert sha256_of(victim) != docs["linux-64"]["packages.conda"][NUMPY_311]["sha256"]  # same size and mtime

    verified = await cli("run", "c.yaml", "--verify", "-q", cwd=tmp_path)
    assert verified.code == 0, verified.stdout
    lines = verified.stdout.splitlines()
    at = lines.index("repaired 1 file(s) whose bytes on disk did not match their record:")
    assert lines[at + 1] == f"  linux-64/{NUMPY_311}"
    assert sha256_of(victim) == docs["linux-64"]["packages.conda"][NUMPY_311]["sha256"]
    for subdir in ("linux-64", "noarch"):
        assert names(assert_index_sound(config, subdir, docs[subdir])) == names(docs[subdir])


async def test_no_journal_hashes_what_is_on_disk_and_leaves_the_journal_alone(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: noarch\n")
    once = await cli("run", "c.yaml", "--no-journal", "--mirror-dir", "once", "-q", cwd=tmp_path)
    assert once.code == 0, once.stdout
    assert not (tmp_path / "once" / ".mirror_engine" / "journal.sqlite").exists()
    one_off = override_mirror_dir(config_of(tmp_path), tmp_path / "once")
    assert names(assert_index_sound(one_off, "noarch", docs["noarch"])) == names(docs["noarch"])

    first = await cli("run", "c.yaml", "-q", cwd=tmp_path)
    assert first.code == 0
    config = config_of(tmp_path)
    flip_byte(config.channel_dir / "noarch" / TZDATA)
    unjournaled = await cli("run", "c.yaml", "--no-journal", "-q", cwd=tmp_path)
    assert unjournaled.code == 0, unjournaled.stdout
    lines = unjournaled.stdout.splitlines()
    at = lines.index("repaired 1 file(s) whose bytes on disk did not match their record:")  # it was hashed again
    assert lines[at + 1] == f"  noarch/{TZDATA}"
    assert names(assert_index_sound(config, "noarch", docs["noarch"])) == names(docs["noarch"])
    status = await cli("status", "c.yaml", cwd=tmp_path)
    assert re.match(rf"last run #1 \(pid {first.pid}\): done", status.stdout.splitlines()[1]), status.stdout


def run_on_a_terminal(args: list[str], cwd: Path, limit: float = 120.0) -> tuple[int, bytes, str]:
    """The CLI with stderr on a pseudo-terminal (where its console draws) and stdout on a pipe: its exit status,
    what the terminal showed, and stdout."""
    primary, secondary = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "mirror_engine", *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    shown = bytearray()
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed its end of the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        return process.wait(limit), bytes(shown), stdout
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_progress_bar_is_drawn_on_a_terminal_and_the_summary_follows(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: linux-64\n")
    code, shown, stdout = run_on_a_terminal(["run", "c.yaml", "--progress", "bar"], tmp_path)
    assert code == 0, shown.decode(errors="replace")
    terminal = shown.decode()
    assert "\x1b[?25l" in terminal and "\x1b[?25h" in terminal  # a live display: cursor hidden, then shown again
    assert "━━━━━━━━━━" in terminal  # the bar itself
    assert "16/16 files" in terminal  # its count at the end: every planned file finished
    assert "\r\x1b[2K" in terminal  # redrawn in place, not printed line after line
    summary = stdout.splitlines()
    assert summary[-2] == f"mirror: {tmp_path}/mirror/anaconda"
    assert summary[-3].startswith("downloaded 3.9 MB in ")
    assert sorted(summary[-3].partition("; published ")[2].split(", ")) == ["linux-64", "noarch"]
    config = config_of(tmp_path)
    assert names(assert_index_sound(config, "linux-64", docs["linux-64"])) == names(docs["linux-64"])

    logged = subprocess.run(
        [sys.executable, "-m", "mirror_engine", "run", "c.yaml", "--progress", "bar"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert logged.returncode == 0 and "━" not in logged.stderr  # off a terminal nothing is animated


def manifest(bundle: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    return doc


async def test_export_since_carries_only_what_changed_and_imports_after_its_base(tmp_path: Path) -> None:
    build_channel(tmp_path / "up")
    (tmp_path / "low.yaml").write_text("channels: [up]\nmirror_dir: low\nplatforms: noarch\n")
    (tmp_path / "high.yaml").write_text("channels: [https://example.invalid/unused/]\nmirror_dir: high\n")
    assert (await cli("run", "low.yaml", "-q", cwd=tmp_path)).code == 0
    whole = await cli("export", "low.yaml", "b1", "-q", cwd=tmp_path)
    assert whole.code == 0, whole.stderr
    (snapshot,) = (tmp_path / "b1").glob("snapshot-*.json")
    assert f"keep {snapshot.name} for --since" in whole.stdout

    extra = DemoPackage("certifi", "2024.7.4", "pyhd8ed1ab_0", subdir="noarch", license="ISC", payload_size=30_000)
    docs = build_channel(tmp_path / "up", [*DEMO_PACKAGES, extra])
    (tmp_path / "low.yaml").write_text("channels: [up]\nmirror_dir: low\nplatforms: noarch\nblacklist: [tzdata]\n")
    assert (await cli("run", "low.yaml", "-q", cwd=tmp_path)).code == 0
    delta = await cli("export", "low.yaml", "b2", "--since", str(snapshot), "-q", cwd=tmp_path)
    assert delta.code == 0, delta.stderr
    assert delta.stdout.startswith("b2: ") and ", 1 removed, " in delta.stdout

    carried = manifest(tmp_path / "b2")
    assert carried["base"] == manifest(tmp_path / "b1")["snapshot"]
    packages = {name for name in carried["files"] if name.endswith((".conda", ".tar.bz2"))}
    assert packages == {f"noarch/{extra.filename('.conda')}"}  # the unchanged packages stay behind
    assert "noarch/repodata.json" in carried["files"]
    assert carried["removed"] == [f"noarch/{TZDATA}"]

    out_of_order = await cli("import", "b2", "high.yaml", "-q", cwd=tmp_path)
    assert out_of_order.code == 1
    assert out_of_order.stderr.strip().splitlines()[-1] == (
        f"mirror-engine: error: b2: a delta from snapshot {carried['base'][:16]}, but {tmp_path}/high/anaconda is at "
        "no snapshot; import the missing bundles first, or a full export"
    )
    assert not (tmp_path / "high" / "anaconda" / "noarch" / "repodata.json").exists()
    for bundle in ("b1", "b2"):
        imported = await cli("import", bundle, "high.yaml", "-q", cwd=tmp_path)
        assert imported.code == 0, imported.stderr
    high = config_of(tmp_path, "high.yaml")
    doc = assert_index_sound(high, "noarch", docs["noarch"])
    assert names(doc) == names(docs["noarch"]) - {TZDATA}
    assert not (high.channel_dir / "noarch" / TZDATA).exists()
    assert doc == published(config_of(tmp_path, "low.yaml"), "noarch")


async def test_mirror_dir_overrides_the_config_for_every_command(tmp_path: Path) -> None:
    docs = build_channel(tmp_path / "pkgs")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text(f"channels: [{tmp_path}/pkgs]\nplatforms: noarch\nmirror_dir: kept\n")
    ran = await cli("run", "conf/c.yaml", "--mirror-dir", "elsewhere", "-q", cwd=tmp_path)
    assert ran.code == 0, ran.stdout
    assert f"mirror: {tmp_path}/elsewhere/anaconda" in ran.stdout.splitlines()  # relative to the cwd
    assert not (tmp_path / "conf" / "kept").exists() and not (tmp_path / "kept").exists()
    moved = override_mirror_dir(load_config(tmp_path / "conf" / "c.yaml"), tmp_path / "elsewhere")
    assert names(assert_index_sound(moved, "noarch", docs["noarch"])) == names(docs["noarch"])
    assert (tmp_path / "elsewhere" / "runs.html").exists()

    status = await cli("status", "conf/c.yaml", "--mirror-dir", "elsewhere", cwd=tmp_path)
    assert re.match(rf"last run #1 \(pid {ran.pid}\): done", status.stdout.splitlines()[1]), status.stdout
    plan = await cli("plan", "conf/c.yaml", "--mirror-dir", "elsewhere", cwd=tmp_path)
    assert "would download 0 files, 0.0 MB" in plan.stdout.splitlines()
    unmoved = await cli("plan", "conf/c.yaml", cwd=tmp_path)
    assert "would download 3 files, 0.4 MB" in unmoved.stdout.splitlines()


class _Rows(HTMLParser):
    """The cells of each table row of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


async def test_runs_html_names_each_run_with_its_files_and_failures(tmp_path: Path) -> None:
    build_channel(tmp_path / "pkgs")
    good = (tmp_path / "pkgs" / "noarch" / TZDATA).read_bytes()
    (tmp_path / "pkgs" / "noarch" / TZDATA).write_bytes(b"x")
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: noarch\nretries: 0\n")
    assert (await cli("run", "c.yaml", "-q", cwd=tmp_path)).code == 1
    (tmp_path / "pkgs" / "noarch" / TZDATA).write_bytes(good)
    (tmp_path / "c.yaml").write_text("channels: [pkgs]\nplatforms: noarch\nblacklist: [urllib3]\n")
    assert (await cli("run", "c.yaml", "-q", cwd=tmp_path)).code == 0
    assert (await cli("run", "c.yaml", "--dry-run", "-q", cwd=tmp_path)).code == 0  # a dry run is no run

    page = _Rows()
    page.feed((tmp_path / "mirror" / "runs.html").read_text())
    header, failed, second = page.rows
    assert header == ["started", "channel", "duration", "downloaded", "MB/s", "files added", "files removed",
                      "failures"]  # fmt: skip
    mirror = f"{tmp_path}/mirror/anaconda"
    assert failed[1] == mirror and (failed[5], failed[6]) == ("2", "0")
    assert failed[7].startswith(f"noarch/{TZDATA}: ") and "got 1 bytes, the record says 301417" in failed[7]
    assert second[1] == mirror and (second[5], second[6], second[7]) == ("1", "1", "")  # tzdata in, urllib3 out
    assert failed[0] <= second[0]
