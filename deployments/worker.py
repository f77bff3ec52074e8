"""The local process worker that runs deployed flows, in the background (``flywheel worker up|down|status``)."""

from __future__ import annotations

import signal
import sys

import httpx

from agent_flywheel.processes import BackgroundProcess, ServiceError
from deployments.settings import DeployError, ServerConfig, ServiceStatus, prefect_env, require_server


class LocalWorker:
    """A process worker for the local pool, in the background (``flywheel worker up|down``).

    It stops on SIGINT (it ignores SIGTERM for a long while), so ``down`` sends SIGINT to the worker
    alone: flow runs it already started finish on their own.
    """

    NAME = "prefect-worker"

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.process = BackgroundProcess(self.NAME)

    def health(self) -> tuple[bool, str]:
        """Whether the server lists this worker as ONLINE in its pool (it heartbeats as it starts)."""
        url = f"{self.cfg.prefect_api_url}/work_pools/{self.cfg.worker.pool}/workers/filter"
        try:
            response = httpx.post(url, json={}, timeout=2.0)
        except httpx.HTTPError as exc:
            return False, f"no answer from {url}: {type(exc).__name__}"
        if response.status_code != 200:
            return False, f"{url} answered {response.status_code}"
        for worker in response.json():
            if worker.get("name") == self.cfg.worker.name:
                status = str(worker.get("status") or "").upper()
                return status == "ONLINE", f"{status.lower() or 'unknown'} in pool {self.cfg.worker.pool}"
        return False, f"not registered in pool {self.cfg.worker.pool}"

    def up(self, timeout_s: float = 90.0) -> ServiceStatus:
        """Start the worker unless it already runs, and wait until the server sees it online."""
        require_server(self.cfg)
        if self.process.pid() is None:
            try:
                self.process.start(self._argv(), env=self._env(), health=self.health, timeout_s=timeout_s)
            except ServiceError as exc:
                raise DeployError(str(exc)) from None
        return self.status()

    def down(self, timeout_s: float = 30.0) -> bool:
        """Stop the worker with SIGINT (SIGKILL after ``timeout_s``); True when one was running."""
        return self.process.stop(signal.SIGINT, group=False, timeout_s=timeout_s)

    def status(self) -> ServiceStatus:
        """Pid and health of the worker."""
        pid = self.process.pid()
        healthy, detail = self.health() if pid is not None else (False, "stopped")
        return ServiceStatus(self.NAME, f"pool {self.cfg.worker.pool}", pid, healthy, detail)

    def _argv(self) -> list[str]:
        worker = self.cfg.worker
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", worker.pool, "--type", "process"]
        argv += ["--name", worker.name]
        if worker.limit is not None:
            argv += ["--limit", str(worker.limit)]
        return argv

    def _env(self) -> dict[str, str]:
        query = f"{self.cfg.worker.query_seconds:g}"
        return prefect_env(self.cfg, {"PREFECT_WORKER_QUERY_SECONDS": query, "PREFECT_WORKER_PREFETCH_SECONDS": "10"})
