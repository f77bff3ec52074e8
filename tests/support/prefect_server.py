"""The test session's one Prefect server: a real ``prefect server start`` with its scheduler on.

Why one real server instead of Prefect's temporary one: without ``PREFECT_API_URL`` every process that
touches Prefect (pytest itself, and each CLI the tests run in a subprocess) starts a temporary server of
its own, waits at most ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` for it, and on a busy machine
gives up (``Timed out while attempting to connect to ephemeral Prefect API server``) while the server
process lives on. Here the server starts once, in a session of its own, while pytest collects; the tests
wait for it with a generous deadline; every process of the session reaches it through ``PREFECT_API_URL``;
it is stopped (its whole process group) when the session ends, and on Linux it also dies with pytest.

No Prefect import here: ``pytest_configure`` starts it before anything reads Prefect's settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from simulators.threaded import free_port

START_TIMEOUT_S = 300.0  # migrations and services on a machine whose cores are busy with other work

# The scheduler on (its loops at their defaults: deployments changed just now are scheduled within 5 s), a few
# runs ahead of a schedule (at least 2, at least 30 s ahead, at most 5) instead of the default hour of runs.
# Workers started by tests poll every second. (tests/prefect/test_schedules_real_server.py)
SCHEDULER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "5",
    "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT30S",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_PREFETCH_SECONDS": "10",
}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: SIGTERM this process when the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class SessionPrefectServer:
    """A ``prefect server start`` in a session of its own; ``env`` is what its processes see."""

    api: str
    home: Path
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    healthy: bool = False

    @classmethod
    def start(cls, home: Path) -> SessionPrefectServer:
        """Start the server without waiting for it (see :meth:`wait_healthy`)."""
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        log = home / "server.log"
        env = {
            **os.environ,
            **SCHEDULER_SETTINGS,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*command, "--no-ui"],
                cwd=home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        return cls(api=api, home=home, log=log, env=env, process=process)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until ``GET /api/health`` answers 200; raises ``RuntimeError`` naming the log otherwise."""
        deadline = time.monotonic() + timeout_s
        while not self.healthy:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the session's Prefect server exited ({self.process.returncode}); log {self.log}:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the session's Prefect server did not answer within {timeout_s:.0f} s; log {self.log}:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(httpx.HTTPError):
                self.healthy = httpx.get(f"{self.api}/health", timeout=10).status_code == 200
            if not self.healthy:
                time.sleep(0.5)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left of it after ``grace_s``; reaps the server."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
