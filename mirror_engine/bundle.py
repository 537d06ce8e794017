"""Air-gap bundles: a mirror (or what changed since a snapshot) as split tar volumes with a manifest.

    OUT_DIR/bundle.tar.000, .001, ...   one tar stream cut into volumes of at most --split-size bytes
    OUT_DIR/manifest.json               volumes and files with size and sha256, removed files, snapshots
    OUT_DIR/snapshot-<id>.json          every file of the exported channel: keep it for the next --since

Members are `<dest_channel>/<subdir>/<file>`, so an extracted bundle is a channel folder a config can name
as a plain path, as the reference tool's air-gap flow does. Nothing in a bundle is trusted until every
volume and every file matches the manifest.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mirror_engine.errors import MirrorError
from mirror_engine.repodata import is_package_filename

BUNDLE_VERSION = 1
BLOCK = 1 << 20
VOLUME_PREFIX = "bundle.tar."


class BundleError(MirrorError):
    """A bundle that does not match its manifest, or a delta that does not fit the destination."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    channel: str
    files: dict[str, tuple[int, str]]  # path inside the channel -> (size, sha256)

    @property
    def id(self) -> str:
        canonical = json.dumps({"channel": self.channel, "files": self.files}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        files = {path: list(entry) for path, entry in sorted(self.files.items())}
        return json.dumps(
            {"bundle_version": BUNDLE_VERSION, "channel": self.channel, "id": self.id, "files": files}, indent=1
        )

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        try:
            doc = json.loads(path.read_text())
            return cls(doc["channel"], {name: (int(size), str(sha)) for name, (size, sha) in doc["files"].items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path}: not a snapshot written by export ({exc})") from None


def channel_files(channel_dir: Path) -> Iterator[Path]:
    """What a bundle carries: every file of the channel but temporary and hidden ones."""
    for path in sorted(channel_dir.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(channel_dir).parts):
            yield path


class _Volumes:
    """A write-only stream cut into files of at most `limit` bytes, each hashed as it is written."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        self.done: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = None
        self._hash = hashlib.sha256()
        self._size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            if self._file is None or self._size >= self.limit:
                self._roll()
            assert self._file is not None
            take = min(len(view), self.limit - self._size)
            self._file.write(view[:take])
            self._hash.update(view[:take])
            self._size += take
            view = view[take:]
        return len(data)

    def _roll(self) -> None:
        self._close_current()
        self._file = (self.folder / f"{VOLUME_PREFIX}{len(self.done):03d}").open("wb")

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self.done.append({"name": Path(self._file.name).name, "size": self._size, "sha256": self._hash.hexdigest()})
            self._file, self._hash, self._size = None, hashlib.sha256(), 0

    def close(self) -> None:
        self._close_current()


class _HashingReader:
    """A file read once: tarfile copies it while we hash it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.sha256.update(data)
        return data


def export_bundle(
    channel_dir: Path, channel: str, out_dir: Path, split_size: int, since: Snapshot | None
) -> dict[str, Any]:
    """Write the bundle; returns its manifest. With `since`, only files new or changed since that snapshot."""
    if since is not None and since.channel != channel:
        raise BundleError(f"--since: the snapshot is of channel {since.channel!r}, not {channel!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    volumes = _Volumes(out_dir, split_size)
    current: dict[str, tuple[int, str]] = {}
    carried: dict[str, tuple[int, str]] = {}
    try:
        _write_members(volumes, channel_dir, channel, since, current, carried)
    finally:
        volumes.close()
    snapshot = Snapshot(channel, current)
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "channel": channel,
        "base": since.id if since else None,
        "snapshot": snapshot.id,
        "volumes": volumes.done,
        "files": {name: list(entry) for name, entry in sorted(carried.items())},
        "removed": sorted(set(since.files) - set(current)) if since else [],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (out_dir / f"snapshot-{snapshot.id[:16]}.json").write_text(snapshot.to_json())
    return manifest


def _write_members(
    volumes: _Volumes,
    channel_dir: Path,
    channel: str,
    since: Snapshot | None,
    current: dict[str, tuple[int, str]],
    carried: dict[str, tuple[int, str]],
) -> None:
    """Stream the channel's files into the tar volumes, hashing each as it is read (once)."""
    with tarfile.open(fileobj=volumes, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        for path in channel_files(channel_dir):
            name = path.relative_to(channel_dir).as_posix()
            size = path.stat().st_size
            previous = since.files.get(name) if since else None
            if previous is not None and previous[0] == size and not _index_file(name):
                current[name] = previous  # a package or shard never changes under its name: not read again
                continue
            info = archive.gettarinfo(str(path), arcname=f"{channel}/{name}")
            with path.open("rb") as handle:
                reader = _HashingReader(handle)
                archive.addfile(info, reader)
            current[name] = carried[name] = (size, reader.sha256.hexdigest())


def _index_file(name: str) -> bool:
    """Files whose bytes change under the same name: always carried. Packages and shards never change."""
    return not is_package_filename(name.rsplit("/", 1)[-1]) and "/shards/" not in f"/{name}"


class _VolumeReader:
    """The volumes read back as one stream, each checked against the manifest as it ends."""

    def __init__(self, bundle: Path, volumes: list[dict[str, Any]]) -> None:
        self._bundle, self._pending = bundle, list(volumes)
        self._file: IO[bytes] | None = None
        self._expect: dict[str, Any] = {}
        self._hash = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        while True:
            if self._file is None:
                if not self._pending:
                    return b""
                self._expect = self._pending.pop(0)
                path = self._bundle / str(self._expect["name"])
                try:
                    self._file = path.open("rb")
                except OSError:
                    raise BundleError(f"{path}: volume missing") from None
                self._hash, self._size = hashlib.sha256(), 0
            data = self._file.read(size if size > 0 else BLOCK)
            if data:
                self._hash.update(data)
                self._size += len(data)
                return data
            self._end_volume()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _end_volume(self) -> None:
        assert self._file is not None
        name = self._expect["name"]
        self._file.close()
        self._file = None
        if self._size != self._expect["size"] or self._hash.hexdigest() != self._expect["sha256"]:
            raise BundleError(f"{self._bundle / name}: volume does not match the manifest (truncated or changed)")


def read_manifest(bundle: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((bundle / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle / 'manifest.json'}: cannot read the manifest ({exc})") from None
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise BundleError(f"{bundle / 'manifest.json'}: not a version {BUNDLE_VERSION} bundle manifest")
    return manifest


def unpack_bundle(bundle: Path, target: Path | None) -> dict[str, Any]:
    """Check every volume and file against the manifest, extracting into `target` when given.

    Raises BundleError naming the volume or file at the first mismatch; a caller extracting must then
    discard `target`. Returns the manifest.
    """
    manifest = read_manifest(bundle)
    channel = str(manifest["channel"])
    expected = {name: (int(size), str(sha)) for name, (size, sha) in manifest["files"].items()}
    seen: set[str] = set()
    reader = _VolumeReader(bundle, manifest["volumes"])
    try:
        _check_members(reader, bundle, channel, expected, seen, target)
    except tarfile.TarError as exc:
        raise BundleError(f"{bundle}: the volumes are not a readable tar stream ({exc})") from None
    finally:
        reader.close()
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleError(f"{bundle}: {channel}/{missing[0]} is in the manifest but not in the volumes")
    return manifest


def _check_members(
    reader: _VolumeReader,
    bundle: Path,
    channel: str,
    expected: dict[str, tuple[int, str]],
    seen: set[str],
    target: Path | None,
) -> None:
    with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            name = _member_name(member, channel)
            if name not in expected:
                raise BundleError(f"{bundle}: {member.name} is not in the manifest")
            source = archive.extractfile(member)
            assert source is not None
            digest, size = hashlib.sha256(), 0
            sink = _open_target(target, channel, name)
            try:
                while data := source.read(BLOCK):
                    digest.update(data)
                    size += len(data)
                    if sink is not None:
                        sink.write(data)
            finally:
                if sink is not None:
                    sink.close()
            if (size, digest.hexdigest()) != expected[name]:
                raise BundleError(f"{bundle}: {member.name} does not match the manifest")
            seen.add(name)


def _member_name(member: tarfile.TarInfo, channel: str) -> str:
    """A member's path inside the channel; anything that could land outside it is refused."""
    parts = Path(member.name).parts
    if (
        not member.isfile()
        or len(parts) < 2
        or parts[0] != channel
        or any(p in ("..", "") for p in parts)
        or member.name.startswith("/")
    ):
        raise BundleError(f"refused member {member.name!r}: not a plain file of channel {channel!r}")
    return "/".join(parts[1:])


def _open_target(target: Path | None, channel: str, name: str) -> IO[bytes] | None:
    if target is None:
        return None
    path = target / channel / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")
