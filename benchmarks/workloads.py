"""Deterministic workloads for the benchmarks: synthetic channels of any size, written fast.

The runner imports this module but calls the heavy parts (`build`, `seed-journal`) in a child process:
they hold hundreds of MB of records at a time, which the runner, alive for the whole run, should not.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks import synthetic

REPO = Path(__file__).resolve().parents[1]

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
EMPTY_MD5 = hashlib.md5(b"", usedforsecurity=False).hexdigest()


def record(name: str, index: int, size: int, sha256: str, md5: str) -> dict[str, object]:
    return {
        "name": name,
        "version": f"1.{index}",
        "build": "h0_0",
        "build_number": 0,
        "depends": ["libzlib >=1.2.13,<2.0a0"],
        "license": "BSD-3-Clause",
        "md5": md5,
        "sha256": sha256,
        "size": size,
        "subdir": "linux-64",
        "timestamp": 1_700_000_000_000 + index,
    }


def filename(index: int) -> str:
    return f"pkg{index % 5000}-1.{index}-h0_0.conda"


def empty_file_channel(upstream: Path, channel_dir: Path, count: int) -> None:
    """An upstream index of `count` empty packages, and a destination that already holds them all.

    Empty files cost an inode and no data block, so a million of them fit anywhere; a no-op resync over
    them measures listing, journal and planning, which is the point, and not reading bytes.
    """
    packages = {filename(i): record(f"pkg{i % 5000}", i, 0, EMPTY_SHA256, EMPTY_MD5) for i in range(count)}
    doc = {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages, "repodata_version": 1}
    (upstream / "linux-64").mkdir(parents=True, exist_ok=True)
    (upstream / "linux-64" / "repodata.json").write_bytes(orjson.dumps(doc))
    (upstream / "noarch").mkdir(exist_ok=True)
    (upstream / "noarch" / "repodata.json").write_bytes(orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    folder = channel_dir / "linux-64"
    folder.mkdir(parents=True, exist_ok=True)
    for name in packages:
        os.close(os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644))


def small_files_channel(upstream: Path, count: int, size: int, seed: int = 7) -> int:
    """`count` packages of `size` random bytes in linux-64, with a valid index; returns the total bytes."""
    rng = random.Random(seed)
    folder = upstream / "linux-64"
    folder.mkdir(parents=True, exist_ok=True)
    packages = {}
    for index in range(count):
        data = rng.randbytes(size)
        name = filename(index)
        (folder / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        packages[name] = record(
            f"pkg{index % 5000}", index, size, digest, hashlib.md5(data, usedforsecurity=False).hexdigest()
        )
    doc = {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages, "repodata_version": 1}
    (folder / "repodata.json").write_bytes(orjson.dumps(doc))
    (upstream / "noarch").mkdir(exist_ok=True)
    (upstream / "noarch" / "repodata.json").write_bytes(orjson.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    return count * size


# --- cached workloads for sections A, B and C ---------------------------------------------------------
# Each is made once per machine by a child process and kept under --work: its manifest records the spec
# it was made from, so a different spec (or a new WORKLOAD_VERSION) makes it again, and the same spec
# gives the same bytes, names and digests on every machine.

WORKLOAD_VERSION = 1  # bump when a generator changes what it writes
CHUNK = 8 << 20  # random bytes made and written at once: Random.randbytes cannot make 256 MiB in one call
MANIFEST = "manifest.json"
EMPTY_NOARCH = {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}, "repodata_version": 1}


@dataclass(frozen=True)
class PackageSet:
    """A channel of real package files: what the runner needs to drive the tools and check their output."""

    channel: Path  # the folder nginx serves
    files: tuple[tuple[str, int, str], ...]  # (path under channel, size, sha256)

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total(self) -> int:
        return sum(size for _, size, _ in self.files)


@dataclass(frozen=True)
class IndexSet:
    """Section C: a conda-forge-scale index, twice (C1: real files for pkg_list; C2: empty files, present)."""

    c1: Path
    c2: Path
    c2_destination: Path  # mirror_dir already holding C2's files, as a finished download would leave it
    pkg_list: tuple[str, ...]
    records: int
    names: int
    json_bytes: int
    zst_bytes: int
    c1_files: int
    c1_bytes: int


def ensure(folder: Path, spec: dict[str, object]) -> dict[str, object]:
    """The manifest of the workload `spec` describes, made in a child process first if it is not there yet."""
    spec = {**spec, "version": WORKLOAD_VERSION}
    manifest = folder / MANIFEST
    if manifest.exists():
        found: dict[str, object] = orjson.loads(manifest.read_bytes())
        if found.get("spec") == spec:
            return found
    shutil.rmtree(folder, ignore_errors=True)
    print(f"benchmarks: generating {folder.name} (once; kept for later runs)", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "benchmarks.workloads", "build", str(folder), orjson.dumps(spec).decode()],
                   cwd=REPO, env=child_env(), check=True)  # fmt: skip
    made: dict[str, object] = orjson.loads(manifest.read_bytes())
    return made


def package_set(folder: Path, spec: dict[str, object]) -> PackageSet:
    manifest = ensure(folder, spec)
    rows = manifest["files"]
    assert isinstance(rows, list)
    return PackageSet(folder / "channel", tuple((str(p), int(n), str(h)) for p, n, h in rows))


def index_set(folder: Path, spec: dict[str, object]) -> IndexSet:
    m = ensure(folder, spec)
    names = m["pkg_list"]
    assert isinstance(names, list)
    return IndexSet(
        folder / "c1", folder / "c2", folder / "c2-mirror", tuple(str(n) for n in names),
        *(int(str(m[key])) for key in ("records", "names", "json_bytes", "zst_bytes", "c1_files", "c1_bytes")),
    )  # fmt: skip


def child_env() -> dict[str, str]:
    """The environment of every child: this checkout's code first, whatever the venv has installed."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


