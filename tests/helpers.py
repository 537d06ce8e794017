"""Shared test helpers: run the engine on a config dict, read back what it published."""

from __future__ import annotations

import hashlib
import json
import random
import socket
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
