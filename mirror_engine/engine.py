"""One run of the mirror: discover subdirs, plan each, transfer on a worker pool, publish each subdir when done."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mirror_engine import __version__
from mirror_engine.bandwidth import TokenBucket
from mirror_engine.bundle import BundleError, read_manifest, unpack_bundle
from mirror_engine.channel import Channel, ChannelReader, IndexBytes, parse_index
from mirror_engine.channelfiles import SUBDIR_SIDECARS, build_channeldata, merged_channeldata
from mirror_engine.config import MirrorConfig
from mirror_engine.destinations import make_destination
from mirror_engine.destinations.base import Destination, FileStat
from mirror_engine.errors import ConnectionFailed, DestinationError, DiskFull, MirrorError, WorkerCrashed
from mirror_engine.explain import Query, explain
from mirror_engine.filters import ALWAYS_MIRRORED_SUBDIR, FilterRules, NameSet, judge, subdir_selected
from mirror_engine.gcpause import gc_paused, hold_frozen, release_frozen
from mirror_engine.journal import Journal
from mirror_engine.lock import RunLock
from mirror_engine.pages import SubdirFacts, channel_page, filters_in_words
from mirror_engine.plan import SubdirPlan, Upstream, Vouched, plan_subdir
from mirror_engine.pool import run_pool
from mirror_engine.progress import Reporter
from mirror_engine.publish import publish_subdir, write_index
from mirror_engine.repodata import Record, Repodata, parse_repodata
from mirror_engine.retry import RetryPolicy, with_retries
from mirror_engine.session import Http, open_session, redact
from mirror_engine.summary import RunSummary, left_out_of, plan_counts
from mirror_engine.transfer import Outcome, TransferItem, TransferResult, download, file_matches
from mirror_engine.workers import WorkerPool

log = logging.getLogger(__name__)
# A file this big waits for the workers to be ready rather than taking the main process's one core: with
# few large files, all of them would otherwise start (and stay) there.
WAIT_FOR_WORKERS_BYTES = 8_000_000
IndexFacts = tuple[frozenset[str], int, int]  # a published index's package names, file count and bytes
# Download into a temp path; with a final path, a worker may also rename the verified file there and
# return its stat (None: still at the temp path, to commit).
Fetch = Callable[[TransferItem, Path, Path | None, Callable[[int], None]], Awaitable[FileStat | None]]
# Files transferred but not yet reported, per download slot: their journal rows wait for one commit.
SETTLING_PER_SLOT = 8


def rules_from_config(config: MirrorConfig) -> FilterRules:
    return FilterRules.build(
        platforms=config.platforms,
        python_versions=config.python_versions,
        license_blacklist=config.license_blacklist,
        blacklist=config.blacklist,
        whitelist=config.whitelist,
        pkg_list=config.pkg_list,
    )


@dataclass(slots=True)
class _SubdirJob:
    """A planned subdir whose files are in flight; published when the last one is settled."""

    plan: SubdirPlan
    pending: int
    verified: set[str] = field(default_factory=set)
    settled: asyncio.Event = field(default_factory=asyncio.Event)
    frozen: bool = False  # holds the heap frozen (gcpause) from its plan until it is published or abandoned

    def freeze(self) -> None:
        hold_frozen()
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self.frozen = False
            release_frozen()

    def settle(self, result: TransferResult) -> None:
        if result.outcome is not Outcome.FAILED:
            self.verified.add(result.item.filename)
        self.pending -= 1
        if self.pending <= 0:
            self.settled.set()


class _Settler:
    """Transferred files whose journal rows are queued, reported done (summary, reporter, their subdir's
    count) only once the journal has committed those rows, and so made the files durable first.

    The download slot does not wait for that commit (a filesystem sync: tens of milliseconds when much
    was written), it takes its next file; at most `limit` files wait here, so memory stays flat.
    """

    def __init__(
        self,
        journal: Journal | None,
        report: Callable[[TransferResult, _SubdirJob], None],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
        limit: int,
    ) -> None:
        self._journal = journal
        self._report = report
        self._spawn = spawn  # in the run's task group: a failed journal commit stops the run
        self._room = asyncio.Semaphore(limit)
        self._waiting: list[tuple[TransferResult, _SubdirJob]] = []
        self._draining: asyncio.Task[None] | None = None

    async def add(self, result: TransferResult, job: _SubdirJob) -> None:
        if self._journal is None:
            self._report(result, job)
            return
        await self._room.acquire()
        self._waiting.append((result, job))
        if self._draining is None or self._draining.done():
            self._draining = self._spawn(self._drain(self._journal))

    async def _drain(self, journal: Journal) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            await journal.flush()  # every row queued before this call is committed when it returns
            for result, job in batch:
                self._report(result, job)
                self._room.release()


class MirrorRun:
    """Everything one run shares: config, session, destination, reporter, summary."""

    def __init__(
        self,
        config: MirrorConfig,
        destination: Destination,
        reporter: Reporter,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        use_journal: bool = True,
        verify: bool = False,
        wait_for_workers: bool = False,
    ) -> None:
        self.config = config
        self.destination = destination
        self.reporter = reporter
        self.clock = clock
        self.rng = rng or random.Random()
        self.channels = [Channel(url) for url in config.channel_urls]
        self.rules = rules_from_config(config)
        self.policy = RetryPolicy(config.retries, config.retry_backoff, config.retry_backoff_max)
        self.summary = RunSummary(channels=[channel.display for channel in self.channels], started=clock())
        self.stale: dict[str, int] = {}
        self.use_journal = use_journal
        self.verify = verify  # hash every file on disk instead of trusting the journal
        self.wait_for_workers = wait_for_workers  # every download in a worker process (tests of the workers)
        self.journal: Journal | None = None
        # pkg_list alone (no dependency closure): only the records of its names are ever needed
        self._by_names = bool(self.rules.pkg_list) and not config.include_dependencies
        self._fingerprints: dict[str, str] = {}  # subdir -> fingerprint of the inputs of its plan
        self._index_cache: dict[str, list[tuple[int, IndexBytes]]] = {}  # read ahead by include_dependencies
        self._upstream_cache: dict[str, list[Upstream]] = {}
        self._dependencies: dict[str, set[str]] = {}  # subdir -> file names added as dependencies
        self._published: dict[str, IndexFacts] = {}  # subdir -> what this run's index of it holds
        self.throttle = TokenBucket(config.max_bandwidth_bytes) if config.max_bandwidth_bytes else None
        self._work: asyncio.Task[None] | None = None

    def request_stop(self, reason: str) -> None:
        """Stop taking work and abandon what is in flight (temp files removed); published subdirs stay."""
        self.summary.interrupted_by = reason
        if self._work is not None:
            self._work.cancel()

    async def run(self, *, dry_run: bool = False) -> RunSummary:
        async with open_session(self.config) as session:
            reader = ChannelReader(session, self.policy, self.rng)
            if dry_run:
                self.journal = await self._open_journal(readonly=True)
                try:
                    subdirs = await self._discover(reader)
                    if self.config.include_dependencies:
                        await self._add_dependencies(reader, subdirs)
                    async for _ in self._plans(reader, subdirs, dry_run=True):
                        pass
                finally:
                    await self.destination.close()  # a remote one opened a session to list what it holds
                    await self._close_journal("")
            else:
                await self._run_locked(session, reader)
        self.summary.finished = self.clock()
        return self.summary

    async def _run_locked(self, session: Http, reader: ChannelReader) -> None:
        lock = RunLock(self.config.state_dir / f"{self.config.dest_channel}.lock")
        lock.acquire(str(self.config.channel_dir))
        status = "failed"
        try:
            self.journal = await self._open_journal(readonly=False)
            await self.destination.open()
            self._work = asyncio.create_task(self._discover_and_mirror(session, reader))
            if self.summary.interrupted_by is not None:  # a signal came while the journal was opening
                self._work.cancel()
            try:
                await self._work
            except asyncio.CancelledError:
                if self.summary.interrupted_by is None:
                    raise
            status = "interrupted" if self.summary.interrupted_by else "done" if not self.summary.failures else "failed"
        finally:
            try:
                await self.destination.close()
                await self._close_journal(status)
            finally:
                lock.release()  # whatever failed above, the next run must not find us holding it

    async def _open_journal(self, *, readonly: bool) -> Journal | None:
        if not self.use_journal:
            return None
        path = self.config.state_dir / "journal.sqlite"
        if readonly:
            return await Journal.open_readonly(path, self.config.dest_channel)
        journal = await Journal.open(path, self.config.dest_channel, durable=self.destination.make_durable)
        await journal.begin_run()
        return journal

    async def _close_journal(self, status: str) -> None:
        if self.journal is None:
            return
        try:
            if status:
                await self.journal.finish_run(status, f"{len(self.summary.failures)} failure(s)")
        finally:
            await self.journal.close()

    async def explain(self, query: Query) -> list[str]:
        """For `explain`: every upstream record matching `query`, whether the mirror holds it, and why."""
        lines: list[str] = []
        async with open_session(self.config) as session:
            reader = ChannelReader(session, self.policy, self.rng)
            if self.config.platforms is not None:
                subdirs = sorted({ALWAYS_MIRRORED_SUBDIR, *self.config.platforms})
            else:
                found = await asyncio.gather(*(reader.subdirs(channel) for channel in self.channels))
                subdirs = sorted({subdir for listed in found for subdir in listed})
            try:
                for subdir in subdirs:
                    published = await self.destination.read_index(subdir, "repodata.json")
                    held = await asyncio.to_thread(_published_filenames, published)
                    for position, channel in enumerate(self.channels):
                        repodata = await reader.repodata(channel, subdir)
                        twins = _conda_builds(repodata) if repodata and self.config.prefer_conda else set()
                        for record in repodata.records if repodata else ():
                            if query.matches(record):
                                selected, reason = explain(record, subdir, self.rules)
                                if selected and record.filename.endswith(".tar.bz2") and record.filename[:-8] in twins:
                                    selected, reason = False, f"dropped by prefer_conda: {record.filename[:-8]}.conda"
                                mirrored = "mirrored" if record.filename in held else "not mirrored"
                                lines.append(
                                    f"{channel.display.rstrip('/')}/{subdir}/{record.filename}: {mirrored}; {reason}"
                                )
                                if selected and record.filename not in held and position:
                                    lines[-1] += " (a file of the same name from an earlier channel wins)"
            finally:
                await self.destination.close()  # a remote one opened a session to read its indexes
        return lines or [f"no upstream record matches {query.name}"]

    async def _discover_and_mirror(self, session: Http, reader: ChannelReader) -> None:
        subdirs = await self._discover(reader)
        if self.config.include_dependencies:
            await self._add_dependencies(reader, subdirs)
        await self._mirror(session, reader, subdirs)

    async def _add_dependencies(self, reader: ChannelReader, subdirs: list[str]) -> None:
        """include_dependencies: read every subdir first, then close the selection over its dependencies.

        The closure crosses subdirs (a noarch package needs linux-64's python), so all indexes are held
        at once here; planning then reuses them instead of fetching them again.
        """
        # Imported here: py-rattler (MatchSpecs) added 50 ms and 12 MB to every run, and few runs close.
        from mirror_engine.closure import Candidate, close_over, universes

        selected: dict[str, list[Record]] = {}
        records: dict[str, list[Record]] = {}
        for subdir in subdirs:
            self._index_cache[subdir] = indexes = await self._fetch_indexes(reader, subdir)
            upstreams = await self._upstreams(reader, subdir, indexes) if indexes else None
            if upstreams is None:  # absent, or failed and reported: its bytes were taken, nothing to plan
                self._index_cache[subdir] = []
                continue
            self._upstream_cache[subdir] = upstreams
            probe = await asyncio.to_thread(plan_subdir, subdir, upstreams, self.rules, {})
            selected[subdir] = list(probe.wanted.values())
            records[subdir] = _usable_records(upstreams, prefer_conda=self.config.prefer_conda)
        by_names = dataclasses.replace(self.rules, pkg_list=NameSet())  # the closure may add any name

        def allowed(record: Record) -> bool:
            return judge(record, by_names).kept

        for platform, universe in universes(records).items():
            seeds = [
                Candidate(s, r) for s in dict.fromkeys((platform, ALWAYS_MIRRORED_SUBDIR)) for r in selected.get(s, [])
            ]
            closure = await asyncio.to_thread(close_over, seeds, universe, allowed)
            for subdir, filenames in closure.added.items():
                self._dependencies.setdefault(subdir, set()).update(filenames)
            for dependency, needers in closure.unsatisfied.items():
                self.summary.unsatisfied.setdefault(f"{platform}: {dependency}", set()).update(needers)

    async def _discover(self, reader: ChannelReader) -> list[str]:
        """The destination subdirs to plan, in order; noarch first since every client needs it."""
        if self.config.platforms is not None:
            wanted = [ALWAYS_MIRRORED_SUBDIR, *self.config.platforms]
        else:
            found = await asyncio.gather(*(reader.subdirs(channel) for channel in self.channels))
            wanted = [subdir for subdirs in found for subdir in subdirs]
        ordered = sorted(dict.fromkeys(wanted), key=lambda s: (s != ALWAYS_MIRRORED_SUBDIR, s))
        return [subdir for subdir in ordered if subdir_selected(subdir, self.rules)]

    async def _plans(self, reader: ChannelReader, subdirs: list[str], *, dry_run: bool) -> AsyncIterator[SubdirPlan]:
        for subdir in subdirs:
            plan = await self._plan(reader, subdir, dry_run=dry_run)
            if plan is not None:
                yield plan

    async def _plan(self, reader: ChannelReader, subdir: str, *, dry_run: bool) -> SubdirPlan | None:
        """Plan one subdir; None when there is nothing to do for it (failed, absent, or unchanged)."""
        if subdir in self._index_cache:
            indexes = self._index_cache.pop(subdir)
        else:
            indexes = await self._fetch_indexes(reader, subdir)
        if not indexes:
            return None
        try:
            sidecars = await self._fetch_sidecars(reader, subdir, [i for i, _ in indexes])
        except MirrorError as error:
            self.summary.subdir_failed(subdir, str(error))
            return None
        inputs = [(self.channels[i].url, index.sha256) for i, index in indexes]
        inputs += [(name, hashlib.sha256(data).hexdigest()) for name, datas in sidecars.items() for data in datas]
        fingerprint = _fingerprint(self.config, inputs)
        counts = await self._same_inputs_counts(subdir, fingerprint)
        # One after the other, not at once: listing 600,000 files makes as many syscalls, each of which
        # gives up the GIL and then waits for it behind the parse (measured: 12 s at once, 11 s in turn).
        existing, vouched = await self._holdings(subdir, dry_run=dry_run)
        if counts is not None and vouched.unchanged:
            self.summary.add_unchanged(subdir, counts)
            log.info("%s: unchanged upstream and on disk; index left as it is", subdir)
            return None
        upstreams = self._upstream_cache.pop(subdir, None) or await self._upstreams(reader, subdir, indexes)
        if upstreams is None:
            return None
        plan = await asyncio.to_thread(
            functools.partial(
                plan_subdir,
                keep_removed=not self.config.prune_removed,
                dependencies=self._dependencies.get(subdir, ()),
                prefer_conda=self.config.prefer_conda,
            ),
            subdir, upstreams, self.rules, existing, vouched.digests,
        )  # fmt: skip
        plan = dataclasses.replace(plan, sidecars=await asyncio.to_thread(_parse_sidecars, subdir, sidecars))
        self._fingerprints[subdir] = fingerprint
        for key in left_out_of(plan):
            log.warning("%s: %s: records in a shape this mirror does not know; left out of its index", subdir, key)
        if self.journal is not None and not dry_run:
            self.journal.planned(subdir, ((item.filename, item.size) for item in plan.transfers))
        self.summary.add_plan(plan, self.clock())
        self.stale[subdir] = len(plan.stale)
        self.reporter.planned(plan)
        return plan

    async def _parse(self, reader: ChannelReader, subdir: str, channel: int, index: IndexBytes) -> Repodata:
        # With pkg_list alone, only the records of its names are read, from shards or from the whole index.
        names = self.rules.pkg_list.__contains__ if self._by_names else None
        if index.sharded and names is not None:
            return await reader.sharded_repodata(self.channels[channel], subdir, index, names)
        return await parse_index(index, names)

    async def _upstreams(
        self, reader: ChannelReader, subdir: str, indexes: list[tuple[int, IndexBytes]]
    ) -> list[Upstream] | None:
        """Parse each channel's index; None (and the subdir reported failed) when one cannot be used."""
        try:
            parsed = await asyncio.gather(*(self._parse(reader, subdir, i, index) for i, index in indexes))
        except MirrorError as error:
            self.summary.subdir_failed(subdir, str(error))
            return None
        upstreams = [
            Upstream(i, self.channels[i].package_base(subdir, repodata.base_url), repodata)
            for (i, _), repodata in zip(indexes, parsed, strict=True)
        ]
        for upstream in upstreams:
            channel = self.channels[upstream.channel]
            if not self.config.allow_other_hosts and not channel.same_origin(upstream.package_base):
                self.summary.subdir_failed(
                    subdir,
                    f"{channel.display}{subdir}: info.base_url sends downloads to {redact(upstream.package_base)}; "
                    "set allow_other_hosts: true to follow it",
                )
                return None
        return upstreams

    async def _fetch_sidecars(self, reader: ChannelReader, subdir: str, channels: list[int]) -> dict[str, list[bytes]]:
        """Upstream's run_exports.json and repodata_from_packages.json of a subdir, where it serves them."""
        found: dict[str, list[bytes]] = {}
        for name in SUBDIR_SIDECARS:
            datas = await asyncio.gather(*(reader.read(self.channels[i].file_url(subdir, name)) for i in channels))
            present = [data for data in datas if data is not None]
            if present:
                found[name] = present
        return found

    async def _fetch_indexes(self, reader: ChannelReader, subdir: str) -> list[tuple[int, IndexBytes]]:
        """Every channel's index of a subdir; empty if any channel failed, since publishing without one
        channel's records would drop its files from the mirror."""
        # With pkg_list alone, a few shards replace a whole index (conda-forge's linux-64 is ~250 MB).
        fetched = await asyncio.gather(
            *(reader.index_bytes(channel, subdir, shards=self._by_names) for channel in self.channels),
            return_exceptions=True,
        )
        indexes: list[tuple[int, IndexBytes]] = []
        for position, result in enumerate(fetched):
            if isinstance(result, BaseException):
                if not isinstance(result, MirrorError):
                    raise result
                self.summary.subdir_failed(subdir, str(result))
                return []
            if result is not None:
                indexes.append((position, result))
        if not indexes and subdir != ALWAYS_MIRRORED_SUBDIR:
            log.warning("platforms: no channel has a %s subdir", subdir)
        return indexes

    async def _same_inputs_counts(self, subdir: str, fingerprint: str) -> str | None:
        """The summary counts of the last complete publish of the subdir when it had the same upstream
        indexes and filters: if the destination still holds the same files, that index is still right,
        and the subdir is skipped without parsing anything."""
        if self.journal is None or self.verify:
            return None
        previous = await self.journal.index_fingerprint(subdir)
        return previous[1] if previous is not None and previous[0] == fingerprint else None

    async def _holdings(self, subdir: str, *, dry_run: bool) -> tuple[dict[str, FileStat], Vouched]:
        """The destination's package files of a subdir, and what the journal vouches for among them."""
        nothing_yet = dry_run and self.config.destination is None and not self.config.channel_dir.exists()
        journal = None if self.verify else self.journal
        with gc_paused():  # 600,000 FileStats and digests, no cycles: see gcpause
            existing = {} if nothing_yet else await self.destination.listing(subdir)
            vouched = Vouched({}, False) if journal is None else await journal.vouched(subdir, existing)
        return existing, vouched

    async def _mirror(self, session: Http, reader: ChannelReader, subdirs: list[str]) -> None:
        processes = self.config.worker_processes
        # Workers take about a second to start: until they are ready, files are fetched in this process,
        # so that a small run never waits for them.
        starting = asyncio.create_task(WorkerPool.start(self.config, processes)) if processes > 1 else None
        try:
            if starting is not None and self.wait_for_workers:
                await asyncio.wait([starting])
            await self._mirror_with(session, reader, subdirs, starting)
        finally:
            if starting is not None:
                await asyncio.shield(_stop_pool(starting))

    async def _mirror_with(
        self,
        session: Http,
        reader: ChannelReader,
        subdirs: list[str],
        starting: asyncio.Task[WorkerPool] | None,
    ) -> None:
        async def fetch(
            item: TransferItem, temp: Path, final: Path | None, on_bytes: Callable[[int], None]
        ) -> FileStat | None:
            if starting is not None and not starting.done() and item.size >= WAIT_FOR_WORKERS_BYTES:
                await asyncio.wait([starting])  # a second's wait, against minutes on one busy core
            pool = _ready_pool(starting)
            if pool is not None:
                return await pool.download(item, temp, on_bytes, final)
            await download(session, item, temp, on_bytes, self.throttle)
            return None

        def report(result: TransferResult, job: _SubdirJob) -> None:
            self.summary.add_result(result, self.clock())
            self.reporter.finished_file(result)
            job.settle(result)

        async def handle(work_item: tuple[TransferItem, _SubdirJob]) -> None:
            item, job = work_item
            await settler.add(await self._transfer(fetch, item), job)

        jobs: list[_SubdirJob] = []
        try:
            async with asyncio.TaskGroup() as publishers:
                settler = _Settler(
                    self.journal, report, publishers.create_task, SETTLING_PER_SLOT * self.config.concurrency
                )

                async def work() -> AsyncIterator[tuple[TransferItem, _SubdirJob]]:
                    async for plan in self._plans(reader, subdirs, dry_run=False):
                        job = _SubdirJob(plan, pending=len(plan.transfers))
                        jobs.append(job)
                        job.freeze()
                        job.verified.update(plan.trusted)
                        if job.pending == 0:
                            job.settled.set()
                        publishers.create_task(self._publish_when_settled(job))
                        for item in plan.transfers:
                            yield item, job

                await run_pool(work(), handle, workers=self.config.concurrency)
        except BaseExceptionGroup as group:
            raise _first_mirror_error(group) or group from None
        finally:
            for job in jobs:  # a publisher cancelled before it started never thawed its job
                job.thaw()
        if ALWAYS_MIRRORED_SUBDIR not in self.summary.published:
            await self._ensure_noarch()
        if self.summary.published:
            await self._write_channel_files(reader, subdirs)

    async def _write_channel_files(self, reader: ChannelReader, subdirs: list[str]) -> None:
        """channeldata.json for what the mirror holds now, and upstream's notices.json as it is."""
        names_by_subdir: dict[str, frozenset[str]] = {}
        facts: list[SubdirFacts] = []
        for subdir in subdirs:
            known = self._published.get(subdir)
            if known is None:  # not published by this run: read what an earlier one published
                published = await self.destination.read_index(subdir, "repodata.json")
                known = None if published is None else await asyncio.to_thread(_index_facts, published)
            if known is not None:
                names, files, size = known
                names_by_subdir[subdir] = names
                facts.append(SubdirFacts(subdir, len(names), files, size))
        upstream: list[dict[str, Any]] = []
        notices: bytes | None = None
        for channel in self.channels:
            try:
                data = await reader.read(f"{channel.url}channeldata.json")
                if data is not None:
                    upstream.append(orjson.loads(data))
                if notices is None:
                    notices = await reader.read(f"{channel.url}notices.json")
            except (MirrorError, orjson.JSONDecodeError) as error:  # optional files: say so and go on
                log.warning("%s: channeldata.json or notices.json unreadable: %s", channel.display, error)
        doc = build_channeldata(names_by_subdir, upstream)
        # Merged, not overwritten: mirrors on other hosts may own the channel's other subdirs (docs/scaling.md).
        merge = functools.partial(merged_channeldata, ours=doc, owned=subdirs)
        await self.destination.update_index("", "channeldata.json", merge)
        if notices is not None:
            await self.destination.write_index("", "notices.json", notices)
        if self.config.html_pages:
            where: dict[str, list[str]] = {}
            for subdir, held in names_by_subdir.items():
                for name in held:
                    where.setdefault(name, []).append(subdir)
            last_success = time.time() if not self.summary.failures else None
            page = channel_page(self.config.dest_channel, facts, where, filters_in_words(self.config), last_success)
            await self.destination.write_index("", "index.html", page.encode())

    async def _publish_when_settled(self, job: _SubdirJob) -> None:
        try:
            await job.settled.wait()
            await self._publish(job)
        finally:
            job.thaw()

    async def _publish(self, job: _SubdirJob) -> None:
        plan = job.plan
        published = await publish_subdir(
            self.destination,
            plan,
            job.verified,
            with_bz2=self.config.write_bz2,
            page_title=self.config.dest_channel if self.config.html_pages else None,
        )
        if self.journal is not None:
            complete = len(job.verified) == len(plan.wanted) and not plan.rejected
            await self.journal.published(
                plan.subdir,
                published.index_sha256,
                published.files,
                published.deleted,
                fingerprint=self._fingerprints.get(plan.subdir) if complete else None,
                counts=plan_counts(plan),
            )
        self._published[plan.subdir] = (published.names, published.files, published.size)
        self.summary.deleted[job.plan.subdir] = len(published.deleted)
        self.summary.published.append(job.plan.subdir)
        log.info("%s: published %d files, deleted %d", job.plan.subdir, published.files, len(published.deleted))

    async def _ensure_noarch(self) -> None:
        """conda asks every channel for noarch/repodata.json: an empty one beats a 404."""
        if await self.destination.stat(ALWAYS_MIRRORED_SUBDIR, "repodata.json") is None:
            await write_index(self.destination, ALWAYS_MIRRORED_SUBDIR, (), ())

    async def _transfer(self, fetch: Fetch, item: TransferItem) -> TransferResult:
        """Fetch, verify and commit one file, and queue its journal row; the caller reports it only after
        the journal has committed that row (`_Settler`)."""
        final = self.destination.final_path(item.subdir, item.filename)
        if item.check_existing and final is not None and await asyncio.to_thread(file_matches, final, item):
            await self._journal_verified(item, None)
            return TransferResult(item, Outcome.PRESENT)
        if self.journal is not None:
            self.journal.downloading(item.subdir, item.filename)
        # A worker renames into place itself where that is all a commit is: one rename and stat less here.
        in_place = self.destination.commit_path(item.subdir, item.filename)
        stat: FileStat | None = None

        async def attempt() -> None:
            nonlocal stat
            received = 0

            def count(nbytes: int) -> None:
                nonlocal received
                received += nbytes
                self.reporter.advanced(item.channel, nbytes)

            try:
                await self._ensure_free_space(item)
                temp = self.destination.temp_path(item.subdir, item.filename)
                try:
                    async with asyncio.timeout(self.config.file_timeout):
                        stat = await fetch(item, temp, in_place, count)
                    if stat is None:
                        await self.destination.commit(temp, item.subdir, item.filename)
                except BaseException:
                    # A worker hands a verified file over when it answers; a stop that lands between its
                    # answer and the commit leaves the file to us.
                    await asyncio.shield(asyncio.to_thread(temp.unlink, True))
                    raise
            except TimeoutError:
                self.reporter.advanced(item.channel, -received)
                raise ConnectionFailed(
                    f"{redact(item.url)}: not done within file_timeout ({self.config.file_timeout:g}s)"
                ) from None
            except MirrorError:
                self.reporter.advanced(item.channel, -received)  # a retry starts the file again
                raise

        try:
            await with_retries(
                attempt,
                self.policy,
                sleep=asyncio.sleep,
                rng=self.rng,
                on_retry=lambda error, delay: log.warning("%s; retry in %.1fs", error, delay),
            )
        except DiskFull as error:
            left = sum(row.to_fetch_bytes for row in self.summary.rows.values()) - self.summary.downloaded_bytes
            raise DiskFull(f"{error}; about {_human_bytes(left)} more is needed to finish this run") from None
        except WorkerCrashed:
            raise  # broken for every file, not just this one: stop the run
        except MirrorError as error:
            if isinstance(error, DestinationError) and not error.per_file:
                raise  # the destination is broken for every file: stop the run
            log.error("%s", error)
            if self.journal is not None:
                self.journal.failed(item.subdir, item.filename, str(error))
            return TransferResult(item, Outcome.FAILED, error=str(error))
        await self._journal_verified(item, stat)
        return TransferResult(item, Outcome.DOWNLOADED, nbytes=item.size)

    async def _ensure_free_space(self, item: TransferItem) -> None:
        """`min_free_space`: stop before a download would leave less than that on the destination's disk."""
        floor = self.config.min_free_bytes
        if not floor:
            return
        # A remote destination stages each download under the state folder before uploading it.
        disk = self.config.channel_dir if self.config.destination is None else self.config.state_dir
        usage = await asyncio.to_thread(shutil.disk_usage, _existing_ancestor(disk))
        if usage.free - item.size < floor:
            raise DiskFull(
                f"{disk}: {usage.free / 1e9:.2f} GB free; {item.filename} needs "
                f"{item.size / 1e6:.1f} MB and min_free_space keeps {floor / 1e9:.2f} GB"
            )

    async def _journal_verified(self, item: TransferItem, stat: FileStat | None) -> None:
        """Queue the row of a verified file with the stat it has now (`stat`, when the worker that put it
        in place took it), so later runs trust it without reading it; `_Settler` waits for its commit."""
        if self.journal is None:
            return
        if stat is None:
            stat = await self.destination.stat(item.subdir, item.filename)
        if stat is not None:
            self.journal.queue_verified(
                item.subdir, item.filename, sha256=item.sha256, md5=item.md5, size=stat.size, mtime_ns=stat.mtime_ns
            )


def _ready_pool(starting: asyncio.Task[WorkerPool] | None) -> WorkerPool | None:
    """The worker pool once it has started; None before, or if it could not start (`_stop_pool` says so)."""
    if starting is None or not starting.done() or starting.cancelled() or starting.exception() is not None:
        return None
    return starting.result()


async def _stop_pool(starting: asyncio.Task[WorkerPool]) -> None:
    if not starting.done():
        starting.cancel()  # stops the workers already started
    try:
        pool = await starting
    except asyncio.CancelledError:
        return
    except MirrorError as error:
        log.warning("%s; files were downloaded in the main process instead", error)
        return
    await pool.close()


def _first_mirror_error(group: BaseExceptionGroup[BaseException]) -> MirrorError | None:
    for exc in group.exceptions:
        if isinstance(exc, MirrorError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_mirror_error(exc)
            if found is not None:
                return found
    return None


def _usable_records(upstreams: list[Upstream], *, prefer_conda: bool = False) -> list[Record]:
    """Every record the closure may add: usable, and the first channel's where a file name repeats; with
    `prefer_conda`, no .tar.bz2 of a build that is there as .conda (the plan would drop it)."""
    found: dict[str, Record] = {}
    for upstream in sorted(upstreams, key=lambda u: u.channel):
        for record in upstream.repodata.records:
            if record.filename not in found and record.unusable_because() is None:
                found[record.filename] = record
    if prefer_conda:
        stems = {name[:-6] for name in found if name.endswith(".conda")}
        return [record for name, record in found.items() if not (name.endswith(".tar.bz2") and name[:-8] in stems)]
    return list(found.values())


def _conda_builds(repodata: Repodata) -> set[str]:
    """`name-version-build` of the usable .conda records of an index (prefer_conda drops their .tar.bz2)."""
    return {r.filename[:-6] for r in repodata.records if r.filename.endswith(".conda") and r.unusable_because() is None}


def _parse_sidecars(subdir: str, sidecars: dict[str, list[bytes]]) -> dict[str, tuple[dict[str, Any], ...]]:
    """Sidecar files are a convenience for clients: one that is not valid JSON is left out, with a warning."""
    parsed: dict[str, tuple[dict[str, Any], ...]] = {}
    for name, datas in sidecars.items():
        try:
            docs = tuple(orjson.loads(data) for data in datas)
        except orjson.JSONDecodeError as exc:
            log.warning("%s/%s: not valid JSON (%s); not mirrored", subdir, name, exc)
            continue
        parsed[name] = tuple(doc for doc in docs if isinstance(doc, dict))
    return parsed


def _published_filenames(repodata_json: bytes | None) -> set[str]:
    if repodata_json is None:
        return set()
    return {record.filename for record in parse_repodata(repodata_json, "published repodata.json").records}


def _index_facts(repodata_json: bytes) -> IndexFacts:
    """Names, file count and total size of a published index (ours: every record has a name and size)."""
    records = parse_repodata(repodata_json, "published repodata.json").records
    return frozenset(record.name for record in records), len(records), sum(record.size or 0 for record in records)


def _human_bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _fingerprint(config: MirrorConfig, indexes: list[tuple[str, str]]) -> str:
    """What a subdir's published index depends on: our version, the filters, each channel's index bytes."""
    inputs = {
        "version": __version__,
        "filters": [
            sorted(config.platforms or ()),
            sorted(config.python_versions),
            sorted(config.license_blacklist),
            sorted(name.lower() for name in config.blacklist),
            sorted(name.lower() for name in config.whitelist),
            sorted(name.lower() for name in config.pkg_list),
            config.include_dependencies,
            config.prune_removed,
            config.write_bz2,
            config.prefer_conda,
        ],
        "indexes": indexes,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


async def import_bundle(config: MirrorConfig, bundle: Path, reporter: Reporter) -> RunSummary:
    """Check a bundle against its manifest, then mirror from it as a local channel: same filters, journal
    and publish order as `run`. A delta must start from the snapshot the destination is at."""
    manifest = await asyncio.to_thread(read_manifest, bundle)
    marker = config.state_dir / f"{config.dest_channel}.snapshot"
    current = marker.read_text().strip() if marker.exists() else None
    if manifest["base"] is not None and manifest["base"] != current:
        raise BundleError(
            f"{bundle}: a delta from snapshot {str(manifest['base'])[:16]}, but {config.channel_dir} is at "
            f"{(current or 'no snapshot')[:16]}; import the missing bundles first, or a full export"
        )
    staging = config.state_dir / "bundle-staging"
    await asyncio.to_thread(shutil.rmtree, staging, True)
    try:
        await asyncio.to_thread(unpack_bundle, bundle, staging)
        channel = (staging / str(manifest["channel"])).resolve()
        run = MirrorRun(
            config.model_copy(update={"channels": (channel.as_uri() + "/",)}),
            make_destination(config),
            reporter,
        )
        summary = await run.run()
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    if summary.exit_code == 0:
        marker.write_text(str(manifest["snapshot"]) + "\n")
    return summary
