"""Real `python -m mirror_engine run` processes writing one S3 bucket (SeaweedFS on 127.0.0.1): several hosts,
each owning its platforms, publish one channel together (docs/scaling.md); a wrong secret is one line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from mirror_engine.demo import DEMO_PACKAGES, DemoPackage, build_channel
from tests.helpers import names
from tests.s3_server import S3Server, seaweedfs, unique_prefix

REPO = Path(__file__).resolve().parents[2]
OSX = (
    DemoPackage("zlib", "1.3.1", "h53f4e23_0", subdir="osx-arm64", payload_size=50_000),
    DemoPackage("libcxx", "17.0.6", "h5f092b4_0", subdir="osx-arm64", payload_size=80_000),
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def write_config(path: Path, s3: S3Server, prefix: str, channel: Path, **keys: Any) -> Path:
    """A host's config: the secret is a ${VAR} reference, as docs/destinations.md shows."""
    destination = s3.destination(prefix) | {"secret_access_key": "${MIRROR_S3_SECRET}"}
    path.write_text(yaml.safe_dump({"channels": [channel.as_uri()], "destination": destination, **keys}))
    return path


async def run_cli(config: Path, secret: str, *, expect: int) -> str:
    """`run CONFIG` with the S3 secret in its environment, which must exit with `expect`; its output."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MIRROR_S3_SECRET": secret, "AWS_EC2_METADATA_DISABLED": "true"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mirror_engine", "run", str(config), "--progress", "log",
        cwd=config.parent, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == expect, output.decode()
    return output.decode()


async def test_two_hosts_with_their_own_platforms_publish_one_channel(tmp_path: Path, s3: S3Server) -> None:
    channel = tmp_path / "upstream"
    docs = build_channel(channel, (*DEMO_PACKAGES, *OSX))
    prefix = unique_prefix()
    hosts = [
        write_config(tmp_path / f"{platform}.yaml", s3, prefix, channel, platforms=[platform], mirror_dir=platform)
        for platform in ("linux-64", "osx-arm64")
    ]
    await asyncio.gather(*(run_cli(config, s3.secret_key, expect=0) for config in hosts))  # at the same time
    base = f"{prefix}/anaconda"
    for subdir in ("linux-64", "osx-arm64", "noarch"):  # noarch: both hosts published the same bytes
        published = orjson.loads(await s3.get(f"{base}/{subdir}/repodata.json") or b"")
        assert names(published) == names(docs[subdir])
    channeldata = orjson.loads(await s3.get(f"{base}/channeldata.json") or b"")
    assert channeldata["subdirs"] == ["linux-64", "noarch", "osx-arm64"]
    held = {name: entry["subdirs"] for name, entry in channeldata["packages"].items()}
    assert held["zlib"] == ["linux-64", "osx-arm64"]  # one name, the subdirs of both hosts
    assert held["libcxx"] == ["osx-arm64"] and held["numpy"] == ["linux-64"] and held["tzdata"] == ["noarch"]
    expected = {
        r["name"] for subdir, doc in docs.items() for r in (*doc["packages"].values(), *doc["packages.conda"].values())
    }
    assert set(held) == expected


async def test_a_wrong_secret_exits_1_with_one_line_that_names_the_bucket_and_not_the_secret(
    tmp_path: Path, s3: S3Server
) -> None:
    channel = tmp_path / "upstream"
    build_channel(channel)
    prefix = unique_prefix()
    config = write_config(tmp_path / "host.yaml", s3, prefix, channel, platforms=["linux-64"])
    wrong = "Wr0ng-S3cret-N0t-F0r-Pr1nting"
    output = await run_cli(config, wrong, expect=1)
    assert output.splitlines()[-1] == (
        f"mirror-engine: error: s3://{s3.bucket}/{prefix}/anaconda/: the secret key does not match the access key "
        "ID (SignatureDoesNotMatch); check access_key_id and secret_access_key under destination:"
    )
    assert wrong not in output and s3.secret_key not in output
    assert await s3.objects(f"{prefix}/") == {}
