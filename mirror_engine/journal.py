"""The crash-safe journal: SQLite in WAL mode, one writer thread, group-committed batches; read to resume.

Per destination channel it holds each run, and per file its state (planned -> downloading -> verified ->
published, or failed) with the sha256, size and mtime seen when it was verified, so that a later run can
trust a file without reading it again. Losing the journal loses no data: files it cannot vouch for are
hashed again. SQLite (standard library, WAL, `synchronous=NORMAL`) because it survives kill -9 and power
loss with a consistent database, and one transaction per batch keeps it off the hot path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import operator
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from mirror_engine.destinations.base import FileStat
from mirror_engine.errors import DestinationError, DiskFull
from mirror_engine.plan import Vouched, vouched_among

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 2
# While writes keep coming, a commit waits this long after the previous one to take more rows with it:
# each commit of verified rows costs a syncfs and a thread hop, and a download slot does not wait for it.
GATHER_SECONDS = 0.025
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, channel TEXT NOT NULL, pid INTEGER, started REAL NOT NULL,
    finished REAL, status TEXT NOT NULL, note TEXT
);
CREATE TABLE IF NOT EXISTS files (
    channel TEXT NOT NULL, subdir TEXT NOT NULL, filename TEXT NOT NULL, state TEXT NOT NULL,
    sha256 TEXT, md5 TEXT, size INTEGER, mtime_ns INTEGER, run INTEGER, reason TEXT, updated REAL,
    PRIMARY KEY (channel, subdir, filename)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS indexes (
    channel TEXT NOT NULL, subdir TEXT NOT NULL, sha256 TEXT NOT NULL, files INTEGER NOT NULL,
    run INTEGER, published REAL NOT NULL, fingerprint TEXT, counts TEXT, PRIMARY KEY (channel, subdir)
);
"""


class State(StrEnum):
    PLANNED = "planned"
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    PUBLISHED = "published"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    pid: int | None
    started: float
    finished: float | None
    status: str
    note: str | None


_Write = tuple[str, tuple[Any, ...]]


_VERIFIED_INSERT = "INSERT INTO files (channel, subdir, filename, state, sha256, md5, size, mtime_ns, run, updated) "
_VERIFIED_UPSERT = (
    _VERIFIED_INSERT + "VALUES (?, ?, ?, 'verified', ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET state='verified', "
    "sha256=excluded.sha256, md5=excluded.md5, size=excluded.size, mtime_ns=excluded.mtime_ns, "
    "run=excluded.run, reason=NULL, updated=excluded.updated"
)