def build(folder: Path, spec: dict[str, Any]) -> None:
    """Make the workload `spec` describes in `folder`, manifest last (so a cut-short build is made again)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(int(spec["seed"]))
    if spec["kind"] == "lognormal":
        sizes = synthetic.lognormal_sizes(rng, int(spec["count"]), int(spec["median"]), int(spec["mean"]))
        manifest: dict[str, object] = {"files": write_packages(folder / "channel", rng, sizes)}
    elif spec["kind"] == "fixed":
        sizes = [int(spec["size"])] * int(spec["count"])
        manifest = {"files": write_packages(folder / "channel", rng, sizes)}
    elif spec["kind"] == "index":
        manifest = write_index_workload(folder, rng, int(spec["records"]), int(spec["names"]), int(spec["pkg_list"]))
    else:
        raise SystemExit(f"unknown workload kind {spec['kind']!r}")
    (folder / MANIFEST).write_bytes(orjson.dumps({"spec": spec, **manifest}))


def write_packages(channel: Path, rng: random.Random, sizes: list[int]) -> list[tuple[str, int, str]]:
    """One random-bytes file per size in linux-64 with realistic records; returns (path, size, sha256) rows."""
    folder = channel / synthetic.SUBDIR
    folder.mkdir(parents=True, exist_ok=True)
    names = synthetic.package_names(rng, max(1, len(sizes) // 5))
    counts = synthetic.records_per_name(rng, len(names), len(sizes))
    records: dict[str, dict[str, object]] = {}
    rows = []
    for draft, size in zip(synthetic.drafts(rng, names, counts), sizes, strict=True):
        sha256, md5 = write_random(folder / draft.filename, rng, size)
        records[draft.filename] = draft.record(size, sha256, md5)
        rows.append((f"{synthetic.SUBDIR}/{draft.filename}", size, sha256))
    write_repodata(channel, records)
    return rows


def write_random(path: Path, rng: random.Random, size: int) -> tuple[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("wb") as out:
        for start in range(0, size, CHUNK):
            data = rng.randbytes(min(CHUNK, size - start))
            sha256.update(data)
            md5.update(data)
            out.write(data)
    return sha256.hexdigest(), md5.hexdigest()


def write_repodata(channel: Path, records: dict[str, dict[str, object]], zst_level: int = 0) -> tuple[int, int]:
    """linux-64's index (also as .zst when `zst_level`) and an empty noarch one; returns both sizes."""
    data = orjson.dumps(synthetic.repodata(records), option=orjson.OPT_SORT_KEYS)
    (channel / synthetic.SUBDIR / "repodata.json").write_bytes(data)
    compressed = 0
    if zst_level:
        import zstandard  # here, not at the top: only the child that builds a workload needs it

        packed = zstandard.ZstdCompressor(level=zst_level, threads=-1).compress(data)
        (channel / synthetic.SUBDIR / "repodata.json.zst").write_bytes(packed)
        compressed = len(packed)
    (channel / "noarch").mkdir(exist_ok=True)
    (channel / "noarch" / "repodata.json").write_bytes(orjson.dumps(EMPTY_NOARCH))
    return len(data), compressed


