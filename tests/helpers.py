"""Shared test helpers: run the engine on a config dict, read back what it published."""

from __future__ import annotations

import hashlib
import json
import random
import socket
from collections.abc import Callable
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


# Where each record section names its file: the key is the file name (legacy), the key plus an extension
# (CEP 48 v3 buckets), or the record's `url` (wheels). Written out here, apart from the engine's own table.
FILE_OF: dict[tuple[str, str | None], Callable[[str, dict[str, Any]], str]] = {
    ("packages", None): lambda key, record: key,
    ("packages.conda", None): lambda key, record: key,
    ("packages.whl", None): lambda key, record: record["url"],
    ("v3", "conda"): lambda key, record: key + ".conda",
    ("v3", "tar.bz2"): lambda key, record: key + ".tar.bz2",
    ("v3", "whl"): lambda key, record: record["url"],
}
NOT_RECORDS = {"info", "removed", "repodata_version", "signatures"}


def sections(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every record section of an index by its name ("packages.conda", "v3.tar.bz2"): key -> record."""
    found: dict[str, dict[str, Any]] = {}
    for top, bucket in FILE_OF:
        value = doc.get(top)
        if bucket is not None and isinstance(value, dict):
            value = value.get(bucket)
        if isinstance(value, dict):
            found[top if bucket is None else f"{top}.{bucket}"] = value
    return found


def file_of(section: str, key: str, record: dict[str, Any]) -> str:
    top, _, bucket = section.partition(".") if section.startswith("v3.") else (section, "", "")
    return FILE_OF[(top, bucket or None)](key, record)


def assert_shards_agree(folder: Path, doc: dict[str, Any]) -> None:
    """The CEP-16 shards name the same records as repodata.json (digests as bytes there), no more."""
    index = read_shard_index((folder / "repodata_shards.msgpack.zst").read_bytes())
    assert index["info"]["subdir"] == doc["info"]["subdir"]
    seen: dict[str, dict[str, Any]] = {}
    for name, digest in index["shards"].items():
        data = (folder / "shards" / f"{bytes(digest).hex()}.msgpack.zst").read_bytes()
        assert hashlib.sha256(data).digest() == bytes(digest)
        for section, entries in sections(read_shard(data)).items():
            for key, record in entries.items():
                assert record["name"].lower() == name
                seen.setdefault(section, {})[key] = {
                    k: bytes(value).hex() if k in ("sha256", "md5") else value for k, value in record.items()
                }
    published_sections = {section: entries for section, entries in sections(doc).items() if entries}
    assert seen == published_sections


def assert_index_sound(config: MirrorConfig, subdir: str, upstream: dict[str, Any]) -> dict[str, Any]:
    """The invariant: every published record, in every section, equals upstream's and names a file the
    mirror holds with its size and sha256; nothing else in the index names files (see assert_sections_sound)."""
    doc = published(config, subdir)
    assert_sections_sound(config.channel_dir / subdir, doc, upstream)
    return doc


def assert_sections_sound(folder: Path, doc: dict[str, Any], upstream: dict[str, Any]) -> None:
    """`doc`, published in `folder`, against `upstream`'s index of that subdir.

    Records are upstream's, byte for byte once decoded; each names a present file with its size and
    sha256; no top-level key but the record sections, keys that hold no records and upstream's own
    others; `info.repodata_revisions` counts what is published.
    """
    files: set[str] = set()
    upstream_sections = sections(upstream)
    for section, entries in sections(doc).items():
        for key, record in entries.items():
            assert record == upstream_sections[section][key], f"{section}[{key}] is not upstream's"
            filename = file_of(section, key, record)
            data = (folder / filename).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record["sha256"], f"{section}[{key}]: {filename}"
            assert len(data) == record["size"]
            files.add(filename)
    assert "base_url" not in doc["info"]
    for key in doc:
        assert key in {*NOT_RECORDS, *(top for top, _ in FILE_OF)} or key in upstream, key
        if key not in (*NOT_RECORDS, *(top for top, _ in FILE_OF)):
            assert not _names_a_package(doc[key]), f"{key}: records passed through unfiltered"
    assert set(doc.get("v3", {})) <= {"conda", "tar.bz2", "whl"}
    revisions = doc["info"].get("repodata_revisions")
    if isinstance(revisions, dict) and "v3" in revisions:
        v3 = [
            record for section, entries in sections(doc).items() if section[:3] == "v3." for record in entries.values()
        ]
        stamps = [record.get("indexed_timestamp") or record.get("timestamp") for record in v3]
        assert revisions["v3"]["n_packages"] == len(v3)
        if v3:
            assert (revisions["v3"]["oldest"], revisions["v3"]["newest"]) == (min(stamps), max(stamps))


def _names_a_package(value: object) -> bool:
    """Whether any object inside `value` carries a package digest: a record, whatever its shape."""
    if isinstance(value, dict):
        return "sha256" in value or "md5" in value or any(_names_a_package(item) for item in value.values())
    return isinstance(value, list) and any(_names_a_package(item) for item in value)


def names(doc: dict[str, Any]) -> set[str]:
    return {*doc["packages"], *doc["packages.conda"]}


def leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob("*.part")]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
