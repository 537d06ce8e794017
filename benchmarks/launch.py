"""Run one command and write its wall time and rusage to a file: `python -I -S launch.py REPORT COMMAND...`.

The runner starts every measured command through this small process instead of directly. On Linux a
child started by vfork (as subprocess and posix_spawn do) carries the peak RSS of its parent's memory
into its own, so a command started by the runner would report at least the runner's peak (tens of MB
once it has read a large manifest). Started from here, the floor is this interpreter's few MB.
Imports nothing beyond os, sys and time, and runs with -I -S, to stay that small.
"""

import os
import sys
import time


def main() -> int:
    report, *command = sys.argv[1:]
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)  # stdin, stdout, stderr: ours, as given
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    with open(report, "w") as out:
        out.write(f"{wall} {usage.ru_utime + usage.ru_stime} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