INDEX_ZST_LEVEL = 16  # a high level, as channels serve: written once, fetched by every client


def write_index_workload(folder: Path, rng: random.Random, count: int, names: int, picks: int) -> dict[str, object]:
    """C1 and C2 over the same drafts. C1: made-up sizes and digests, except `picks` names chosen for
    pkg_list whose files exist (small). C2: every record an empty file, in the channel and in a mirror."""
    all_names = synthetic.package_names(rng, names)
    counts = synthetic.records_per_name(rng, names, count)
    modest = [name for name, n in zip(all_names, counts, strict=True) if 5 <= n <= 60]
    chosen = set(rng.sample(modest, picks))
    drafts = list(synthetic.drafts(rng, all_names, counts))
    c1_folder = folder / "c1" / synthetic.SUBDIR
    c1_folder.mkdir(parents=True)
    c1: dict[str, dict[str, object]] = {}
    c1_bytes = 0
    for draft in drafts:
        if draft.name in chosen:
            size = rng.randint(1_000, 20_000)
            c1[draft.filename] = draft.record(size, *write_random(c1_folder / draft.filename, rng, size))
            c1_bytes += size
        else:
            c1[draft.filename] = draft.record(synthetic.lognormal_sizes(rng, 1, 150_000, 430_000)[0],
                                              *synthetic.fake_digests(rng))  # fmt: skip
    json_bytes, zst_bytes = write_repodata(folder / "c1", c1, INDEX_ZST_LEVEL)
    del c1
    c2 = {draft.filename: draft.record(0, EMPTY_SHA256, EMPTY_MD5) for draft in drafts}
    for where in (folder / "c2" / synthetic.SUBDIR, folder / "c2-mirror" / "anaconda" / synthetic.SUBDIR):
        where.mkdir(parents=True)
        for filename in c2:
            os.close(os.open(where / filename, os.O_CREAT | os.O_WRONLY, 0o644))
    write_repodata(folder / "c2", c2, INDEX_ZST_LEVEL)
    return {
        "pkg_list": sorted(chosen),
        "records": len(drafts),
        "names": len(all_names),
        "json_bytes": json_bytes,
        "zst_bytes": zst_bytes,
        "c1_files": sum(1 for d in drafts if d.name in chosen),
        "c1_bytes": c1_bytes,
    }


async def seed_journal(mirror_dir: Path, channel: str, subdir: str) -> int:
    """Record every package file in `mirror_dir/channel/subdir` as verified and none as published: the
    journal an interrupted run leaves when all its downloads are done. Uses the engine's own Journal, so
    the rows are what the engine writes; returns how many files it recorded."""
    from mirror_engine.config import MirrorConfig  # imported in the child only, as above
    from mirror_engine.journal import Journal
    from mirror_engine.repodata import is_package_filename

    config = MirrorConfig(channels=("https://example.invalid/unused/",), mirror_dir=mirror_dir, dest_channel=channel)
    journal = await Journal.open(config.state_dir / "journal.sqlite", channel)
    await journal.begin_run()
    folder = mirror_dir / channel / subdir
    entries = [(e.name, e.stat()) for e in os.scandir(folder) if is_package_filename(e.name)]
    for start in range(0, len(entries), 10_000):  # concurrent calls share one group commit
        await asyncio.gather(*(
            journal.verified(subdir, name, sha256=EMPTY_SHA256, md5=None, size=st.st_size, mtime_ns=st.st_mtime_ns)
            for name, st in entries[start : start + 10_000]
        ))  # fmt: skip
    await journal.finish_run("interrupted", "seeded by benchmarks.workloads")
    await journal.close()
    return len(entries)


def main(argv: list[str]) -> int:
    """Run in a child process, so that the runner stays small. `empty UPSTREAM CHANNEL_DIR COUNT`,
    `build FOLDER SPEC_JSON`, or `seed-journal MIRROR_DIR CHANNEL SUBDIR`."""
    match argv:
        case ["empty", upstream, channel_dir, count]:
            empty_file_channel(Path(upstream), Path(channel_dir), int(count))
        case ["build", folder, spec]:
            build(Path(folder), orjson.loads(spec))
        case ["seed-journal", mirror_dir, channel, subdir]:
            asyncio.run(seed_journal(Path(mirror_dir).resolve(), channel, subdir))
        case _:
            raise SystemExit(f"usage: {main.__doc__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