class Journal:
    """All access goes through one thread that owns the connection; writes are queued and group-committed."""

    def __init__(self, path: Path, channel: str, durable: Callable[[], None] | None = None) -> None:
        self.path = path
        self.channel = channel
        # Makes the files a batch records as verified durable, in the writer thread, before it commits:
        # one filesystem sync per batch instead of an fsync per file.
        self._durable = durable
        self.run_id: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Write] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._failed: Exception | None = None  # set by a failed commit; every later flush raises it

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, channel: str, durable: Callable[[], None] | None = None) -> Journal:
        journal = cls(path, channel, durable)
        try:
            await journal._call(journal._connect)
        except BaseException:  # a full disk, say: the caller never gets the journal, so it cannot close it
            journal._executor.shutdown(wait=False)
            raise
        return journal

    @classmethod
    async def open_readonly(cls, path: Path, channel: str) -> Journal | None:
        """For --dry-run and `status`: reads only; None when there is no journal (yet) or it is unreadable."""
        if not await asyncio.to_thread(path.exists):
            return None
        journal = cls(path, channel)
        try:
            await journal._call(journal._connect_readonly)
        except sqlite3.DatabaseError as exc:
            log.warning("%s: unreadable (%s); ignored", path, exc)
            journal._executor.shutdown(wait=False)
            return None
        return journal

    def _connect_readonly(self) -> None:
        db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema is not version {SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        self._db = db

    def _connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"{self.path.parent}: cannot create the journal folder: {exc.strerror}") from None
        try:
            self._db = self._connect_checked()
        except sqlite3.OperationalError as exc:  # a full disk or an I/O error, not a damaged journal: keep it
            raise _sqlite_error(self.path, exc) from None
        except sqlite3.DatabaseError as exc:
            self._set_aside(f"unreadable ({exc})")
            self._db = self._connect_checked()

    def _connect_checked(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables and version != SCHEMA_VERSION:
                db.close()
                self._set_aside(f"written by another version (schema {version})")
                return self._connect_checked()
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _set_aside(self, why: str) -> None:
        """A journal we cannot trust is kept for inspection and replaced; files will be hashed again."""
        aside = self.path.with_name(f"{self.path.name}.{time.strftime('%Y%m%dT%H%M%S')}.bad")
        log.warning("%s: %s; set aside as %s, files on disk will be checked again", self.path, why, aside.name)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if self.path.exists():
            os.replace(self.path, aside)

    async def close(self) -> None:
        """Flush and close; the connection and its thread are released even when the flush fails."""
        try:
            await self.flush()
        finally:
            await self._call(self._close)
            self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- runs ----------------------------------------------------------------------------------

    async def begin_run(self) -> int:
        def begin() -> int:
            db = self._require()
            try:
                with db:
                    db.execute("BEGIN")
                    # A run still marked running was cut short: kill -9, power loss, OOM.
                    db.execute(
                        "UPDATE runs SET status='interrupted' WHERE channel=? AND status='running'", (self.channel,)
                    )
                    cursor = db.execute(
                        "INSERT INTO runs (channel, pid, started, status) VALUES (?, ?, ?, 'running')",
                        (self.channel, os.getpid(), time.time()),
                    )
            except sqlite3.Error as exc:
                raise _sqlite_error(self.path, exc) from None
            return int(cursor.lastrowid or 0)

        self.run_id = await self._call(begin)
        return self.run_id

    async def finish_run(self, status: str, note: str = "") -> None:
        self._queue("UPDATE runs SET finished=?, status=?, note=? WHERE id=?", (time.time(), status, note, self.run_id))
        await self.flush()

    # --- files ---------------------------------------------------------------------------------

    async def vouched(self, subdir: str, existing: Mapping[str, FileStat]) -> Vouched:
        """What the journal holds as verified or published among the `existing` files of a subdir."""

        def read() -> Vouched:
            rows = self._require().execute(
                # md5 only where there is no sha256: a record with a sha256 is never trusted by its md5
                "SELECT filename, COALESCE(sha256, md5), size, mtime_ns, state = 'published' FROM files "
                "WHERE channel=? AND subdir=? AND state IN ('verified', 'published')",
                (self.channel, subdir),
            )
            return vouched_among(rows, existing)

        return await self._call(read)

    def planned(self, subdir: str, files: Iterable[tuple[str, int]]) -> None:
        """Files this run will fetch or check, with their upstream sizes: what `status` counts as left."""
        now = time.time()
        for filename, size in files:
            self._queue(
                "INSERT INTO files (channel, subdir, filename, state, size, run, updated) "
                "VALUES (?, ?, ?, 'planned', ?, ?, ?) ON CONFLICT DO UPDATE SET state='planned', "
                "size=excluded.size, run=excluded.run, reason=NULL, updated=excluded.updated",
                (self.channel, subdir, filename, size, self.run_id, now),
            )

    def downloading(self, subdir: str, filename: str) -> None:
        self._set_state(subdir, filename, State.DOWNLOADING)

    def failed(self, subdir: str, filename: str, reason: str) -> None:
        self._set_state(subdir, filename, State.FAILED, reason)

    def _set_state(self, subdir: str, filename: str, state: State, reason: str | None = None) -> None:
        self._queue(
            "UPDATE files SET state=?, reason=?, run=?, updated=? WHERE channel=? AND subdir=? AND filename=?",
            (state.value, reason, self.run_id, time.time(), self.channel, subdir, filename),
        )

    async def verified(
        self, subdir: str, filename: str, *, sha256: str | None, md5: str | None, size: int, mtime_ns: int
    ) -> None:
        """Record a verified file; returns once that is committed, so the file may be reported done."""
        self.queue_verified(subdir, filename, sha256=sha256, md5=md5, size=size, mtime_ns=mtime_ns)
        await self.flush()

    def queue_verified(
        self, subdir: str, filename: str, *, sha256: str | None, md5: str | None, size: int, mtime_ns: int
    ) -> None:
        """Queue a verified file's row without waiting: the file may be reported done only after a
        later `flush()` returns (callers that settle many files await one flush for all of them)."""
        self._queue(
            _VERIFIED_UPSERT, (self.channel, subdir, filename, sha256, md5, size, mtime_ns, self.run_id, time.time())
        )

    async def published(
        self,
        subdir: str,
        index_sha256: str,
        files: int,
        deleted: Iterable[str],
        *,
        fingerprint: str | None = None,
        counts: str | None = None,
    ) -> None:
        """Record a published index. `fingerprint` (of its inputs) only when it left nothing out, so that
        a later run with the same inputs may skip the subdir; `counts` replays its summary then."""
        now = time.time()
        self._queue(
            "UPDATE files SET state='published', updated=? WHERE channel=? AND subdir=? AND state='verified'",
            (now, self.channel, subdir),
        )
        for filename in deleted:
            self._queue(
                "DELETE FROM files WHERE channel=? AND subdir=? AND filename=?", (self.channel, subdir, filename)
            )
        self._queue(
            "INSERT OR REPLACE INTO indexes (channel, subdir, sha256, files, run, published, fingerprint, counts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.channel, subdir, index_sha256, files, self.run_id, now, fingerprint, counts),
        )
        await self.flush()

    async def index_fingerprint(self, subdir: str) -> tuple[str, str] | None:
        """(fingerprint, counts) of the subdir's last complete publish, if any."""

        def read() -> tuple[str, str] | None:
            row = (
                self._require()
                .execute(
                    "SELECT fingerprint, counts FROM indexes WHERE channel=? AND subdir=? AND fingerprint IS NOT NULL",
                    (self.channel, subdir),
                )
                .fetchone()
            )
            return (row[0], row[1] or "{}") if row else None

        return await self._call(read)

    # --- reading for `status` ------------------------------------------------------------------

    async def last_run(self) -> RunInfo | None:
        def read() -> RunInfo | None:
            row = (
                self._require()
                .execute(
                    "SELECT id, pid, started, finished, status, note FROM runs "
                    "WHERE channel=? ORDER BY id DESC LIMIT 1",
                    (self.channel,),
                )
                .fetchone()
            )
            return RunInfo(*row) if row else None

        return await self._call(read)

    async def counts(self) -> dict[str, tuple[int, int]]:
        """state -> (files, bytes known) for this channel."""

        def read() -> dict[str, tuple[int, int]]:
            rows = self._require().execute(
                "SELECT state, count(*), coalesce(sum(size), 0) FROM files WHERE channel=? GROUP BY state",
                (self.channel,),
            )
            return {row[0]: (row[1], row[2]) for row in rows}

        return await self._call(read)

    async def failures(self, limit: int = 50) -> list[tuple[str, str, str]]:
        def read() -> list[tuple[str, str, str]]:
            rows = self._require().execute(
                "SELECT subdir, filename, coalesce(reason, '') FROM files WHERE channel=? AND state='failed' "
                "ORDER BY subdir, filename LIMIT ?",
                (self.channel, limit),
            )
            return [(row[0], row[1], row[2]) for row in rows]

        return await self._call(read)

    async def indexes(self) -> list[tuple[str, int, float]]:
        def read() -> list[tuple[str, int, float]]:
            rows = self._require().execute(
                "SELECT subdir, files, published FROM indexes WHERE channel=? ORDER BY subdir", (self.channel,)
            )
            return [(row[0], row[1], row[2]) for row in rows]

        return await self._call(read)

    # --- the writer ----------------------------------------------------------------------------

    def _queue(self, sql: str, params: tuple[Any, ...]) -> None:
        self._pending.append((sql, params))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush(self) -> None:
        """Wait until everything queued so far is committed; raises the error of a failed commit."""
        if self._failed is not None:
            raise self._failed
        if not self._pending and (self._flusher is None or self._flusher.done()):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await waiter

    async def _flush_loop(self) -> None:
        """Commit what is queued, one transaction per batch, until nothing is left (group commit).

        A failed commit fails every waiter, now and later (the journal can no longer vouch for anything);
        it is not raised in this task, which nobody awaits. Not only a MirrorError: an OSError of the
        `durable` callback, say, would otherwise end this task with an exception nobody retrieves and
        leave its waiters waiting for ever.
        """
        busy = False
        while (self._pending or self._waiters) and self._failed is None:
            if busy:  # rows keep coming (a run of small packages): fewer, larger commits, each one syncfs
                await asyncio.sleep(GATHER_SECONDS)
            busy = True
            batch, self._pending = self._pending, []
            waiters, self._waiters = self._waiters, []
            try:
                await asyncio.shield(self._call(self._commit, batch))
            except Exception as exc:
                self._failed = exc
                waiters += self._waiters
                self._waiters = []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                return
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _commit(self, batch: list[_Write]) -> None:
        if not batch:
            return
        db = self._require()
        if self._durable is not None and any(sql == _VERIFIED_UPSERT for sql, _ in batch):
            self._durable()
        try:
            with db:
                db.execute("BEGIN")
                # Runs of one statement (a batch is mostly verified rows) go to SQLite in one call:
                # a statement per row cost more in Python than in SQLite.
                for sql, rows in itertools.groupby(batch, key=operator.itemgetter(0)):
                    db.executemany(sql, [params for _, params in rows])
        except sqlite3.Error as exc:
            raise _sqlite_error(self.path, exc) from None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise DestinationError(f"{self.path}: the journal is not open")
        return self._db

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _sqlite_error(path: Path, exc: sqlite3.Error) -> DestinationError:
    """A full disk is told apart from the rest: SQLite says "database or disk is full", or only
    "disk I/O error" when it cannot grow its WAL or shared-memory file."""
    if "full" in str(exc).lower() or _nearly_full(path.parent):
        return DiskFull(f"{path}: no space left to write the journal")
    return DestinationError(f"{path}: cannot use the journal: {exc}")


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False
