"""One measured run of a command: wall time, CPU and peak RSS from the kernel's rusage of its process tree.

`os.wait4` returns the child's rusage with that of every descendant it waited for folded in: CPU times
are summed over the tree, peak RSS is the largest single process's (a pipeline under `sh -c` shows its
biggest member, not the sum). The command is started by launch.py, a small process of its own, and not
by the runner: see there why, and `rss_floor_mb` for the few MB every figure includes.
"""

from __future__ import annotations

import fcntl
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.workloads import child_env

LAUNCH = Path(__file__).with_name("launch.py")


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float  # user + system seconds
    rss_mb: float

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu / self.wall if self.wall else 0.0


@dataclass(frozen=True)
class Stats:
    """A tool's samples on one workload, with the workload's size for rates."""

    samples: tuple[Sample, ...]
    total_bytes: int = 0
    files: int = 0

    @property
    def median(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def fastest(self) -> float:
        return min(s.wall for s in self.samples)

    @property
    def cpu_percent(self) -> float:
        return statistics.median(s.cpu_percent for s in self.samples)

    @property
    def rss_mb(self) -> float:
        return max(s.rss_mb for s in self.samples)

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes / self.median / 1e6

    @property
    def files_per_s(self) -> float:
        return self.files / self.median


def measure(command: Sequence[str], cwd: Path, *, tty: bool = False) -> Sample:
    """Run `command` to its end and measure it; with `tty`, its stdout and stderr are a pseudo-terminal
    (120x40) that is read and thrown away, so a live display draws as it would for a person."""
    environment = child_env()
    shown = bytearray()  # with `tty`, the terminal's last bytes, for the message if the command fails
    with tempfile.TemporaryFile() as errors:
        if tty:
            master, slave = os.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            drain = threading.Thread(target=_drain, args=(master, shown), daemon=True)
            drain.start()
            stdout = stderr = slave
            environment = {**environment, "TERM": "xterm-256color"}
        else:
            stdout, stderr = subprocess.DEVNULL, errors.fileno()
        with tempfile.NamedTemporaryFile("r") as report:
            launcher = [sys.executable, "-I", "-S", str(LAUNCH), report.name, *command]
            process = subprocess.Popen(
                launcher, cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
            )
            if tty:
                os.close(slave)  # the child holds its own copy; EOF on master comes when the child closes it
            process.wait()
            if tty:
                drain.join(10)
                os.close(master)
            facts = report.read().split()  # wall, cpu, peak RSS in KiB, exit code; none if it could not start
        if process.returncode != 0 or len(facts) != 4 or facts[3] != "0":
            errors.seek(0)
            tail = (bytes(shown) if tty else errors.read())[-3000:].decode(errors="replace")
            raise SystemExit(f"benchmark command failed ({facts[3:]}): {' '.join(command)}\n{tail}")
    return Sample(float(facts[0]), float(facts[1]), int(facts[2]) * 1024 / 1e6)  # KiB -> MB


def _drain(master: int, tail: bytearray) -> None:
    """Read the terminal's output until the child is gone (EIO), as a terminal emulator would."""
    try:
        while data := os.read(master, 65536):
            tail[:] = (tail + data)[-4096:]
    except OSError:
        pass


def rss_floor_mb() -> float:
    """The peak RSS every measured command reports at least: launch.py's, carried into the command at exec."""
    return measure(["true"], Path.cwd()).rss_mb


def engine(config: str, *args: str) -> list[str]:
    """`python -m mirror_engine run` with the runner's interpreter; child_env puts this checkout first."""
    return [sys.executable, "-m", "mirror_engine", "run", config, *args]
