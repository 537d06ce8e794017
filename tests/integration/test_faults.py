"""Hostile upstreams against a real loopback server: every fault survived or reported in one line, nothing
published that was not verified, nothing written outside `<mirror_dir>/<dest_channel>/<subdir>/`."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mirror_engine.bandwidth import TokenBucket
from mirror_engine.config import MirrorConfig
from mirror_engine.demo import DemoPackage, build_channel
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.progress import NullReporter
from mirror_engine.retry import backoff_delay
from mirror_engine.summary import RunSummary
from tests.channel_server import LOOP_PREFIX, REDIRECT_PREFIX, ChannelServer
from tests.helpers import FakeTime, assert_index_sound, leftovers, make_config, mirror, names, published

TZDATA = "tzdata-2024a-h0c530f3_0.conda"
TZDATA_PATH = f"/noarch/{TZDATA}"


@pytest.fixture
def channel(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    root = tmp_path / "upstream"
    return root, build_channel(root)


def attempts(server: ChannelServer, path: str) -> int:
    """GETs of `path` itself: each is one attempt (a redirect's second hop is not counted)."""
    return sum(1 for method, seen in server.requests if method == "GET" and seen == path)


def one_line(text: str) -> bool:
    return bool(text) and "\n" not in text and "Traceback" not in text


# fault -> what the retry's warning says (one of)
SINGLE_FAULTS: dict[str, tuple[str, ...]] = {
    "500": ("HTTP 500",),
    "502": ("HTTP 502",),
    "503": ("HTTP 503",),
    "429": ("HTTP 429",),
    "429-date": ("HTTP 429",),
    "short": ("cut short",),
    "corrupt": ("sha256",),
    "reset": ("cut short", "reset"),
    "stall": ("stalled",),
}
RETRY_AFTER = 100  # seconds a 429 asks for: never waited, the run's sleep only records it


async def mirror_on(config: MirrorConfig, time: FakeTime, *, throttle: bool = False) -> tuple[RunSummary, MirrorRun]:
    """`mirror`, with the waits before retries (and with `throttle`, the bandwidth cap's) on `time`."""
    run = MirrorRun(
        config, LocalDestination(config.channel_dir), NullReporter(), rng=random.Random(1), sleep=time.sleep
    )
    if throttle:
        run.throttle = TokenBucket(config.max_bandwidth_bytes, clock=time.clock, sleep=time.sleep)
    return await run.run(), run


def retry_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, float]]:
    """(message, announced wait) of every 'retry in' warning the engine logged."""
    found = []
    for record in caplog.records:
        match = re.fullmatch(r"(.*); retry in ([0-9.]+)s", record.getMessage())
        if record.name.startswith("mirror_engine") and match:
            found.append((match[1], float(match[2])))
    return found


