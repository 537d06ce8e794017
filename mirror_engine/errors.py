"""The exception tree: every failure we expect, each with a one-line message for the user.

    MirrorError                      retryable  exit_code
    ├── ConfigError                  no         2   bad config file or command line
    ├── UpstreamError                           1   the channel we read from
    │   ├── HttpStatusError          5xx/429    1
    │   ├── ConnectionFailed         yes        1   refused, reset, timed out
    │   ├── TlsError                 no         1   certificate not trusted (see ssl_verify)
    │   ├── ShortBody                yes        1   fewer (or more) bytes than promised
    │   ├── ChecksumMismatch         yes        1   right length, wrong bytes
    │   ├── BadRepodata              no         1   not JSON, not zstd, wrong shape
    │   └── ChannelNotFound          no         1   no repodata at all for the channel
    │   (a file name that would escape its folder is refused in planning: Record.unusable_because)
    ├── DestinationError                        1   where we write; stops the run (unless per_file)
    │   ├── DiskFull                 no         1
    │   ├── DestinationBusy          no         2   another run holds the lock
    │   ├── UploadRefused            no         1   the store said no: credentials, size limit, no PUT
    │   ├── PackageRejected          no         1   per_file: the store refused one file; the run goes on
    │   └── DestinationRace          no         1   another mirror wrote an index this run replaces
    └── WorkerCrashed                no         1   a transfer process died: the run stops

`str(exc)` is what the user reads: subject first (a config key, a URL, a path), then what is wrong.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import ClassVar


class MirrorError(Exception):
    """Anything we expect to go wrong; str() is the one line the user reads."""

    retryable: ClassVar[bool] = False
    exit_code: ClassVar[int] = 1


class ConfigError(MirrorError):
    exit_code = 2

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")


class UpstreamError(MirrorError):
    pass


class HttpStatusError(UpstreamError):
    def __init__(self, url: str, status: int, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{url}: HTTP {status}{' ' + reason if reason else ''}")
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.status >= 500 or self.status in (408, 429)


class ConnectionFailed(UpstreamError):
    retryable = True


class TlsError(UpstreamError):
    """A certificate we do not trust: retrying cannot help, the config must change."""


class ShortBody(UpstreamError):
    retryable = True


class ChecksumMismatch(UpstreamError):
    retryable = True


class BadRepodata(UpstreamError):
    pass


class ChannelNotFound(UpstreamError):
    pass


class DestinationError(MirrorError):
    # Most destination failures hit every file alike (disk full, server unreachable), so the run stops;
    # a per-file one fails only its file, as an upstream error would.
    per_file: ClassVar[bool] = False


class DiskFull(DestinationError):
    pass


class DestinationBusy(DestinationError):
    """Another run holds the destination: a usage problem, not a failed mirror."""

    exit_code = 2


class UploadRefused(DestinationError):
    """The store refused a request (401/403 credentials, 413 size limit, 405 no PUT): retrying cannot help."""


class PackageRejected(DestinationError):
    """The store would not take one file (other bytes already under its name, a package it cannot read)."""

    per_file = True


class DestinationRace(DestinationError):
    """Another writer changed an index file between this run's start and its publish (two mirrors writing
    the same subdir of one store): this run stops instead of overwriting the other's index."""


class WorkerCrashed(MirrorError):
    """A transfer worker process ended without being asked to; nothing it held was reported done."""


# Raised with neither errno nor text (asyncio's and uvloop's TLS transports do, for a peer that aborts the
# handshake, as a server requiring a client certificate does): their kind still has words.
_SILENT_ERRNO: dict[type[OSError], int] = {
    ConnectionResetError: errno.ECONNRESET,
    ConnectionAbortedError: errno.ECONNABORTED,
    ConnectionRefusedError: errno.ECONNREFUSED,
    BrokenPipeError: errno.EPIPE,
}


def os_reason(exc: OSError) -> str:
    """The words for an OSError: its strerror, else its text, else what its kind means (never empty)."""
    if exc.strerror or str(exc):
        return exc.strerror or str(exc)
    number = next((code for kind, code in _SILENT_ERRNO.items() if isinstance(exc, kind)), None)
    return os.strerror(number) if number is not None else type(exc).__name__


def destination_error(path: Path, exc: OSError) -> DestinationError:
    """The one-line error for a failed write at `path`: a full disk is told apart from the rest."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{path.parent}: no space left on the destination")
    return DestinationError(f"{path}: {exc.strerror or exc}")
