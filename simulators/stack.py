"""Start, check and stop the local stack: each simulator a background process on loopback.

``flywheel stack up`` starts the parts in dependency order, waits for each health check, and records
the process ids under ``.flywheel/run/``; ``down`` stops them; ``status`` says what is healthy. The
parts log to ``.flywheel/logs/<part>.log``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from simulators.processes import PartProcess, StackError, port_in_use
from simulators.settings import PARTS, LocalStackConfig, home_dir

HEALTH_PATHS = {
    "logserver": "/",
    "datastore": "/health",
    "nim": "/v1/health/ready",
    "nemo": "/health",
    "agent": "/health",
}


@dataclass(frozen=True)
class PartStatus:
    """What ``stack status`` reports for one part."""

    name: str
    url: str
    pid: int | None
    healthy: bool
    detail: str


class LocalStack:
    """The simulators as background processes, managed through pid files."""

    def __init__(self, cfg: LocalStackConfig, parts: Iterable[str] = PARTS) -> None:
        self.cfg = cfg
        self.parts = [p for p in PARTS if p in set(parts)]
        self.run_dir = home_dir("run")

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
            pid = PartProcess(part).pid()
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
            if port_in_use(self.cfg.host, port):
                raise StackError(f"{part}: port {port} is in use by another program; change ports.{part}")
            PartProcess(part).start(
                [sys.executable, "-m", f"simulators.{part}", "--config", str(config_file)],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                healthy=functools.partial(self.health, part, 0.5),
                timeout_s=timeout_s,
            )
        return self.status()

    def down(self) -> list[str]:
        """Stop every part this stack started (SIGTERM, then SIGKILL); returns the names stopped."""
        return [part for part in reversed(self.parts) if PartProcess(part).stop(timeout_s=10.0)]
