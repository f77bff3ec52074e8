"""Background processes on this machine: start one with its log and pid file, check it, stop it.

The local stack's simulators and the local Prefect server, MLflow UI and worker are all long-running
commands started in their own process session, tracked by ``.flywheel/run/<name>.pid`` and logging to
``.flywheel/logs/<name>.log``; this module is what they share.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

from agent_flywheel.paths import state_dir

Health = Callable[[], tuple[bool, str]]


class ServiceError(RuntimeError):
    """A background service could not be started or stopped; the message says which and why."""


def pid_alive(pid: int) -> bool:
    """Whether a process exists (a zombie child counts as gone once reaped)."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 20) -> str:
    """The end of a log file, for error messages that point at the cause."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_health(url: str, expect: Callable[[httpx.Response], bool] | None = None, timeout_s: float = 2.0) -> Health:
    """A health check that GETs ``url`` and wants a 200 (and ``expect(response)`` when given)."""

    def check() -> tuple[bool, str]:
        try:
            response = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return False, f"no answer from {url}: {type(exc).__name__}"
        if response.status_code != 200 or (expect is not None and not expect(response)):
            return False, f"{url} answered {response.status_code}"
        return True, "healthy"

    return check


class BackgroundProcess:
    """One long-running command in its own session, tracked by ``.flywheel/run/<name>.pid``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid_file = state_dir("run") / f"{name}.pid"
        self.log_file = state_dir("logs") / f"{name}.log"

    def pid(self) -> int | None:
        """The recorded process id, if that process is still alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        health: Health,
        cwd: Path | None = None,
        timeout_s: float = 90.0,
    ) -> int:
        """Start ``argv`` in the background and wait until ``health`` passes; returns the pid.

        If the process exits or stays unhealthy, it is stopped and the error carries its log's tail.
        """
        process = self.launch(argv, env=env, cwd=cwd)
        self.wait_healthy(process, health, timeout_s)
        return process.pid

    def launch(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, output appended to the log, pid recorded; no waiting."""
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        return process

    def wait_healthy(self, process: subprocess.Popen[bytes], health: Health, timeout_s: float) -> None:
        """Wait until ``health`` passes; stop the process and raise with its log's tail if it never does."""
        deadline = time.monotonic() + timeout_s
        detail = "not checked yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise ServiceError(
                    f"{self.name} exited with code {process.returncode}; {self.log_file} ends:\n{log_tail(self.log_file)}"
                )
            healthy, detail = health()
            if healthy:
                return
            time.sleep(0.25)
        self.stop()
        raise ServiceError(
            f"{self.name} not healthy after {timeout_s:.0f} s ({detail}); {self.log_file} ends:\n{log_tail(self.log_file)}"
        )

    def stop(self, sig: signal.Signals = signal.SIGTERM, *, group: bool = True, timeout_s: float = 20.0) -> bool:
        """Send ``sig`` to the process group (to the process alone with ``group=False``) and wait up to
        ``timeout_s``; then SIGKILL what is left. True when a running process was stopped."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_s
        exited = False
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                exited = True
                break
            time.sleep(0.1)
        if group or not exited:
            # a server's leftover children, or a process that ignored ``sig``; a worker that stopped
            # cleanly keeps its group, so flow runs it started are not killed with it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        return True
