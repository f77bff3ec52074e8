"""tools/leftovers.py: a command that leaves a process behind fails, and the process is killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.leftovers import MARK_VARIABLE, marked_processes, new_mark, run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_command_that_leaves_a_process_behind_fails_and_the_process_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = run(["bash", "-c", f"setsid sleep 120 & echo $! > {pid_file}; exit 0"], grace_s=1)
    assert code == 1
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_exit_codes_pass_through_when_nothing_is_left() -> None:
    assert run(["true"], grace_s=1) == 0
    assert run(["bash", "-c", "exit 3"], grace_s=1) == 3


def test_processes_are_found_by_their_mark_or_their_parent() -> None:
    mark = new_mark()
    marked = subprocess.Popen(["sleep", "60"], env={**os.environ, MARK_VARIABLE: mark})
    unmarked = subprocess.Popen(["sleep", "60"], env={})
    try:
        assert [p.pid for p in marked_processes(mark)] == [marked.pid]
        found = {p.pid for p in marked_processes(mark, below=os.getpid())}
        assert {marked.pid, unmarked.pid} <= found
        assert "sleep 60" in marked_processes(mark)[0].command
    finally:
        for process in (marked, unmarked):
            process.kill()
            process.wait()
    assert marked_processes(mark) == []
