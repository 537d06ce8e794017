"""Shared test helpers: run the engine on a config dict, read back what it published."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import zstandard

from mirror_engine.config import MirrorConfig, parse_config
from mirror_engine.destinations.local import LocalDestination
from mirror_engine.engine import MirrorRun
from mirror_engine.progress import NullReporter
from mirror_engine.shards import read_shard, read_shard_index
from mirror_engine.summary import RunSummary

# One process: most tests are about what is mirrored, not where it is downloaded (tests of the worker
# processes set `processes` themselves).
FAST = {"retry_backoff": 0.01, "retry_backoff_max": 0.05, "read_timeout": 2, "connect_timeout": 2, "processes": 1}


def make_config(config_dir: Path, **keys: Any) -> MirrorConfig:
    return parse_config({**FAST, "mirror_dir": "mirror", **keys}, config_dir / "config.yaml")


async def mirror(config: MirrorConfig, *, dry_run: bool = False) -> RunSummary:
    """Run the engine; with `processes` above 1, every download goes through the worker processes (a run
    does not wait for them otherwise, and these small channels would be done before they start)."""
    run = MirrorRun(
        config, LocalDestination(config.channel_dir), NullReporter(), rng=random.Random(1), wait_for_workers=True
    )
    return await run.run(dry_run=dry_run)


def published(config: MirrorConfig, subdir: str) -> dict[str, Any]:
    folder = config.channel_dir / subdir
    doc: dict[str, Any] = json.loads((folder / "repodata.json").read_bytes())
    from_zst = json.loads(
        zstandard.ZstdDecompressor().decompressobj().decompress((folder / "repodata.json.zst").read_bytes())
    )
    assert from_zst == doc, "repodata.json.zst and repodata.json differ"
    assert_shards_agree(folder, doc)
    return doc


def assert_shards_agree(folder: Path, doc: dict[str, Any]) -> None:
    """The CEP-16 shards name the same records as repodata.json (digests as bytes there), no more."""
    index = read_shard_index((folder / "repodata_shards.msgpack.zst").read_bytes())
    assert index["info"]["subdir"] == doc["info"]["subdir"]
    seen: dict[str, dict[str, Any]] = {"packages": {}, "packages.conda": {}}
    for name, digest in index["shards"].items():
        data = (folder / "shards" / f"{bytes(digest).hex()}.msgpack.zst").read_bytes()
        assert hashlib.sha256(data).digest() == bytes(digest)
        shard = read_shard(data)
        for section in seen:
            for filename, record in shard[section].items():
                assert record["name"].lower() == name
                seen[section][filename] = {
                    key: bytes(value).hex() if key in ("sha256", "md5") else value for key, value in record.items()
                }
    assert seen == {"packages": doc["packages"], "packages.conda": doc["packages.conda"]}


def assert_index_sound(config: MirrorConfig, subdir: str, upstream: dict[str, Any]) -> dict[str, Any]:
    """The invariant: every published record equals upstream's and names a file with its sha256."""
    doc = published(config, subdir)
    for section in ("packages", "packages.conda"):
        for filename, record in doc[section].items():
            assert record == upstream[section][filename]
            data = (config.channel_dir / subdir / filename).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"]
            assert len(data) == record["size"]
    assert "base_url" not in doc["info"]
    return doc


def names(doc: dict[str, Any]) -> set[str]:
    return {*doc["packages"], *doc["packages.conda"]}


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*.part")]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# CEP 48: a v3 format and the extension its keys omit
V3_EXTENSIONS = {"conda": ".conda", "tar.bz2": ".tar.bz2", "whl": ".whl"}
RECORD_SECTIONS = ("packages", "packages.conda", "packages.whl", "v3.conda", "v3.tar.bz2", "v3.whl")