@pytest.mark.parametrize("fault", [*SINGLE_FAULTS, "redirect"])
async def test_a_single_fault_is_survived(
    tmp_path: Path, channel: Any, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, docs = channel
    time = FakeTime()
    async with ChannelServer(root, stall_seconds=2, retry_after=RETRY_AFTER, retry_after_date=RETRY_AFTER) as server:
        server.faults[TZDATA_PATH] = [fault]
        url = server.url
        config = make_config(tmp_path, channels=[url], platforms=["noarch"], retries=2, read_timeout=0.5)
        summary, run = await mirror_on(config, time)
    assert summary.exit_code == 0, summary.failures
    assert names(assert_index_sound(config, "noarch", docs["noarch"])) == names(docs["noarch"])
    assert server.injected == [(TZDATA_PATH, fault)]
    if fault == "redirect":  # followed at once: one attempt, and the file came from the redirect's target
        assert attempts(server, TZDATA_PATH) == 1
        assert attempts(server, f"{REDIRECT_PREFIX}{TZDATA_PATH}") == 1
        assert retry_warnings(caplog) == [] and time.waits == []
    else:  # the fault cost one attempt, and one retry fixed it, after the one wait it announced
        assert attempts(server, TZDATA_PATH) == 2
        [(message, announced)] = retry_warnings(caplog)
        assert message.startswith(f"{url}noarch/{TZDATA}: ") and one_line(message)
        assert any(words in message for words in SINGLE_FAULTS[fault]), message
        [wait] = time.waits
        assert f"{wait:.1f}" == f"{announced:.1f}"
        if fault == "429":  # Retry-After beats the backoff
            assert wait == RETRY_AFTER
        elif fault == "429-date":  # an HTTP-date, to the second: generous, a bound against hanging only
            assert RETRY_AFTER - 30 < wait <= RETRY_AFTER, wait
        else:  # the first backoff of a run seeded 1: full jitter under min(cap, base)
            assert wait == backoff_delay(0, run.policy, random.Random(1)), wait
    assert not leftovers(tmp_path / "mirror")


async def test_a_redirect_loop_fails_that_file_only(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        server.faults[TZDATA_PATH] = ["redirect-loop"] * 5
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"], retries=2)
        summary = await mirror(config)
    assert summary.exit_code == 1
    [(what, why)] = summary.failures
    assert what == f"noarch/{TZDATA}"
    assert one_line(why) and "redirect" in why, why
    assert server.fetched(f"{LOOP_PREFIX}{TZDATA_PATH}"), "the loop was entered"
    doc = assert_index_sound(config, "noarch", docs["noarch"])
    assert names(doc) == names(docs["noarch"]) - {TZDATA}
    assert not (config.channel_dir / "noarch" / TZDATA).exists()
    assert not leftovers(tmp_path / "mirror")


RANDOM_KINDS = ["500", "502", "503", "429", "429-date", "short", "corrupt", "reset", "stall", "redirect"]


@pytest.mark.parametrize("processes", [1, 2], ids=["in-process", "two-worker-processes"])
async def test_random_faults_on_a_fifth_of_requests_are_all_retried(
    tmp_path: Path, channel: Any, processes: int
) -> None:
    root, docs = channel
    retries = 8
    async with ChannelServer(root, stall_seconds=1) as server:
        server.random_faults(0.2, seed=140, kinds=RANDOM_KINDS)  # a seed that draws most kinds
        config = make_config(tmp_path, channels=[server.url], retries=retries, read_timeout=0.5, processes=processes)
        summary = await mirror(config)
    assert summary.exit_code == 0, summary.failures
    for subdir, doc in docs.items():
        assert names(assert_index_sound(config, subdir, doc)) == names(doc)
    kinds = {fault for _, fault in server.injected}
    assert len(server.injected) >= 6 and len(kinds) >= 5, server.injected
    assert {"corrupt", "reset", "stall"} <= kinds, kinds  # faults in the body, not only in the status line
    faults_per_path = Counter(path for path, fault in server.injected if fault != "redirect")
    for subdir, doc in docs.items():
        for filename in names(doc):
            path = f"/{subdir}/{filename}"
            # every fault cost exactly one attempt and was followed by another, within the budget
            assert attempts(server, path) == faults_per_path[path] + 1 <= retries + 1, path
    assert not leftovers(tmp_path / "mirror")


async def test_random_faults_are_deterministic_given_the_seed(tmp_path: Path, channel: Any) -> None:
    root, _ = channel
    logs = []
    for run in range(2):
        async with ChannelServer(root) as server:
            server.random_faults(0.5, seed=11, kinds=["500", "503"])
            config = make_config(tmp_path / str(run), channels=[server.url], platforms=["noarch"], retries=8)
            (tmp_path / str(run)).mkdir()
            assert (await mirror(config)).exit_code == 0
        logs.append(sorted(server.injected))
    assert logs[0] == logs[1] and logs[0]


@pytest.mark.parametrize("processes", [1, 2], ids=["in-process", "two-worker-processes"])
async def test_a_file_that_always_fails_is_reported_with_its_last_reason(
    tmp_path: Path, channel: Any, processes: int
) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        server.faults[TZDATA_PATH] = ["500", *["503"] * 10]
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"], retries=2, processes=processes)
        summary = await mirror(config)
    assert summary.exit_code == 1
    [(what, why)] = summary.failures
    assert what == f"noarch/{TZDATA}"
    assert one_line(why) and "HTTP 503" in why and TZDATA in why, why
    assert attempts(server, TZDATA_PATH) == 3
    doc = assert_index_sound(config, "noarch", docs["noarch"])
    assert names(doc) == names(docs["noarch"]) - {TZDATA}
    assert not (config.channel_dir / "noarch" / TZDATA).exists()


async def test_corrupt_zstd_repodata_fails_its_subdir_only(tmp_path: Path, channel: Any) -> None:
    root, docs = channel
    async with ChannelServer(root) as server:
        server.faults["/linux-64/repodata.json.zst"] = ["corrupt"]
        url = server.url
        config = make_config(tmp_path, channels=[url], platforms=["linux-64"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    [(what, why)] = summary.failures
    assert what == "linux-64 (not published)"
    assert why.startswith(f"{url}linux-64/repodata.json.zst: not valid zstd") and one_line(why), why
    assert not (config.channel_dir / "linux-64").exists()
    assert_index_sound(config, "noarch", docs["noarch"])


# --- timeouts and bandwidth --------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2], ids=["in-process", "two-worker-processes"])
async def test_file_timeout_cuts_a_dripping_download(tmp_path: Path, processes: int) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [DemoPackage("slow", "1", "0", subdir="noarch", payload_size=40_000)], zst=False)
    size = docs["noarch"]["packages.conda"]["slow-1-0.conda"]["size"]
    async with ChannelServer(root, drip=(1024, 0.05)) as server:  # about 2 s for the whole body
        config = make_config(
            tmp_path, channels=[server.url], platforms=["noarch"], file_timeout=0.5, retries=0, processes=processes
        )
        summary = await mirror(config)
        for _ in range(100):  # a worker process's closed connection reaches the server a moment later
            if server.served:
                break
            await asyncio.sleep(0.02)
    assert summary.exit_code == 1
    [(what, why)] = summary.failures
    assert what == "noarch/slow-1-0.conda"
    assert one_line(why) and "file_timeout" in why and "0.5s" in why, why
    [served] = server.served
    assert 0 < served.sent < size  # cut off midway, not refused
    assert names(published(config, "noarch")) == set()
    assert not leftovers(tmp_path / "mirror")


async def test_a_connect_timeout_is_reported_as_one(tmp_path: Path, black_hole: int) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [DemoPackage("far", "1", "0", subdir="noarch")], zst=False)
    hole = f"http://127.0.0.1:{black_hole}/noarch/"
    (root / "noarch" / "repodata.json").write_text(
        json.dumps(docs["noarch"] | {"info": {"subdir": "noarch", "base_url": hole}})
    )
    async with ChannelServer(root) as server:
        config = make_config(
            tmp_path,
            channels=[server.url],
            platforms=["noarch"],
            allow_other_hosts=True,
            connect_timeout=0.3,
            read_timeout=5,
            retries=0,
        )
        summary = await mirror(config)
    assert summary.exit_code == 1
    [(what, why)] = summary.failures
    assert what == "noarch/far-1-0.conda" and why.startswith(f"{hole}far-1-0.conda: "), why
    assert "connect" in why and "stalled" not in why, why


async def test_max_bandwidth_slows_the_run_down(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    packages = [DemoPackage(name, "1", "0", subdir="noarch", payload_size=1_000_000) for name in ("big", "bigger")]
    docs = build_channel(root, packages, zst=False)
    total = sum(record["size"] for record in docs["noarch"]["packages.conda"].values())
    rate = 1_000_000
    time = FakeTime()
    async with ChannelServer(root) as server:
        config = make_config(tmp_path, channels=[server.url], platforms=["noarch"], max_bandwidth="1MB/s")
        summary, _ = await mirror_on(config, time, throttle=True)
    assert summary.exit_code == 0, summary.failures
    assert names(assert_index_sound(config, "noarch", docs["noarch"])) == names(docs["noarch"])
    assert server.fetched(".conda") and len(server.fetched(".conda")) == 2
    # The bucket starts with one second's worth; every other byte was waited for at the rate, exactly.
    # (What that costs on a real clock: python -m benchmarks.bounds.)
    assert sum(time.waits) == pytest.approx((total - rate) / rate, abs=1e-6), time.waits


# --- bad repodata -----------------------------------------------------------------------------------


async def test_malformed_repodata_fails_its_subdir_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    subdirs = ["noarch", "linux-64", "osx-64", "osx-arm64", "win-64", "linux-aarch64", "linux-ppc64le"]
    docs = build_channel(
        root,
        [
            *(DemoPackage("good", "1", "0", subdir=subdir, payload_size=64) for subdir in subdirs),
            *(DemoPackage("bad", "1", "0", subdir=subdir, payload_size=64) for subdir in subdirs),
        ],
        zst=False,
    )

    def write(subdir: str, doc: Any) -> None:
        (root / subdir / "repodata.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))

    write("linux-64", '{"info": {"subdir": "linux-64"}, "packages": {')  # cut short
    write("osx-64", docs["osx-64"] | {"packages.conda": list(docs["osx-64"]["packages.conda"].values())})
    write("osx-arm64", docs["osx-arm64"] | {"info": ["osx-arm64"]})
    bad = "bad-1-0.conda"
    docs["win-64"]["packages.conda"][bad].pop("size")
    docs["linux-aarch64"]["packages.conda"][bad].pop("sha256")
    docs["linux-aarch64"]["packages.conda"][bad].pop("md5")
    docs["linux-ppc64le"]["packages.conda"][bad]["size"] = "64"  # a string is no size
    for subdir in ("win-64", "linux-aarch64", "linux-ppc64le"):
        write(subdir, docs[subdir])
    async with ChannelServer(root) as server:
        url = server.url
        config = make_config(tmp_path, channels=[url], platforms=subdirs[1:])
        summary = await mirror(config)
    assert summary.exit_code == 1
    failures = dict(summary.failures)
    assert len(failures) == len(summary.failures) == 6, summary.failures
    assert failures["linux-64 (not published)"].startswith(f"{url}linux-64/repodata.json: not valid JSON")
    assert failures["osx-64 (not published)"] == f"{url}osx-64/repodata.json: packages.conda: not an object"
    assert failures["osx-arm64 (not published)"] == f"{url}osx-arm64/repodata.json: info: not an object"
    assert failures[f"{url}win-64/{bad}"] == "record has no valid size"
    assert failures[f"{url}linux-aarch64/{bad}"] == "record has neither a valid sha256 nor md5"
    assert failures[f"{url}linux-ppc64le/{bad}"] == "record has no valid size"
    assert all(one_line(why) for why in failures.values())
    for subdir in ("linux-64", "osx-64", "osx-arm64"):
        assert not (config.channel_dir / subdir).exists()
    assert names(assert_index_sound(config, "noarch", docs["noarch"])) == {"good-1-0.conda", bad}
    for subdir in ("win-64", "linux-aarch64", "linux-ppc64le"):
        assert names(assert_index_sound(config, subdir, docs[subdir])) == {"good-1-0.conda"}
        assert not (config.channel_dir / subdir / bad).exists()
    assert not server.fetched(f"/win-64/{bad}") and not server.fetched(f"/linux-aarch64/{bad}")


async def test_repodata_that_is_not_utf8_fails_its_subdir_and_is_never_published(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(
        root, [DemoPackage("good", "1", "0", subdir=s, payload_size=64) for s in ("noarch", "linux-64")], zst=False
    )
    # in a field no step reads: kept as bytes, it would have gone into the published index as it is
    docs["linux-64"]["packages.conda"]["good-1-0.conda"]["summary"] = "\udcff"
    data = json.dumps(docs["linux-64"], ensure_ascii=False).encode("utf-8", "surrogateescape")
    assert b"\xff" in data
    (root / "linux-64" / "repodata.json").write_bytes(data)
    async with ChannelServer(root) as server:
        url = server.url
        config = make_config(tmp_path, channels=[url], platforms=["linux-64"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    (why,) = [why for what, why in summary.failures if what == "linux-64 (not published)"]
    assert why.startswith(f"{url}linux-64/repodata.json: not valid UTF-8 at byte ") and one_line(why)
    assert not (config.channel_dir / "linux-64").exists()
    assert names(assert_index_sound(config, "noarch", docs["noarch"])) == {"good-1-0.conda"}


# --- hostile file names -----------------------------------------------------------------------------

HOSTILE = [
    "/etc/x.conda",
    "a\\b.conda",
    "..\\..\\x.conda",
    "nul\x00-1-0.conda",
    "x-1-0.conda\x00.txt",
    "not-a-package-1-0.zip",
    "noext-1-0",
    "..",
    ".",
    "../x.tar.bz2",
    "a/b.conda",
    ".hidden-1-0.conda",
    "",
]


async def test_hostile_file_names_are_rejected_and_nothing_escapes(tmp_path: Path) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [DemoPackage("ok", "1", "0", subdir="noarch")], zst=False)
    doc = docs["noarch"]
    record = doc["packages.conda"]["ok-1-0.conda"]
    for name in HOSTILE:
        doc["packages.conda" if name.endswith(".conda") else "packages"][name] = record
    (root / "noarch" / "repodata.json").write_text(json.dumps(doc))
    before = {path for path in tmp_path.rglob("*")}
    async with ChannelServer(root) as server:
        url = server.url
        config = make_config(tmp_path, channels=[url], platforms=["noarch"])
        summary = await mirror(config)
    assert summary.exit_code == 1
    assert sorted(summary.failures) == sorted((f"{url}noarch/{name}", f"unsafe file name {name!r}") for name in HOSTILE)
    assert names(published(config, "noarch")) == {"ok-1-0.conda"}
    assert server.fetched("/noarch/ok-1-0.conda") and len(server.fetched(".conda")) == 1
    # Every file the run created is inside the one subdir it mirrored, its own state, or a channel-root file.
    created = {path for path in tmp_path.rglob("*") if path.is_file()} - before
    outside = {
        path
        for path in created
        if not path.is_relative_to(config.channel_dir / "noarch") and not path.is_relative_to(config.state_dir)
    }
    assert outside == {config.channel_dir / "channeldata.json", config.channel_dir / "index.html"}
    noarch_files = {path.name for path in (config.channel_dir / "noarch").iterdir() if path.is_file()}
    assert noarch_files == {
        "ok-1-0.conda",
        "repodata.json",
        "repodata.json.zst",
        "repodata_shards.msgpack.zst",
        "index.html",
    }
    assert not Path("/etc/x.conda").exists()
