"""The S3 destination against a real S3 server (SeaweedFS on 127.0.0.1): what lands in the bucket, read back."""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson
import pytest

from mirror_engine.config import MirrorConfig
from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from mirror_engine.destinations import make_destination
from mirror_engine.destinations import s3 as s3_module
from mirror_engine.destinations.base import Destination, FileStat
from mirror_engine.destinations.s3 import S3Destination
from mirror_engine.engine import MirrorRun
from mirror_engine.errors import DestinationError, DestinationRace, UploadRefused
from mirror_engine.progress import NullReporter
from mirror_engine.summary import RunSummary
from tests.helpers import assert_all_sections_sound, assert_index_sound, make_config, mirror, names
from tests.integration.test_v3_records import V3_WHEEL, WHEEL, v3_channel
from tests.s3_server import S3Server, seaweedfs, unique_prefix

BIG = DemoPackage("bigdata", "1.0", "h0_0", payload_size=12_000_000)  # > 11 MB: three parts of 5 MiB
SMALL = DemoPackage("smalldata", "1.0", "h0_0", payload_size=1000)
WRONG_SECRET = "wr0ng-S3cret-Th4t-Must-N0t-Leak"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return unique_prefix()  # one server for the module; each test writes under its own prefix


D = TypeVar("D", bound=S3Destination)


def s3_destination(config: MirrorConfig, s3: S3Server, kind: type[D]) -> D:
    """What make_destination makes, with the module's botocore session (a new one costs ~0.4 s)."""
    return kind.from_config(config, config.state_dir / "staging" / config.dest_channel, session=s3.session)


async def run_into(config: MirrorConfig, destination: Destination) -> RunSummary:
    return await MirrorRun(config, destination, NullReporter(), rng=random.Random(1)).run()


def s3_config(tmp_path: Path, s3: S3Server, prefix: str, root: Path, **keys: Any) -> MirrorConfig:
    destination = s3.destination(prefix, **keys.pop("destination", {}))
    return make_config(tmp_path, channels=[root.as_uri()], platforms=["linux-64"], destination=destination, **keys)


def sha256s(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


async def test_a_mirror_into_s3_holds_what_a_local_mirror_holds(tmp_path: Path, s3: S3Server, prefix: str) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root)
    local = make_config(tmp_path / "local", channels=[root.as_uri()], platforms=["linux-64"])
    remote = s3_config(tmp_path / "remote", s3, prefix, root)
    assert (await mirror(local)).exit_code == 0
    summary = await run_into(remote, s3_destination(remote, s3, S3Destination))
    assert summary.exit_code == 0, summary.failures
    assert sum(row.downloaded for row in summary.rows.values()) == 16
    # Every object read back through the server: the same checks as for a local mirror hold.
    readback = make_config(tmp_path / "readback", channels=[root.as_uri()])
    await s3.download(f"{prefix}/{remote.dest_channel}/", readback.channel_dir)
    for subdir in ("linux-64", "noarch"):
        assert_index_sound(readback, subdir, docs[subdir])  # packages' sha256, .zst == .json, shards agree
    local_files, remote_files = sha256s(local.channel_dir), sha256s(readback.channel_dir)
    assert remote_files.keys() == local_files.keys()
    differ = {name for name in local_files if local_files[name] != remote_files[name]}
    # The shard indexes carry their creation time, the channel page its run's; nothing else may differ.
    assert differ <= {"index.html", "linux-64/repodata_shards.msgpack.zst", "noarch/repodata_shards.msgpack.zst"}
    assert not list((remote.state_dir / "staging").rglob("*.part"))


