"""A channel in an S3-compatible bucket (AWS, MinIO, Ceph RGW, SeaweedFS): checksummed uploads, conditional indexes.

Index files are written only over what this run read, so two mirrors sharing a bucket cannot silently undo
each other.

Keys are `<prefix>/<dest_channel>/<subdir>/<file>`; files of the channel root have no subdir. The bucket must
exist: we never create one (its region, policy, versioning and lifecycle are the owner's choices).

Conditional writes: `repodata.json` is written with `If-Match` on the ETag this run first saw for it (in the
listing made while planning, or a HEAD/GET), or `If-None-Match: *` when it was absent. A 412 means another
writer replaced it meanwhile: the run stops with `DestinationRace` instead of overwriting it, unless that
writer published the very bytes we were about to (two hosts mirroring the same noarch with the same filters).
`channeldata.json` is read, merged and written back with `If-Match`, retried when another host got in first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import logging
import os
import posixpath
import random
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Self, TypeVar
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, ClientCreatorContext
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from mirror_engine.destinations.base import FileStat, IndexUpdate
from mirror_engine.destinations.staged import StagedDestination
from mirror_engine.errors import DestinationError, DestinationRace, UploadRefused
from mirror_engine.repodata import is_package_filename

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectTypeDef

    from mirror_engine.config import DestinationConfig, MirrorConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

GUARDED = frozenset({"repodata.json"})  # what clients read first; overwritten only if unchanged since we read it
BOTOCORE_ATTEMPTS = 3  # botocore's own retries of 5xx/throttling/resets; our retries wrap the whole upload
DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys
LIST_PAGE = 1000  # keys per ListObjectsV2 page, the most S3 gives
MAX_PARTS = 10_000  # S3's limit on the parts of one upload: bigger files get bigger parts
UPDATE_ATTEMPTS = 5  # read-merge-write rounds of channeldata.json before giving up on a busy writer
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412"})
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
CREDENTIAL_PROBLEMS = {
    "SignatureDoesNotMatch": "the secret key does not match the access key ID",
    "InvalidAccessKeyId": "the server knows no such access key ID",
    "AccessDenied": "access denied to these credentials",
    "403": "access denied (a wrong secret key, or credentials without this permission)",  # HEAD has no body
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
}
CONTENT_TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8"}


class _Conflict(Exception):
    """A conditional write found the object changed (412/409): callers decide what that means."""


class S3Destination(StagedDestination):
    def __init__(
        self,
        settings: DestinationConfig,
        channel: str,
        staging_dir: Path,
        *,
        workers: int = 16,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
        session: AioSession | None = None,
    ) -> None:
        super().__init__(staging_dir)
        url = urlsplit(settings.url)
        self.settings = settings
        self.bucket = url.netloc
        self.base = "/".join(part for part in (*url.path.split("/"), channel) if part)
        self.part_size = settings.multipart_bytes
        self._workers = workers
        self._timeouts = (connect_timeout, read_timeout)
        self._session = session or AioSession()  # reading botocore's S3 model takes it ~0.4 s: one per run
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None
        self._seen: dict[str, str | None] = {}  # guarded key -> ETag when this run first saw it (None: absent)
        self._rng = random.Random()

    @classmethod
    def from_config(cls, config: MirrorConfig, staging_dir: Path, *, session: AioSession | None = None) -> Self:
        assert config.destination is not None
        return cls(
            config.destination,
            config.dest_channel,
            staging_dir,
            workers=config.concurrency,
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            session=session,
        )

    @property
    def display(self) -> str:
        return f"s3://{self.bucket}/{self.base}"

    # --- the client ---

    async def connect(self) -> None:
        """Open the run's client and prove the endpoint, the credentials and the bucket with one listing."""
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        try:
            client = await self._enter_client(stack)
            with self._errors(f"{self.display}/"):
                await client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.base}/", MaxKeys=1)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._client = stack, client

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @contextlib.asynccontextmanager
    async def _s3(self) -> AsyncIterator[S3Client]:
        """The run's client; before `open` (plan, explain), a client made for this one call, since
        nothing would close a client kept past it."""
        if self._client is not None:
            yield self._client
            return
        async with contextlib.AsyncExitStack() as stack:
            yield await self._enter_client(stack)

    async def _enter_client(self, stack: contextlib.AsyncExitStack) -> S3Client:
        try:
            return await stack.enter_async_context(self._create_client())
        except ValueError as exc:  # botocore's word for an endpoint_url it cannot use
            raise DestinationError(
                f"destination.endpoint_url: {_one_line(str(exc))}; use http(s)://host:port"
            ) from None

    def _create_client(self) -> ClientCreatorContext[S3Client]:
        settings = self.settings
        connect_timeout, read_timeout = self._timeouts
        config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=self._workers + 4,  # the transfer workers, plus index writes beside them
            retries={"max_attempts": BOTOCORE_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": "path"},  # MinIO, SeaweedFS and Ceph serve buckets as paths
            # We send our own SHA-256 where it matters; no CRC32 that older S3 servers refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            warm_up_loader_caches=True,  # botocore's service JSON is read in a thread, not on the loop
        )
        region = str(
            settings.region
            or self._session.get_config_variable("region")
            or os.environ.get("AWS_REGION")
            or "us-east-1"
        )
        # true: botocore's default, which honours AWS_CA_BUNDLE; false, or a CA bundle of our own.
        verify = None if settings.ssl_verify is True else str(settings.ssl_verify) if settings.ssl_verify else False
        key_id, secret, token = self._credentials()
        return self._session.create_client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=region,
            verify=verify,
            config=config,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
        )

    def _credentials(self) -> tuple[str | None, str | None, str | None]:
        """The config's keys, or none: botocore's own chain (environment, ~/.aws files, roles) then applies."""
        settings = self.settings
        key_id, secret, token = (
            None if value is None else value.get_secret_value()
            for value in (settings.access_key_id, settings.secret_access_key, settings.session_token)
        )
        if (key_id is None) != (secret is None) or (token is not None and key_id is None):
            raise DestinationError(
                f"{self.display}: access_key_id and secret_access_key go together (session_token needs both); "
                "give both, or none to use the AWS environment variables and files"
            )
        return key_id, secret, token

    # --- keys and errors ---

    def _key(self, subdir: str, name: str) -> str:
        return "/".join(part for part in (self.base, subdir, name) if part)

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @contextlib.contextmanager
    def _errors(self, subject: str) -> Iterator[None]:
        """botocore's errors as ours: one line naming the bucket or key, never a credential."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(subject, exc) from None
        except BotoCoreError as exc:
            raise self._transport_error(subject, exc) from None

    def _client_error(self, subject: str, exc: ClientError) -> DestinationError:
        code, status = _code(exc), _status(exc)
        if code == "NoSuchBucket":
            return DestinationError(
                f"s3://{self.bucket}: no such bucket at {self._endpoint()}; create it first "
                "(mirror_engine never creates buckets)"
            )
        if code in CREDENTIAL_PROBLEMS:  # refused as the HTTP destination's 401/403 are: retrying cannot help
            return UploadRefused(f"{subject}: {CREDENTIAL_PROBLEMS[code]} ({code}); check {self._credential_source()}")
        if code in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
            return DestinationError(f"{subject}: the store received other bytes than were sent ({code})")
        message = _one_line(exc.response.get("Error", {}).get("Message") or "failed")
        return DestinationError(f"{subject}: {code}: {message} (HTTP {status})")

    def _transport_error(self, subject: str, exc: BotoCoreError) -> DestinationError:
        endpoint = self._endpoint()
        if isinstance(exc, NoCredentialsError):
            return DestinationError(
                f"s3://{self.bucket}: no credentials: set access_key_id and secret_access_key under "
                "destination:, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if isinstance(exc, SSLError):
            return DestinationError(
                f"{endpoint}: the TLS certificate is not trusted; set destination.ssl_verify to its CA bundle"
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
            return DestinationError(f"{endpoint}: cannot connect to the S3 endpoint ({subject})")
        if isinstance(exc, ReadTimeoutError):
            return DestinationError(f"{endpoint}: no answer within read_timeout ({subject})")
        return DestinationError(f"{subject}: {_one_line(str(exc))}")

    def _endpoint(self) -> str:
        return self.settings.endpoint_url or "AWS S3"

    def _credential_source(self) -> str:
        if self.settings.access_key_id is not None:
            return "access_key_id and secret_access_key under destination:"
        return "the AWS credentials in the environment or ~/.aws"

    # --- reading ---

    async def listing(self, subdir: str) -> dict[str, FileStat]:
        """Package files of a subdir; also notes the ETags of its guarded index files, as this run's start."""
        prefix = f"{self._key(subdir, '')}/"
        found: dict[str, FileStat] = {}
        etags: dict[str, str] = {}
        for item in await self._list(prefix):
            name = item["Key"][len(prefix) :]
            if name in GUARDED:
                etags[name] = item["ETag"]
            elif is_package_filename(name):
                found[name] = FileStat(item["Size"], 0)  # no mtime in S3 that the journal could rely on
        for name in GUARDED:
            self._seen.setdefault(self._key(subdir, name), etags.get(name))
        return found

    async def stat_stored(self, subdir: str, filename: str) -> FileStat | None:
        key = self._key(subdir, filename)
        async with self._s3() as client:
            with self._errors(self._url(key)):
                head = await _missing_as_none(client.head_object(Bucket=self.bucket, Key=key))
        if filename in GUARDED:
            self._seen.setdefault(key, None if head is None else head["ETag"])
        return None if head is None else FileStat(head["ContentLength"], 0)

    async def read_index(self, subdir: str, name: str) -> bytes | None:
        key = self._key(subdir, name)
        data, etag = await self._get(key)
        if name in GUARDED:
            self._seen.setdefault(key, etag)
        return data

    async def list_folder(self, subdir: str, folder: str) -> dict[str, float]:
        prefix = f"{self._key(subdir, folder)}/"
        return {item["Key"][len(prefix) :]: item["LastModified"].timestamp() for item in await self._list(prefix)}

    async def _list(self, prefix: str) -> list[ObjectTypeDef]:
        """Every object directly under `prefix` (not in its sub-folders), all pages of the listing."""
        found: list[ObjectTypeDef] = []
        async with self._s3() as client:
            with self._errors(self._url(prefix)):
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": LIST_PAGE}
                )
                async for page in pages:
                    found.extend(page.get("Contents", []))
        return found

    async def _get(self, key: str) -> tuple[bytes | None, str | None]:
        """An object's bytes and ETag; (None, None) when it does not exist."""
        async with self._s3() as client:
            with self._errors(self._url(key)):
                answer = await _missing_as_none(client.get_object(Bucket=self.bucket, Key=key))
                if answer is None:
                    return None, None
                async with answer["Body"] as body:
                    return await body.read(), answer["ETag"]

    # --- writing ---

    async def upload_file(self, source: Path, subdir: str, filename: str) -> None:
        key = self._key(subdir, filename)
        size = (await asyncio.to_thread(source.stat)).st_size
        async with self._s3() as client:
            with self._errors(self._url(key)):
                if size >= self.part_size:
                    await self._upload_parts(client, key, source, size)
                else:
                    await self._upload_whole(client, key, source, size)
                head = await client.head_object(Bucket=self.bucket, Key=key)
        if head["ContentLength"] != size:
            raise DestinationError(f"{self._url(key)}: {head['ContentLength']} bytes stored, {size} sent")

    async def _upload_whole(self, client: S3Client, key: str, source: Path, size: int) -> None:
        """One PUT streamed from disk, with its SHA-256 for the store to check the bytes it got."""
        checksum = await asyncio.to_thread(_file_checksum, source)
        handle = await asyncio.to_thread(source.open, "rb")
        try:
            await client.put_object(
                Bucket=self.bucket, Key=key, Body=handle, ContentLength=size, ChecksumSHA256=checksum
            )
        finally:
            handle.close()

    async def _upload_parts(self, client: S3Client, key: str, source: Path, size: int) -> None:
        """A multipart upload, one part in memory at a time, each with its SHA-256; aborted on any failure
        (cancellation included) so no unfinished parts are left billed in the bucket."""
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        started = await client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256")
        upload_id = started["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            handle = await asyncio.to_thread(source.open, "rb")
            with handle:
                for number in range(1, -(-size // part_size) + 1):
                    chunk, checksum = await asyncio.to_thread(_read_part, handle, part_size)
                    answer = await client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=chunk, ChecksumSHA256=checksum,
                    )  # fmt: skip
                    parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
            await client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the upload's own error is the one to report
                await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    async def write_index(self, subdir: str, name: str, data: bytes) -> None:
        """A PUT is atomic in S3: readers get the old object or the new. A guarded file is written only
        over the version this run saw (see the module's docstring)."""
        key = self._key(subdir, name)
        if name not in GUARDED or key not in self._seen:
            await self._put(key, data)
            return
        try:
            self._seen[key] = await self._put(key, data, expect=self._seen[key])
        except _Conflict:
            current, etag = await self._get(key)
            if current != data:
                raise DestinationRace(
                    f"{self._url(key)}: changed by another writer during this run; two mirrors are writing "
                    "this index, and only one may own a subdir (docs/scaling.md)"
                ) from None
            log.info("%s: another mirror published the same bytes meanwhile", self._url(key))
            self._seen[key] = etag

    async def update_index(self, subdir: str, name: str, update: IndexUpdate) -> None:
        """Read, apply `update`, write with If-Match on what was read; when another host wrote in between,
        read its version and apply `update` again (the merge keeps what that host wrote)."""
        key = self._key(subdir, name)
        for attempt in range(UPDATE_ATTEMPTS):
            current, etag = await self._get(key)
            data = await asyncio.to_thread(update, current)
            try:
                await self._put(key, data, expect=etag)
                return
            except _Conflict:
                log.info("%s: written by another mirror while this one merged it; merging again", self._url(key))
                await asyncio.sleep(self._rng.uniform(0.05, 0.25) * (attempt + 1))  # let the other one finish
        raise DestinationRace(
            f"{self._url(key)}: still changing after {UPDATE_ATTEMPTS} merges; more mirrors are writing it "
            "at once than can take turns (docs/scaling.md)"
        )

    async def write_absent(self, subdir: str, files: list[tuple[str, bytes]]) -> int:
        """Content-addressed files (shards): skip the listed ones, PUT the rest with If-None-Match: *."""
        present: set[str] = set()
        for folder in sorted({posixpath.dirname(name) for name, _ in files}):
            listed = await self.list_folder(subdir, folder) if folder else {}
            present.update(posixpath.join(folder, name) for name in listed)
        missing = [(name, data) for name, data in files if name not in present]
        written = 0
        for start in range(0, len(missing), self._workers):
            batch = missing[start : start + self._workers]
            written += sum(await _all(self._put_absent(self._key(subdir, name), data) for name, data in batch))
        return written

    async def _put_absent(self, key: str, data: bytes) -> bool:
        try:
            await self._put(key, data, expect=None)
        except _Conflict:
            return False  # already there: its name is its sha256, so it holds these bytes
        return True

    async def _put(self, key: str, data: bytes, *, expect: str | bool | None = False) -> str:
        """PUT with a SHA-256 the store checks; `expect` an ETag (If-Match), None (If-None-Match: *) or
        False (unconditional). Returns the new ETag; raises _Conflict when the condition fails."""
        checksum = await asyncio.to_thread(_checksum, data)
        content_type = CONTENT_TYPES.get(posixpath.splitext(key)[1], "application/octet-stream")
        async with self._s3() as client:
            put = functools.partial(
                client.put_object,
                Bucket=self.bucket, Key=key, Body=data, ChecksumSHA256=checksum, ContentType=content_type,
            )  # fmt: skip
            with self._errors(self._url(key)):
                try:
                    if expect is False:
                        answer = await put()
                    elif expect is None:
                        answer = await put(IfNoneMatch="*")
                    else:
                        answer = await put(IfMatch=str(expect))
                except ClientError as exc:
                    if expect is not False and _code(exc) in CONFLICT_CODES:
                        raise _Conflict(key) from None
                    raise
        return answer["ETag"]

    async def delete(self, subdir: str, filenames: list[str]) -> None:
        keys = [self._key(subdir, name) for name in filenames]
        async with self._s3() as client:
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start : start + DELETE_BATCH]
                with self._errors(self._url(batch[0])):
                    answer = await client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                    )
                for error in answer.get("Errors", []):
                    raise DestinationError(
                        f"{self._url(error.get('Key', batch[0]))}: cannot delete: {error.get('Code')}: "
                        f"{error.get('Message')}"
                    )


async def _missing_as_none(call: Coroutine[Any, Any, T]) -> T | None:
    """The answer of a HEAD or GET, None when the object does not exist."""
    try:
        return await call
    except ClientError as exc:
        if _code(exc) in MISSING_CODES:
            return None
        raise


async def _all(calls: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run calls together; the first failure cancels the rest and is raised as itself, not as a group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [task.result() for task in tasks]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or _status(exc))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _file_checksum(path: Path) -> str:
    with path.open("rb") as handle:
        return base64.b64encode(hashlib.file_digest(handle, "sha256").digest()).decode()


def _read_part(handle: IO[bytes], size: int) -> tuple[bytes, str]:
    chunk = handle.read(size)
    return chunk, _checksum(chunk)
