"""Start, check and stop the local stack: each simulator a background process on loopback.

``flywheel stack up`` starts the parts in dependency order, waits for each health check, and records
the process ids under ``.flywheel/run/``; ``down`` stops them; ``status`` says what is healthy. The
parts log to ``.flywheel/logs/<part>.log``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from agent_flywheel.local.settings import PARTS, LocalStackConfig
from agent_flywheel.paths import state_dir

HEALTH_PATHS = {
    "logserver": "/",
    "datastore": "/health",
    "nim": "/v1/health/ready",
    "nemo": "/health",
    "agent": "/health",
}


class StackError(RuntimeError):
    """A part of the local stack could not be started; the message says which and why."""


@dataclass(frozen=True)
class PartStatus:
    """What ``stack status`` reports for one part."""

    name: str
    url: str
    pid: int | None
    healthy: bool
    detail: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalStack:
    """The simulators as background processes, managed through pid files."""

    def __init__(self, cfg: LocalStackConfig, parts: Iterable[str] = PARTS) -> None:
        self.cfg = cfg
        self.parts = [p for p in PARTS if p in set(parts)]
        self.run_dir = state_dir("run")
        self.log_dir = state_dir("logs")

    def _pid_file(self, part: str) -> Path:
        return self.run_dir / f"{part}.pid"

    def _read_pid(self, part: str) -> int | None:
        try:
            return int(self._pid_file(part).read_text().strip())
        except (OSError, ValueError):
            return None

    def health(self, part: str, timeout_s: float = 1.0) -> tuple[bool, str]:
        """Ask the part's health endpoint; (healthy, detail)."""
        url = self.cfg.url(part) + HEALTH_PATHS[part]
        try:
            response = httpx.get(url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return False, f"no answer from {url}: {type(exc).__name__}"
        if response.status_code != 200:
            return False, f"{url} answered {response.status_code}"
        simulated = response.headers.get("X-Flywheel-Simulated") == "true"
        return True, "healthy (simulated)" if simulated else "healthy"

    def status(self) -> list[PartStatus]:
        """The state of every part: pid, health and a one-line detail."""
        result = []
        for part in self.parts:
            pid = self._read_pid(part)
            if pid is not None and not _pid_alive(pid):
                pid = None
            healthy, detail = self.health(part)
            if not healthy and pid is None:
                detail = "stopped"
            result.append(PartStatus(part, self.cfg.url(part), pid, healthy, detail))
        return result

    def _config_file(self) -> Path:
        path = self.run_dir / "stack-config.yaml"
        path.write_text(yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        return path

    def up(self, timeout_s: float = 60.0) -> list[PartStatus]:
        """Start every part that is not already healthy, in dependency order, and wait for each."""
        config_file = self._config_file()
        for part in self.parts:
            if self.health(part)[0]:
                continue
            port = getattr(self.cfg.ports, part)
            if _port_in_use(self.cfg.host, port):
                raise StackError(f"{part}: port {port} is in use by another program; change ports.{part}")
            log_path = self.log_dir / f"{part}.log"
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"agent_flywheel.local.{part}", "--config", str(config_file)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            self._pid_file(part).write_text(str(process.pid))
            self._wait_healthy(part, process, log_path, timeout_s)
        return self.status()

    def _wait_healthy(self, part: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(f"{part} exited with code {process.returncode}; its log ends:\n{_tail(log_path)}")
            if self.health(part, timeout_s=0.5)[0]:
                return
            time.sleep(0.2)
        raise StackError(f"{part} did not become healthy in {timeout_s:.0f} s; its log ends:\n{_tail(log_path)}")

    def down(self, timeout_s: float = 10.0) -> list[str]:
        """Stop every part this stack started (SIGTERM, then SIGKILL); returns the names stopped."""
        stopped = []
        for part in reversed(self.parts):
            pid = self._read_pid(part)
            self._pid_file(part).unlink(missing_ok=True)
            if pid is None or not _pid_alive(pid):
                continue
            _terminate(pid, timeout_s)
            stopped.append(part)
        return stopped


def _terminate(pid: int, timeout_s: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        with contextlib.suppress(ChildProcessError):  # reap our own child so it does not linger as a zombie
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
