"""Transfer worker processes: each runs its own event loop and HTTP session, so downloads use every core.

One event loop that streams, hashes and writes is CPU-bound on one core well below what a local network
and disk deliver. The parent keeps everything that must be single (planning, retries, the journal,
publishing); a worker only fetches one file into the temporary path it is given and verifies its size and
hash, exactly as `transfer.download` does in-process, then, for a local destination, renames it into its
final place (`final_path`): the parent would otherwise spend a rename and a stat per package on its one
core. Nothing a worker does is reported done until the parent has the worker's answer and the journal
has recorded the file (after making it durable).

Protocol on the worker's stdin/stdout: frames of a 4-byte big-endian length and a pickled list of
messages: everything one side has to say in one turn of its event loop goes in one frame, so that a
worker finishing many small packages at once costs the parent one read and one unpickle.
  parent -> worker: the MirrorConfig first (alone), then ("get", id, (item, temp_path, final_path | None))
                    or ("cancel", id, None)
  worker -> parent: ("ready", 0, None) once, then ("bytes", id, n) at most every PROGRESS_SECONDS, and
                    ("done", id, (n, stat, None)) or ("done", id, (n, None, (error class, message, attributes)))
                    where n is the bytes received since the last "bytes" message, and stat the
                    (size, mtime_ns) of the file in its final place, or None when it was not moved there
End of stdin tells a worker to abandon what it holds (temporary files removed) and exit; the worker
ignores SIGINT and SIGTERM, so that a Ctrl-C or a service stop goes through the parent's clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mirror_engine import errors
from mirror_engine.arenas import cap_malloc_arenas
from mirror_engine.bandwidth import TokenBucket
from mirror_engine.config import MirrorConfig
from mirror_engine.destinations.base import FileStat
from mirror_engine.errors import MirrorError, WorkerCrashed, destination_error
from mirror_engine.session import open_session
from mirror_engine.transfer import TransferItem, download

log = logging.getLogger(__name__)
_LENGTH = struct.Struct(">I")
_STOP_GRACE_SECONDS = 5.0
PROGRESS_SECONDS = 0.25


def _encode(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class _Outbox:
    """Messages written as one frame at the end of the event loop's current turn."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._messages: list[tuple[str, int, Any]] = []

    def send(self, message: tuple[str, int, Any]) -> None:
        if not self._messages:
            asyncio.get_running_loop().call_soon(self._flush)
        self._messages.append(message)

    def _flush(self) -> None:
        messages, self._messages = self._messages, []
        if messages:
            self._write(_encode(messages))