async def test_a_big_package_goes_up_in_parts_and_reads_back_identical(
    tmp_path: Path, s3: S3Server, prefix: str
) -> None:
    root = tmp_path / "upstream"
    docs = build_channel(root, [BIG, SMALL])
    config = s3_config(tmp_path, s3, prefix, root, destination={"multipart_threshold": "5MiB"})
    summary = await run_into(config, s3_destination(config, s3, S3Destination))
    assert summary.exit_code == 0, summary.failures
    objects = await s3.objects(f"{prefix}/")
    for package, parts in ((BIG, 3), (SMALL, 0)):
        record = docs["linux-64"]["packages.conda"][package.filename(".conda")]
        key = f"{prefix}/{config.dest_channel}/linux-64/{package.filename('.conda')}"
        size, etag = objects[key]
        assert size == record["size"]
        # A multipart object's ETag ends in -<number of parts>; a single PUT's is the plain MD5.
        assert etag.strip('"').endswith(f"-{parts}") if parts else "-" not in etag
        data = await s3.get(key)
        assert data is not None and hashlib.sha256(data).hexdigest() == record["sha256"]
    assert docs["linux-64"]["packages.conda"][BIG.filename(".conda")]["size"] > 11_000_000


async def test_a_failed_multipart_upload_is_aborted(
    tmp_path: Path, s3: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "big.conda"
    source.write_bytes(random.Random(3).randbytes(11_000_000))
    read_part = s3_module._read_part
    parts = 0

    def second_part_mislabelled(handle: IO[bytes], size: int) -> tuple[bytes, str]:
        nonlocal parts
        parts += 1
        chunk, checksum = read_part(handle, size)
        return chunk, checksum if parts != 2 else base64.b64encode(hashlib.sha256(b"other").digest()).decode()

    monkeypatch.setattr(s3_module, "_read_part", second_part_mislabelled)
    config = make_config(tmp_path, destination=s3.destination(prefix, multipart_threshold="5MiB"))
    destination = s3_destination(config, s3, S3Destination)
    key = f"{prefix}/{config.dest_channel}/linux-64/big.conda"
    async with s3.client() as client:  # an upload left open is listed: the check below can see one
        control = await client.create_multipart_upload(Bucket=s3.bucket, Key=f"{prefix}/control")
        listed = await client.list_multipart_uploads(Bucket=s3.bucket, Prefix=f"{prefix}/")
        assert [upload.get("Key") for upload in listed.get("Uploads", [])] == [f"{prefix}/control"]
        await client.abort_multipart_upload(Bucket=s3.bucket, Key=f"{prefix}/control", UploadId=control["UploadId"])
    await destination.open()
    try:
        with pytest.raises(DestinationError, match="the store received other bytes than were sent"):
            await destination.upload_file(source, "linux-64", "big.conda")
    finally:
        await destination.close()
    assert parts == 2  # the store refused the second part, and the third was never read
    async with s3.client() as client:
        listed = await client.list_multipart_uploads(Bucket=s3.bucket, Prefix=f"{prefix}/")
    assert not listed.get("Uploads")
    assert await s3.get(key) is None


class Recording(S3Destination):
    """Notes every write and delete, in order."""

    calls: list[tuple[str, str, str]]

    async def upload_file(self, source: Path, subdir: str, filename: str) -> None:
        self.calls.append(("upload", subdir, filename))
        await super().upload_file(source, subdir, filename)

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        self.calls.append(("index", subdir, name))
        await super().write_index(subdir, name, data)

    async def delete(self, subdir: str, filenames: list[str]) -> None:
        self.calls.extend(("delete", subdir, filename) for filename in filenames)
        await super().delete(subdir, filenames)


def recording(config: MirrorConfig, s3: S3Server) -> Recording:
    destination = s3_destination(config, s3, Recording)
    destination.calls = []
    return destination


async def test_a_second_run_uploads_nothing_and_an_upstream_removal_is_deleted_after_the_index(
    tmp_path: Path, s3: S3Server, prefix: str
) -> None:
    root = tmp_path / "upstream"
    build_channel(root)
    config = s3_config(tmp_path, s3, prefix, root)
    first = recording(config, s3)
    assert (await run_into(config, first)).exit_code == 0
    assert sum(call[0] == "upload" for call in first.calls) == 16
    before = await s3.objects(f"{prefix}/")

    second = recording(config, s3)
    summary = await run_into(config, second)
    assert summary.exit_code == 0 and sum(row.downloaded for row in summary.rows.values()) == 0
    assert second.calls == []
    assert await s3.objects(f"{prefix}/") == before  # not one object rewritten (the ETags are the same)

    base = f"{prefix}/{config.dest_channel}/linux-64"
    held = names(orjson.loads(await s3.get(f"{base}/repodata.json") or b""))
    zlib = {"zlib-1.3.1-h5eee18b_0.conda", "zlib-1.3.1-h5eee18b_0.tar.bz2"}
    assert zlib <= held
    build_channel(root, [package for package in DEMO_PACKAGES if package.name != "zlib"])  # upstream drops zlib
    third = recording(config, s3)
    assert (await run_into(config, third)).exit_code == 0
    assert names(orjson.loads(await s3.get(f"{base}/repodata.json") or b"")) == held - zlib
    assert not zlib & {key.rsplit("/", 1)[1] for key in await s3.objects(f"{base}/")}
    index_written = third.calls.index(("index", "linux-64", "repodata.json"))
    deleted = [i for i, call in enumerate(third.calls) if call[0] == "delete"]
    assert {third.calls[i][2] for i in deleted} == zlib
    assert min(deleted) > index_written  # clients never see an index naming a deleted file


@pytest.mark.parametrize("wrong", ["secret", "key_id"])
async def test_wrong_credentials_fail_in_one_line_naming_the_bucket_and_never_show_the_secret(
    tmp_path: Path, s3: S3Server, prefix: str, wrong: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)  # botocore's own debug logging included
    monkeypatch.setenv("MIRROR_S3_SECRET", WRONG_SECRET if wrong == "secret" else s3.secret_key)
    keys = {"secret_access_key": "${MIRROR_S3_SECRET}"} | ({"access_key_id": "AKIDNOBODY"} if wrong == "key_id" else {})
    root = tmp_path / "upstream"
    build_channel(root)
    config = s3_config(tmp_path, s3, prefix, root, destination=keys)
    with pytest.raises(UploadRefused) as caught:
        await run_into(config, make_destination(config))  # as the command line makes it
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"s3://{s3.bucket}/{prefix}/")
    if wrong == "secret":
        assert "the secret key does not match the access key ID (SignatureDoesNotMatch)" in message
    else:
        assert "the server knows no such access key ID (InvalidAccessKeyId)" in message
    assert "check access_key_id and secret_access_key under destination:" in message
    for secret in (WRONG_SECRET, s3.secret_key):
        assert secret not in message and secret not in caplog.text
    assert await s3.objects(f"{prefix}/") == {}


