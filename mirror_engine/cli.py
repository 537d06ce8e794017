"""The command line: argparse parser built by one function; the only place that prints an error and exits."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.logging import RichHandler

from mirror_engine import __version__
from mirror_engine.arenas import cap_malloc_arenas
from mirror_engine.bandwidth import parse_bytes
from mirror_engine.bundle import BundleError, Snapshot, export_bundle, unpack_bundle
from mirror_engine.channel import Channel
from mirror_engine.config import MirrorConfig, load_config, override_mirror_dir
from mirror_engine.destinations import make_destination
from mirror_engine.engine import MirrorRun, import_bundle
from mirror_engine.errors import ConfigError, MirrorError
from mirror_engine.explain import Query
from mirror_engine.progress import LogReporter, NullReporter, Reporter, RichReporter
from mirror_engine.report import JsonLogFormatter, plan_json, record_run, report_json, write_metrics, write_report
from mirror_engine.status import status_report
from mirror_engine.summary import RunSummary, format_plan, format_summary

log = logging.getLogger("mirror_engine")
T = TypeVar("T")

METRICS_INTERVAL = 30.0  # seconds between progress writes of --metrics-file
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

DESCRIPTION = """\
Mirror conda channels (Anaconda's pkgs/main, free, pro, r; conda-forge; private channels) into a
channel of your own. The config file uses the keys of Anaconda's cas-mirror tool (dest_channel,
channels, platforms, python_versions, license_blacklist, blacklist, whitelist, pkg_list, mirror_dir)
plus a few of ours (concurrency, retries, timeouts); see config/*.yaml and docs/.
"""

EPILOG = """\
exit status: 0 everything mirrored; 1 some files or subdirs failed (listed at the end);
2 bad config or usage; 3 internal error; 130 interrupted (run again to resume).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code for usage errors is 2, as is ours
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _command(commands: Any, name: str, **options: Any) -> argparse.ArgumentParser:
    """A subcommand whose first argument is the config file, as every command's is."""
    parser: argparse.ArgumentParser = commands.add_parser(name, **options)
    parser.add_argument("config", type=Path, help="YAML config file (cas-mirror keys)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mirror-engine",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mirror_engine {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    run = _command(
        commands,
        "run",
        help="mirror the channels a config file names",
        description="Mirror the channels CONFIG names into <mirror_dir>/<dest_channel>/<subdir>/. Files "
        "already there with the right sha256 are kept; each subdir's repodata.json is published only after "
        "its files are verified; files no longer selected are deleted after that.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--dry-run", action="store_true", help="print what would be fetched and deleted; write nothing")
    run.add_argument(
        "--verify",
        action="store_true",
        help="hash every file already in the mirror instead of trusting the journal; repair and report mismatches",
    )
    run.add_argument(
        "--no-journal",
        action="store_true",
        help="neither consult nor write the journal: files on disk are hashed again (for one-off runs)",
    )
    run.add_argument("--report", type=Path, metavar="FILE", help="write the summary as JSON (see docs/operations.md)")
    run.add_argument(
        "--metrics-file",
        type=Path,
        metavar="FILE",
        help="write Prometheus text-format metrics at the end (for node_exporter's textfile collector)",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="live progress: a bar on a terminal, periodic log lines otherwise (default: auto)",
    )
    status = _command(
        commands,
        "status",
        help="what the last (or current) run did and has left, read from the journal; no network",
        description="Print, from the journal beside the mirror, the last run's state and the files in each "
        "state (published, verified, planned, downloading, failed) with their bytes, and the failures.",
    )
    plan = _command(
        commands,
        "plan",
        help="what a run would do: per channel and subdir, records upstream, selected, dropped, to fetch, to delete",
        description="Read the channels' indexes and the mirror, and print what `run` would do, without writing "
        "anything: records upstream, selected, to check, to fetch (bytes), dropped by each filter step, to "
        "delete, conflicts. --json prints the same as a JSON object.",
    )
    plan.add_argument("--json", action="store_true", help="one JSON object on stdout (see docs/operations.md)")
    explain = _command(
        commands,
        "explain",
        help="why a package is or is not in the mirror: the filter step that decided each upstream record",
        description="For each upstream record matching NAME[=VERSION[=BUILD]], print whether the mirror "
        "holds it and which filter step decided it (platforms, python_versions, license_blacklist, blacklist, "
        "whitelist rescue, pkg_list). Reads the channels' indexes; downloads no package.",
    )
    explain.add_argument("package", help="NAME, NAME=VERSION or NAME=VERSION=BUILD")
    export = _command(
        commands,
        "export",
        help="write the mirror (or what changed since a snapshot) as tar volumes + manifest for an air gap",
        description="Write the destination channel as tar volumes of at most --split-size bytes, a manifest "
        "(every file with size and sha256, the removed files) and a snapshot file to keep for the next "
        "--since. Extracted, a bundle is a channel folder a config can name as a plain path.",
    )
    export.add_argument("out_dir", type=Path, help="folder to write the bundle into (on the removable drive)")
    export.add_argument("--since", type=Path, metavar="SNAPSHOT", help="only what changed since this snapshot file")
    export.add_argument("--split-size", default="3900MB", help="largest volume (default 3900MB, under FAT32's 4 GiB)")
    importer = commands.add_parser(
        "import",
        help="check a bundle against its manifest, then mirror from it (same filters, journal, publish order)",
        description="Verify every volume and file of BUNDLE_DIR against its manifest before anything is "
        "published, then mirror from it into CONFIG's destination. A delta must follow the bundle imported last.",
    )
    importer.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    importer.add_argument("config", type=Path, help="YAML config file (cas-mirror keys)")
    verify = commands.add_parser("verify-bundle", help="check a bundle against its manifest, importing nothing")
    verify.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    for sub in (run, plan, status, explain, export, importer, verify):
        sub.add_argument("-v", "--verbose", "--debug", action="store_true", help="debug logging; tracebacks on errors")
        sub.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the final summary")
        sub.add_argument(
            "--log-format", choices=("text", "json"), default="text", help="json: one object per line, for log shippers"
        )
        sub.add_argument("--mirror-dir", type=Path, metavar="DIR", help="override the config's mirror_dir")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    cap_malloc_arenas()
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    _setup_logging(args.verbose, args.quiet, console, json_lines=args.log_format == "json")
    try:
        return _run(args, console)
    except MirrorError as error:
        log.debug("failed", exc_info=True)
        print(f"mirror-engine: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # a second Ctrl-C: out at once; the journal and the mirror stay consistent
        print("mirror-engine: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: one line for the user, the traceback for the debug log
        log.debug("internal error", exc_info=True)
        print(f"mirror-engine: internal error: {type(error).__name__}: {error} (run with -v for details)",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "verify-bundle":
        manifest = unpack_bundle(args.bundle, None)
        print(
            f"{args.bundle}: {len(manifest['volumes'])} volume(s), {len(manifest['files'])} file(s) match the manifest"
        )
        return EXIT_OK
    config = load_config(args.config)
    if args.mirror_dir is not None:
        config = override_mirror_dir(config, args.mirror_dir)
    if args.command == "export":
        return _export(args, config)
    if args.command == "import":
        summary = _run_async(
            import_bundle(config, args.bundle, _reporter("auto", [str(args.bundle)], console, dry_run=False))
        )
        print(format_summary(summary))
        return summary.exit_code
    if args.command == "status":
        print(_run_async(status_report(config)))
        return EXIT_OK
    if args.command == "explain":
        explainer = MirrorRun(config, make_destination(config), NullReporter())
        print("\n".join(_run_async(explainer.explain(Query.parse(args.package)))))
        return EXIT_OK
    if args.command == "plan":
        planner = MirrorRun(config, make_destination(config), NullReporter())
        summary = _run_async(planner.run(dry_run=True))
        print(
            json.dumps(plan_json(summary, planner.stale), indent=2)
            if args.json
            else format_plan(summary, planner.stale)
        )
        return EXIT_OK
    names = [Channel(url).display for url in config.channel_urls]
    reporter = _reporter(args.progress, names, console, dry_run=args.dry_run)
    started_at = time.time()
    destination = make_destination(config)
    mirror = MirrorRun(config, destination, reporter, verify=args.verify, use_journal=not args.no_journal)
    try:
        summary = _run_async(_until_signalled(mirror, dry_run=args.dry_run, metrics=args.metrics_file))
    finally:
        reporter.close()
    if args.dry_run:
        print(format_plan(summary, mirror.stale))
        return EXIT_OK
    print(format_summary(summary))
    print(f"mirror: {destination.display}")
    if config.html_pages and (config.channel_dir / "index.html").exists():
        print(f"pages: {(config.channel_dir / 'index.html').as_uri()}")
    report = report_json(summary, mirror=destination.display, started_at=started_at)
    try:
        if config.state_dir.exists():
            record_run(config.state_dir, config.mirror_dir, report, page=config.html_pages)
        if args.report is not None:
            write_report(args.report, report)
        if args.metrics_file is not None:
            write_metrics(args.metrics_file, summary, channel=config.dest_channel, finished_at=time.time())
    except OSError as exc:
        raise MirrorError(f"{exc.filename}: cannot write: {exc.strerror}") from None
    return summary.exit_code


def _export(args: argparse.Namespace, config: MirrorConfig) -> int:
    try:
        split = parse_bytes(args.split_size, rate=False)
    except ValueError as exc:
        raise ConfigError("--split-size", "value", str(exc)) from None
    since = Snapshot.load(args.since) if args.since else None
    if config.destination is not None:
        raise BundleError(f"{config.destination.url}: export reads a mirror in a local folder; run it where one is")
    if not config.channel_dir.is_dir():
        raise BundleError(f"{config.channel_dir}: nothing mirrored here to export")
    manifest = export_bundle(config.channel_dir, config.dest_channel, args.out_dir, split, since)
    size = sum(volume["size"] for volume in manifest["volumes"])
    print(
        f"{args.out_dir}: {len(manifest['files'])} file(s), {len(manifest['removed'])} removed, "
        f"{len(manifest['volumes'])} volume(s), {size / 1e6:,.1f} MB; "
        f"keep snapshot-{manifest['snapshot'][:16]}.json for --since"
    )
    return EXIT_OK


async def _until_signalled(mirror: MirrorRun, *, dry_run: bool, metrics: Path | None = None) -> RunSummary:
    """The first SIGINT or SIGTERM stops the run cleanly (summary, exit 130/143); a second one exits at once.
    With `metrics`, progress is written there every METRICS_INTERVAL seconds while the run goes on."""
    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal(signum: signal.Signals) -> None:
        log.warning("%s: stopping; in-flight files are abandoned, published subdirs stay", signum.name)
        for each in stop_signals:
            loop.remove_signal_handler(each)
            signal.signal(each, _exit_now)  # the next one ends us wherever the main thread is
        mirror.request_stop(signum.name)

    for each in stop_signals:
        loop.add_signal_handler(each, on_signal, each)
    writer = asyncio.create_task(_write_metrics_periodically(mirror, metrics)) if metrics and not dry_run else None
    try:
        return await mirror.run(dry_run=dry_run)
    finally:
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer  # a bug that ended it early is raised here, not logged whenever it is collected
        for each in stop_signals:
            loop.remove_signal_handler(each)


def _exit_now(signum: int, _frame: object) -> None:
    """A second SIGINT or SIGTERM: out at once. The journal (SQLite) and the mirror stay consistent, and
    the transfer workers leave when their pipe closes; an exception here could surface anywhere instead."""
    sys.stderr.write("mirror-engine: interrupted; run the same command again to resume\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED if signum == signal.SIGINT else 143)


async def _write_metrics_periodically(mirror: MirrorRun, path: Path) -> None:
    while True:
        await asyncio.sleep(METRICS_INTERVAL)
        try:
            write_metrics(
                path, mirror.summary, channel=mirror.config.dest_channel, finished_at=time.time(), running=True
            )
        except OSError as exc:  # the final write reports it; a monitoring file must not stop a mirror
            log.warning("%s: cannot write metrics: %s", path, exc.strerror)


def _reporter(choice: str, names: list[str], console: Console, *, dry_run: bool) -> Reporter:
    if dry_run or choice == "none":
        return NullReporter()
    if choice == "bar" or (choice == "auto" and console.is_terminal):
        return RichReporter(names, console)
    return LogReporter()


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform; asyncio's own loop is only slower
        return asyncio.run(coro)
    return uvloop.run(coro)


def _setup_logging(verbose: bool, quiet: bool, console: Console, *, json_lines: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler: logging.Handler
    if json_lines:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
    elif console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("mirror_engine")
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not verbose:
        handler.addFilter(_no_tracebacks)


def _no_tracebacks(record: logging.LogRecord) -> bool:
    record.exc_info = None
    return True