async def _read_frame(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at end of stream."""
    try:
        header = await reader.readexactly(_LENGTH.size)
        return pickle.loads(await reader.readexactly(_LENGTH.unpack(header)[0]))
    except asyncio.IncompleteReadError:
        return None


def _describe(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """A MirrorError as plain values: pickling our exceptions directly would call their __init__ wrongly."""
    if isinstance(exc, MirrorError):
        return type(exc).__name__, str(exc), dict(vars(exc))
    return "MirrorError", f"transfer worker: unexpected {type(exc).__name__}: {exc}", {}


def _rebuild(described: tuple[str, str, dict[str, Any]]) -> MirrorError:
    name, message, attributes = described
    cls = getattr(errors, name, MirrorError)
    if not (isinstance(cls, type) and issubclass(cls, MirrorError)):
        cls = MirrorError
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(attributes)
    return error


class _Worker:
    """The parent's handle on one worker process: its pipes and the transfers it holds."""

    def __init__(self, number: int, process: asyncio.subprocess.Process) -> None:
        self.number = number
        self.process = process
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending: dict[int, tuple[asyncio.Future[FileStat | None], Callable[[int], None]]] = {}
        self.reader_task: asyncio.Task[None] | None = None
        self.outbox = _Outbox(self._write)
        self.crashed: WorkerCrashed | None = None  # set once the process has exited

    def send_now(self, message: object) -> None:
        self._write(_encode(message))

    def _write(self, frame: bytes) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            return  # closed by `close`: the worker abandons what it holds
        with contextlib.suppress(ConnectionError):  # the worker died: read_answers reports it
            stdin.write(frame)

    async def read_answers(self) -> None:
        assert self.process.stdout is not None
        while (messages := await _read_frame(self.process.stdout)) is not None:
            for kind, ident, value in messages:
                self._take(kind, ident, value)
        code = await self.process.wait()
        crash = WorkerCrashed(f"transfer worker {self.number} exited (code {code}) with {len(self.pending)} file(s)")
        self.crashed = crash
        if not self.ready.done():
            self.ready.set_exception(crash)
        for future, _ in self.pending.values():
            if not future.done():
                future.set_exception(crash)
        self.pending.clear()

    def _take(self, kind: str, ident: int, value: Any) -> None:
        if kind == "ready":
            if not self.ready.done():  # cancelled when the run ended before the workers were needed
                self.ready.set_result(None)
            return
        entry = self.pending.get(ident)
        if entry is None:
            return  # the parent gave up on it (cancelled); the worker cleaned up after itself
        future, on_bytes = entry
        if kind == "bytes":
            on_bytes(value)
        elif kind == "done":
            del self.pending[ident]
            unreported, stat, error = value
            on_bytes(unreported)
            if future.done():
                return
            if error is None:
                future.set_result(None if stat is None else FileStat(*stat))
            else:
                future.set_exception(_rebuild(error))


async def _spawn(number: int, config: MirrorConfig) -> _Worker:
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mirror_engine.workers",
            env=_child_environment(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
    except OSError as exc:
        raise WorkerCrashed(f"cannot start transfer worker {number} ({exc.strerror or exc})") from None
    worker = _Worker(number, process)
    worker.send_now(config)
    worker.reader_task = asyncio.create_task(worker.read_answers())
    return worker


class WorkerPool:
    """`count` worker processes; `download` hands a file to the least busy one and waits for its answer."""

    def __init__(self, workers: list[_Worker]) -> None:
        self._workers = workers
        self._next_id = 0

    @classmethod
    async def start(cls, config: MirrorConfig, count: int) -> WorkerPool:
        """Start `count` workers and wait until each is ready; cancelling this stops those already started."""
        pool = cls([])
        try:
            for number in range(count):
                pool._workers.append(await _spawn(number, config))
            # Ready before any file is handed out, so that start-up never counts against file_timeout.
            await asyncio.gather(*(worker.ready for worker in pool._workers))
        except BaseException:
            await asyncio.shield(pool.close())
            raise
        return pool

    async def download(
        self, item: TransferItem, temp_path: Path, on_bytes: Callable[[int], None], final_path: Path | None = None
    ) -> FileStat | None:
        """As `transfer.download`, in a worker process; cancelling this cancels the worker's transfer.

        With `final_path`, the worker also renames the verified file there and returns its stat; a
        cancel that comes too late to stop that leaves a file no journal vouches for, which the next
        run hashes, as after a kill -9 between a rename and the journal's commit."""
        worker = min(self._workers, key=lambda w: len(w.pending))
        if worker.crashed is not None:  # died between two files: nothing would ever answer this one
            raise worker.crashed
        ident = self._next_id
        self._next_id += 1
        future: asyncio.Future[FileStat | None] = asyncio.get_running_loop().create_future()
        worker.pending[ident] = (future, on_bytes)
        worker.outbox.send(("get", ident, (item, temp_path, final_path)))
        try:
            return await future
        except asyncio.CancelledError:
            if worker.pending.pop(ident, None) is not None and worker.process.returncode is None:
                worker.outbox.send(("cancel", ident, None))
            raise

    async def close(self) -> None:
        """End every worker: closing stdin makes each drop what it holds and exit; a stuck one is killed."""
        for worker in self._workers:
            if worker.process.stdin is not None and not worker.process.stdin.is_closing():
                worker.process.stdin.close()
        for worker in self._workers:
            try:
                await asyncio.wait_for(asyncio.shield(worker.process.wait()), _STOP_GRACE_SECONDS)
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
            if worker.reader_task is not None:
                await worker.reader_task


def _child_environment() -> dict[str, str]:
    """Our environment, with this copy of mirror_engine first on the path (a source checkout works too)."""
    here = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}


# --- the worker process ---


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    out = sys.stdout.buffer

    def write(frame: bytes) -> None:
        try:
            out.write(frame)
            out.flush()
        except BrokenPipeError:  # the parent is gone (this runs as a loop callback, outside `main`'s catch)
            os._exit(0)

    send = _Outbox(write).send
    config = await _read_frame(reader)
    if not isinstance(config, MirrorConfig):
        raise SystemExit("mirror_engine.workers: the first message must be the config")
    throttle = _share_of_bandwidth(config)
    tasks: dict[int, asyncio.Task[None]] = {}
    unfinished: dict[int, Path] = {}  # temporary files of transfers not (yet) handed back verified
    async with open_session(config) as session:
        send(("ready", 0, None))

        async def fetch(ident: int, item: TransferItem, temp_path: Path, final_path: Path | None) -> None:
            progress = _Progress(ident, send, loop.time)
            try:
                await download(session, item, temp_path, progress.add, throttle)
                stat = None if final_path is None else _commit(temp_path, final_path)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # every failure goes back to the parent, which decides
                send(("done", ident, (progress.unreported, None, _describe(exc))))
            else:
                unfinished.pop(ident, None)  # verified (and in place): the parent takes it from here
                send(("done", ident, (progress.unreported, stat, None)))
            finally:
                tasks.pop(ident, None)

        while (messages := await _read_frame(reader)) is not None:
            for kind, ident, value in messages:
                if kind == "get":
                    unfinished[ident] = value[1]
                    tasks[ident] = asyncio.create_task(fetch(ident, *value))
                elif kind == "cancel" and ident in tasks:
                    tasks[ident].cancel()
        for task in list(tasks.values()):  # the parent is gone or done: abandon the rest
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    # A transfer cancelled twice may be cut off before its own clean-up ran: nothing is left behind.
    for temp_path in unfinished.values():
        temp_path.unlink(missing_ok=True)


def _commit(temp_path: Path, final_path: Path) -> tuple[int, int]:
    """Rename a verified file into place; its (size, mtime_ns) there, for the journal. No fsync: the
    journal makes the filesystem durable (syncfs) before it records the file, as for the parent's renames."""
    try:
        os.replace(temp_path, final_path)
        stat = final_path.stat()
    except OSError as exc:
        temp_path.unlink(missing_ok=True)
        raise destination_error(temp_path, exc) from None
    return stat.st_size, stat.st_mtime_ns


class _Progress:
    """Bytes received, told to the parent at most every PROGRESS_SECONDS: a small package costs one
    message (its answer), a big one a few a second."""

    def __init__(self, ident: int, send: Callable[[tuple[str, int, Any]], None], clock: Callable[[], float]) -> None:
        self.ident = ident
        self.unreported = 0
        self._send = send
        self._clock = clock
        self._last = clock()

    def add(self, nbytes: int) -> None:
        self.unreported += nbytes
        now = self._clock()
        if now - self._last >= PROGRESS_SECONDS:
            self._send(("bytes", self.ident, self.unreported))
            self.unreported = 0
            self._last = now


def _share_of_bandwidth(config: MirrorConfig) -> TokenBucket | None:
    """Each worker takes an equal share of `max_bandwidth`, so together they keep to it."""
    if not config.max_bandwidth_bytes:
        return None
    return TokenBucket(max(1, config.max_bandwidth_bytes // config.worker_processes))


def main() -> None:
    cap_malloc_arenas()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="worker %(process)d: %(message)s")
    try:
        import uvloop

        run: Callable[[Any], None] = uvloop.run
    except ImportError:  # as in the parent: asyncio's own loop is only slower
        run = asyncio.run
    try:
        run(_serve())
    except BrokenPipeError:  # the parent is gone; its next run clears our temporary files
        os._exit(0)


if __name__ == "__main__":
    main()
