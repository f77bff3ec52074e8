"""Run a command and fail if it leaves a process behind: ``python -m tools.leftovers -- COMMAND [ARGS...]``.

``make test`` and ``make demo`` run under it. Every process the command starts inherits the variable
``FLYWHEEL_SESSION_MARK`` with a value made for this run (a server started in a session of its own keeps
it too, and so do the processes it starts). When the command has ended, any process still carrying the
value is a leftover: it is named on stderr, killed, and the run fails (exit 1 if the command itself had
succeeded). The test suite makes the same check at the end of its session (``tests/conftest.py``), with
the same functions, so that a plain ``pytest`` run is checked too.

Linux only (the environment of other processes is read from ``/proc``); elsewhere nothing is checked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MARK_VARIABLE = "FLYWHEEL_SESSION_MARK"
PROC = Path("/proc")


@dataclass(frozen=True)
class Leftover:
    """A process that outlived the command that started it."""

    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.command}"


def new_mark() -> str:
    """A value no other run uses, for :data:`MARK_VARIABLE`."""
    return f"flywheel-{uuid.uuid4().hex}"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or another user's process
        return b""


def _is_zombie(pid: int) -> bool:
    """An exited process its parent has not reaped yet: it runs nothing and cannot be killed."""
    stat = _read(PROC / str(pid) / "stat")
    return stat.rpartition(b")")[2].split()[:1] == [b"Z"]


def parent_of(pid: int) -> int | None:
    """The parent's pid, from ``/proc/<pid>/stat`` (None once the process is gone)."""
    fields = _read(PROC / str(pid) / "stat").rpartition(b")")[2].split()
    return int(fields[1]) if len(fields) > 1 else None


def ancestors(pid: int) -> set[int]:
    """``pid`` and every process above it, up to init."""
    seen: set[int] = set()
    current: int | None = pid
    while current and current not in seen:
        seen.add(current)
        current = parent_of(current)
    return seen


def _leftover(pid: int) -> Leftover:
    command = _read(PROC / str(pid) / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    return Leftover(pid, command[:300])


def marked_processes(
    mark: str, exclude: Iterable[int] = (), variable: str = MARK_VARIABLE, below: int | None = None
) -> list[Leftover]:
    """Running processes (not zombies) whose environment holds ``variable=mark``, and with ``below`` also those
    whose parent chain leads to that pid (children started with an environment of their own); less ``exclude``."""
    if not PROC.is_dir():
        return []
    wanted = f"{variable}={mark}".encode()
    skip = set(exclude)
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        marked = wanted in _read(entry / "environ").split(b"\0")
        if (marked or (below is not None and below in ancestors(pid) - {pid})) and not _is_zombie(pid):
            found.append(_leftover(pid))
    return sorted(found, key=lambda p: p.pid)


def wait_until_gone(
    mark: str,
    exclude: Iterable[int] = (),
    grace_s: float = 15.0,
    variable: str = MARK_VARIABLE,
    below: int | None = None,
) -> list[Leftover]:
    """The marked processes still running after ``grace_s`` (processes that are shutting down get that long)."""
    skip = set(exclude)
    deadline = time.monotonic() + grace_s
    left = marked_processes(mark, skip, variable, below)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = marked_processes(mark, skip, variable, below)
    return left


def kill(
    processes: Sequence[Leftover],
    mark: str,
    exclude: Iterable[int] = (),
    variable: str = MARK_VARIABLE,
    below: int | None = None,
) -> list[Leftover]:
    """SIGKILL each leftover (and what it starts meanwhile); returns those that still run after 10 s."""
    skip = set(exclude)
    deadline = time.monotonic() + 10
    left = list(processes)
    while left and time.monotonic() < deadline:
        for process in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(process.pid, signal.SIGKILL)
        time.sleep(0.2)
        left = marked_processes(mark, skip, variable, below)
    return left


def report(leftovers: Sequence[Leftover], what: str) -> str:
    """The message naming the leftovers, one per line."""
    lines = [f"{what} left {len(leftovers)} process(es) running (killed now):"]
    lines += [f"  {process}" for process in leftovers]
    return "\n".join(lines)


def run(command: Sequence[str], grace_s: float = 15.0) -> int:
    """Run ``command`` with a fresh mark; its exit code, or 1 when it succeeded but left processes behind
    (still running ``grace_s`` after it ended)."""
    mark = new_mark()
    env = {**os.environ, MARK_VARIABLE: mark}
    process = subprocess.Popen(list(command), env=env)
    # Ctrl-C reaches the command's whole process group; this process waits for the command to finish it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    forward = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        code = process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, forward)
    leftovers = wait_until_gone(mark, exclude={os.getpid()}, grace_s=grace_s)
    if not leftovers:
        return code
    print(report(leftovers, " ".join(command)), file=sys.stderr)
    still = kill(leftovers, mark, exclude={os.getpid()})
    if still:
        print(f"could not kill: {', '.join(str(p.pid) for p in still)}", file=sys.stderr)
    return code or 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.leftovers -- COMMAND [ARGS...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m tools.leftovers -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