def record_sections(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every record section of an index (`packages`, `packages.conda`, `packages.whl`, each
    `v3.<format>`): key -> record."""
    sections = {section: doc.get(section, {}) for section in ("packages", "packages.conda", "packages.whl")}
    for fmt, entries in doc.get("v3", {}).items():
        sections[f"v3.{fmt}"] = entries
    return sections


def record_file(section: str, key: str, record: dict[str, Any]) -> str:
    """The file a record names: its key in the legacy sections; else its `fn`, or its key with the
    extension of its format (the wheels' section: `.whl`) unless the key has it already."""
    if section in ("packages", "packages.conda"):
        return key
    extension = ".whl" if section == "packages.whl" else V3_EXTENSIONS[section.removeprefix("v3.")]
    return record.get("fn") or (key if key.endswith(extension) else key + extension)


def assert_all_sections_sound(
    config: MirrorConfig, subdir: str, upstream: dict[str, Any], filtered: Collection[str] = ()
) -> dict[str, Any]:
    """assert_index_sound over every record section, v3 included, and the shards' v3 too: each published
    record is upstream's record of that section and key and names a file held with its sha256 and size;
    no record of a `filtered` name is in any section; no other top-level key holds records."""
    doc = published(config, subdir)
    upstream_sections = record_sections(upstream)
    for section, entries in record_sections(doc).items():
        assert section in RECORD_SECTIONS, section
        for key, record in entries.items():
            assert record == upstream_sections[section][key], f"{section}[{key}] is not upstream's"
            assert record["name"] not in filtered, f"{section}[{key}]: filtered name {record['name']} published"
            data = (config.channel_dir / subdir / record_file(section, key, record)).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"], f"{section}[{key}]"
            assert len(data) == record["size"]
    known = {"info", "removed", "repodata_version", "packages", "packages.conda", "packages.whl", "v3", "signatures"}
    for key, value in doc.items():
        assert key in known or "sha256" not in json.dumps(value), f"{key} holds records"
    assert "base_url" not in doc["info"]
    # The shards hold the same records, except that a file a legacy section names is there only
    # (rattler's solver refuses a shard naming one file twice).
    legacy = {*doc["packages"], *doc["packages.conda"]}
    expected = {
        section: {key: record for key, record in entries.items() if record_file(section, key, record) not in legacy}
        for section, entries in record_sections(doc).items()
        if section not in ("packages", "packages.conda")
    }
    expected = {section: entries for section, entries in expected.items() if entries}
    assert _shards_beyond_legacy(config.channel_dir / subdir) == expected, "the shards' records are not the index's"
    return doc


def _shards_beyond_legacy(folder: Path) -> dict[str, dict[str, Any]]:
    """The records of every shard of a subdir outside the legacy sections, by section, digests in hex."""
    index = read_shard_index((folder / "repodata_shards.msgpack.zst").read_bytes())
    seen: dict[str, dict[str, Any]] = {}
    for name, digest in index["shards"].items():
        shard = read_shard((folder / "shards" / f"{bytes(digest).hex()}.msgpack.zst").read_bytes())
        for section, entries in record_sections(shard).items():
            if section in ("packages", "packages.conda"):
                continue
            for key, record in entries.items():
                assert record["name"].lower() == name
                seen.setdefault(section, {})[key] = {
                    k: bytes(v).hex() if k in ("sha256", "md5") else v for k, v in record.items()
                }
    return seen


class FakeTime:
    """A clock that moves only when slept on, and every wait asked for: what uses it waits for nothing."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


PROXY_USER, PROXY_PASSWORD = "mirror", "pr0xyPass"


@contextlib.contextmanager
def proxy_py(log: Path) -> Iterator[int]:
    """proxy.py (PyPI) on 127.0.0.1, asking for PROXY_USER's basic auth and logging to `log`; yields its port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port), "--basic-auth",
         f"{PROXY_USER}:{PROXY_PASSWORD}", "--log-file", str(log), "--num-workers", "1", "--num-acceptors", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "proxy.py did not start"
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
