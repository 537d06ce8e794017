"""The suite's subprocesses see a HOME and a CONDARC of the suite's own, never the machine user's."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path


def test_a_subprocess_gets_the_suites_home_and_condarc_not_the_users() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "import os, pathlib; print(pathlib.Path.home()); print(os.environ['CONDARC'])"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()  # fmt: skip
    users_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert Path(shown[0]) != users_home
    assert Path(shown[0]).name.startswith("mirror-engine-tests-home-")
    assert Path(shown[1]) == Path(shown[0]) / ".condarc"
    assert Path(shown[1]).read_text() == "{}\n"
    assert not (Path(shown[0]) / ".netrc").exists()