async def test_a_missing_bucket_and_an_unreachable_endpoint_are_one_line_each(
    tmp_path: Path, s3: S3Server, prefix: str
) -> None:
    keys = s3.destination(prefix) | {"url": "s3://no-such-bucket/x"}
    with pytest.raises(DestinationError) as missing:
        await make_destination(make_config(tmp_path, destination=keys)).open()
    assert str(missing.value) == (
        f"s3://no-such-bucket: no such bucket at {s3.endpoint}; create it first (mirror_engine never creates buckets)"
    )
    closed = "http://127.0.0.1:9"  # discard: nothing listens there
    with pytest.raises(DestinationError) as unreachable:
        await make_destination(make_config(tmp_path, destination=s3.destination(prefix, endpoint_url=closed))).open()
    assert str(unreachable.value).startswith(f"{closed}: cannot connect to the S3 endpoint")


async def test_credentials_come_from_the_aws_environment_when_the_config_has_none(
    tmp_path: Path, s3: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud's metadata address
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    keys = {k: v for k, v in s3.destination(prefix).items() if k not in ("access_key_id", "secret_access_key")}
    config = make_config(tmp_path, destination=keys)
    destination = make_destination(config)
    await destination.open()
    try:
        await destination.write_index("noarch", "probe.json", b"{}")
        assert await destination.read_index("noarch", "probe.json") == b"{}"
    finally:
        await destination.close()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
    with pytest.raises(DestinationError, match=re.escape("check the AWS credentials in the environment or ~/.aws")):
        await make_destination(config).open()


class Raced(S3Destination):
    """Right after this run lists linux-64 (its start, for that subdir), another writer puts repodata.json."""

    server: S3Server
    rival: bytes

    async def listing(self, subdir: str) -> dict[str, FileStat]:
        found = await super().listing(subdir)
        if subdir == "linux-64":
            async with self.server.client() as client:
                await client.put_object(Bucket=self.bucket, Key=f"{self.base}/linux-64/repodata.json", Body=self.rival)
        return found


def raced(config: MirrorConfig, server: S3Server, rival: bytes) -> Raced:
    destination = s3_destination(config, server, Raced)
    destination.server, destination.rival = server, rival
    return destination


@pytest.mark.parametrize("before", ["absent", "published"])
async def test_an_index_another_writer_changed_during_the_run_is_not_overwritten(
    tmp_path: Path, s3: S3Server, prefix: str, before: str
) -> None:
    root = tmp_path / "upstream"
    build_channel(root)
    config = s3_config(tmp_path, s3, prefix, root)
    if before == "published":
        assert (await run_into(config, s3_destination(config, s3, S3Destination))).exit_code == 0
        config = config.model_copy(update={"blacklist": ("zlib",)})  # so that this run has a new index to write
    rival = b'{"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": {}, "written_by": "the other"}'
    key = f"{prefix}/{config.dest_channel}/linux-64/repodata.json"
    with pytest.raises(DestinationRace) as caught:
        await run_into(config, raced(config, s3, rival))
    assert str(caught.value) == (
        f"s3://{s3.bucket}/{key}: changed by another writer during this run; two mirrors are writing this index, "
        "and only one may own a subdir (docs/scaling.md)"
    )
    assert await s3.get(key) == rival


async def test_another_writer_publishing_the_same_index_is_no_conflict(
    tmp_path: Path, s3: S3Server, prefix: str
) -> None:
    """Two hosts with the same filters both publish noarch: the second finds the first's identical bytes."""
    root = tmp_path / "upstream"
    build_channel(root)
    local = make_config(tmp_path / "local", channels=[root.as_uri()], platforms=["linux-64"])
    assert (await mirror(local)).exit_code == 0
    same = (local.channel_dir / "linux-64" / "repodata.json").read_bytes()
    config = s3_config(tmp_path, s3, prefix, root)
    summary = await run_into(config, raced(config, s3, same))
    assert summary.exit_code == 0, summary.failures
    assert await s3.get(f"{prefix}/{config.dest_channel}/linux-64/repodata.json") == same


async def test_a_merge_that_loses_the_race_reads_the_winner_and_merges_again(
    tmp_path: Path, s3: S3Server, prefix: str
) -> None:
    config = make_config(tmp_path, destination=s3.destination(prefix))
    destination = s3_destination(config, s3, S3Destination)
    key = f"{prefix}/{config.dest_channel}/channeldata.json"
    seen: list[bytes | None] = []

    def add_ours(current: bytes | None) -> bytes:
        """Runs in a thread; the first time, another host writes its version between our read and our write."""
        seen.append(current)
        if len(seen) == 1:
            s3.put_blocking(key, b'{"packages": {"theirs": {}}}')
        packages = orjson.loads(current)["packages"] if current else {}
        return orjson.dumps({"packages": {**packages, "ours": {}}})

    await destination.open()
    try:
        await destination.update_index("", "channeldata.json", add_ours)
    finally:
        await destination.close()
    assert seen == [None, b'{"packages": {"theirs": {}}}']
    assert orjson.loads(await s3.get(key) or b"") == {"packages": {"theirs": {}, "ours": {}}}


async def test_listings_read_every_page_and_deletes_go_in_batches(
    tmp_path: Path, s3: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 pages listings at 1000 keys and deletes at most 1000 at once; smaller limits show the same on 23 keys."""
    monkeypatch.setattr(s3_module, "LIST_PAGE", 5)
    monkeypatch.setattr(s3_module, "DELETE_BATCH", 4)
    config = make_config(tmp_path, destination=s3.destination(prefix))
    destination = s3_destination(config, s3, S3Destination)
    files = [(f"shards/{number:02d}.msgpack.zst", b"%d" % number) for number in range(22)]
    await destination.open()
    try:
        assert await destination.write_absent("linux-64", files) == 22
        assert await destination.write_absent("linux-64", [*files[:10], ("shards/new.msgpack.zst", b"n")]) == 1
        listed = await destination.list_folder("linux-64", "shards")
        assert set(listed) == {name.removeprefix("shards/") for name, _ in files} | {"new.msgpack.zst"}
        assert all(abs(mtime - time.time()) < 600 for mtime in listed.values())
        await destination.delete("linux-64", [name for name, _ in files])
        assert set(await destination.list_folder("linux-64", "shards")) == {"new.msgpack.zst"}
    finally:
        await destination.close()
    assert set(await s3.objects(f"{prefix}/")) == {f"{prefix}/{config.dest_channel}/linux-64/shards/new.msgpack.zst"}


async def test_plan_reads_the_bucket_before_any_open(tmp_path: Path, s3: S3Server, prefix: str) -> None:
    root = tmp_path / "upstream"
    build_channel(root)
    config = s3_config(tmp_path, s3, prefix, root)

    async def planned() -> int:
        planner = MirrorRun(config, make_destination(config), NullReporter())
        summary = await planner.run(dry_run=True)
        return sum(row.to_fetch for row in summary.rows.values())

    assert await planned() == 16
    assert (await run_into(config, s3_destination(config, s3, S3Destination))).exit_code == 0
    assert await planned() == 0


async def test_v3_records_reach_the_bucket_filtered_and_whole(tmp_path: Path, s3: S3Server, prefix: str) -> None:
    root = tmp_path / "upstream"
    upstream = v3_channel(root)
    remote = s3_config(tmp_path / "remote", s3, prefix, root, blacklist=["gdbm"])
    summary = await run_into(remote, s3_destination(remote, s3, S3Destination))
    assert summary.exit_code == 0, summary.failures
    readback = make_config(tmp_path / "readback", channels=[root.as_uri()])
    await s3.download(f"{prefix}/{remote.dest_channel}/", readback.channel_dir)
    doc = assert_all_sections_sound(readback, "linux-64", upstream, filtered={"gdbm"})
    assert set(doc["v3"]["conda"]) == {"zlib-1.3.1-h5eee18b_0", "ncurses-6.4-h6a678d5_0"}
    assert set(doc["v3"]["tar.bz2"]) == {"libffi-3.4.4-h6a678d5_1"}
    assert set(doc["packages.whl"]) == {WHEEL} and set(doc["v3"]["whl"]) == {WHEEL[:-4], V3_WHEEL[:-4]}
    objects = await s3.objects(f"{prefix}/{remote.dest_channel}/linux-64/")
    packages = {key.rsplit("/", 1)[1] for key in objects if key.endswith((".conda", ".tar.bz2", ".whl"))}
    assert packages == {
        "zlib-1.3.1-h5eee18b_0.conda",
        "ncurses-6.4-h6a678d5_0.conda",
        "libffi-3.4.4-h6a678d5_1.tar.bz2",
        "readline-8.2-h5eee18b_0.conda",
        WHEEL,
        V3_WHEEL,
    }
