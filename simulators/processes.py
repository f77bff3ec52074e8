"""One simulator as a background process: started in its own session, tracked by a pid file, stopped by group.

``flywheel stack up`` runs each part as ``python -m simulators.<part>``; its output goes to
``<flywheel home>/logs/<part>.log`` and its process id to ``<flywheel home>/run/<part>.pid``, so a later
``stack status`` or ``stack down`` (another process) finds it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

from simulators.settings import home_dir

HealthCheck = Callable[[], tuple[bool, str]]


class StackError(RuntimeError):
    """A part of the stack could not be started or stopped; the message says which and why."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something already accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # a child of ours that has exited: reaped now
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class PartProcess:
    """The background process of one part, found again through its pid file."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.pid_file = home_dir("run") / f"{part}.pid"
        self.log_file = home_dir("logs") / f"{part}.log"

    def pid(self) -> int | None:
        """The recorded process id while that process lives, else ``None``."""
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _log_end(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self, argv: Sequence[str], env: Mapping[str, str], healthy: HealthCheck, timeout_s: float) -> int:
        """Start ``argv`` detached, then wait until ``healthy()``; on exit or timeout stop it and raise StackError."""
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid), encoding="utf-8")
        deadline = time.monotonic() + timeout_s
        detail = "not checked yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise StackError(
                    f"{self.part} exited with code {process.returncode}; {self.log_file} ends:\n{self._log_end()}"
                )
            ok, detail = healthy()
            if ok:
                return process.pid
            time.sleep(0.25)
        self.stop()
        raise StackError(
            f"{self.part} not healthy after {timeout_s:.0f} s ({detail}); {self.log_file} ends:\n{self._log_end()}"
        )

    def stop(self, timeout_s: float = 10.0) -> bool:
        """SIGTERM the process group, SIGKILL what is left after ``timeout_s``; True when something was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # children a server left behind, or one that ignored SIGTERM
        return True
