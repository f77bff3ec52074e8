"""Local operations: a Prefect server and the MLflow UI as background processes on loopback.

``flywheel server up`` starts both (ports from ``configs/server.yaml`` or the command line), waits for
their health checks and records their process ids under ``.flywheel/run/``; their output goes to
``.flywheel/logs/``. ``down`` stops them (the worker first, if one runs: a worker without its server
only logs errors). Nothing here imports Prefect: the server is the ``prefect`` command line in a
subprocess, so this module works whatever ``PREFECT_*`` settings the calling process already loaded.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent_flywheel.config import load_config
from agent_flywheel.paths import configure_local_environment, flywheel_home, state_dir
from agent_flywheel.processes import (
    BackgroundProcess,
    Health,
    ServiceError,
    http_health,
    log_tail,
    pid_alive,
    port_in_use,
)

__all__ = ["BackgroundProcess", "Health", "ServiceError", "http_health", "log_tail", "pid_alive", "port_in_use"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER_CONFIG = PROJECT_ROOT / "configs" / "server.yaml"


# --------------------------------------------------------------------------------------------------
# Settings: configs/server.yaml
# --------------------------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrefectServerSettings(_Section):
    """The Prefect server: API, UI, and the services that fire schedules and triggers."""

    port: int = Field(default=4200, ge=1, le=65535)
    api_url: str | None = Field(
        default=None, description="Deploy to this server's API instead of the local one (production)"
    )
    ui: bool = True
    scheduler: bool = Field(default=True, description="Create runs from deployment schedules")


class MlflowServerSettings(_Section):
    """The MLflow tracking server and UI over the project's SQLite store."""

    enabled: bool = True
    port: int = Field(default=5000, ge=1, le=65535)
    backend_store_uri: str | None = Field(default=None, description="Default: sqlite:///<flywheel home>/mlflow.db")
    artifacts_destination: str | None = Field(default=None, description="Default: <flywheel home>/mlartifacts")


class WorkerSettings(_Section):
    """The local process worker that runs deployed flows."""

    pool: str = "flywheel-local"
    name: str = "flywheel-local-worker"
    query_seconds: float = Field(default=5.0, gt=0, description="How often the worker polls for runs")
    limit: int | None = Field(default=4, ge=1, description="Flow runs at once on this worker")


class ServerConfig(_Section):
    """``configs/server.yaml``: where the local Prefect server, MLflow UI and worker run."""

    host: str = "127.0.0.1"
    prefect: PrefectServerSettings = Field(default_factory=PrefectServerSettings)
    mlflow: MlflowServerSettings = Field(default_factory=MlflowServerSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    concurrency_limits: dict[str, int] = Field(
        default_factory=lambda: {"gpu": 2},
        description="Global concurrency limits created by `flywheel deploy` (name -> slots)",
    )

    @property
    def prefect_url(self) -> str:
        """The server's base URL (the UI)."""
        return f"http://{self.host}:{self.prefect.port}"

    @property
    def local_api_url(self) -> str:
        """The API of the server ``flywheel server up`` starts here."""
        return f"{self.prefect_url}/api"

    @property
    def prefect_api_url(self) -> str:
        """What ``PREFECT_API_URL`` must be for clients of this server (``prefect.api_url`` when set)."""
        return self.prefect.api_url.rstrip("/") if self.prefect.api_url else self.local_api_url

    @property
    def mlflow_url(self) -> str:
        """The MLflow UI's base URL."""
        return f"http://{self.host}:{self.mlflow.port}"

    def mlflow_backend_uri(self) -> str:
        """The MLflow store the UI serves: the same SQLite file the flows log to, by default."""
        return self.mlflow.backend_store_uri or f"sqlite:///{flywheel_home() / 'mlflow.db'}"

    def mlflow_artifacts(self) -> str:
        """Where the MLflow server keeps artifacts logged through it."""
        return self.mlflow.artifacts_destination or str(flywheel_home() / "mlartifacts")


def load_server_config(
    path: str | Path | None = None,
    *,
    prefect_port: int | None = None,
    mlflow_port: int | None = None,
    api_url: str | None = None,
) -> ServerConfig:
    """``configs/server.yaml`` (defaults when missing), with ports or the API URL from the command line."""
    path = Path(path) if path else DEFAULT_SERVER_CONFIG
    cfg = load_config(path, ServerConfig) if path.exists() else ServerConfig()
    if prefect_port is not None:
        cfg.prefect.port = prefect_port
    if mlflow_port is not None:
        cfg.mlflow.port = mlflow_port
    if api_url is not None:
        cfg.prefect.api_url = api_url
    return cfg


def prefect_env(cfg: ServerConfig, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a Prefect client process (CLI, worker, flow runs) talking to this server.

    The project-local ``PREFECT_HOME``, no analytics, ``PREFECT_API_URL`` and an absolute
    ``FLYWHEEL_HOME``, so flow runs started by the worker share the watermarks and MLflow store.
    """
    configure_local_environment()
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(flywheel_home()),
        "PREFECT_API_URL": cfg.prefect_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------------------------------
# Background processes with pid files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """What ``flywheel server status`` shows for one service."""

    name: str
    url: str
    pid: int | None
    healthy: bool
    detail: str


# --------------------------------------------------------------------------------------------------
# The Prefect server and the MLflow UI
# --------------------------------------------------------------------------------------------------

PREFECT_SERVER = "prefect-server"
MLFLOW_SERVER = "mlflow-server"


class LocalServers:
    """The local Prefect server and MLflow UI of ``flywheel server up|down|status``."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.prefect = BackgroundProcess(PREFECT_SERVER)
        self.mlflow = BackgroundProcess(MLFLOW_SERVER)

    def prefect_health(self) -> tuple[bool, str]:
        """The Prefect API answers ``/api/health``."""
        return http_health(f"{self.cfg.local_api_url}/health")()

    def mlflow_health(self) -> tuple[bool, str]:
        """The MLflow server answers ``/health``."""
        return http_health(f"{self.cfg.mlflow_url}/health")()

    def up(self, *, mlflow: bool | None = None, timeout_s: float = 120.0) -> list[ServiceStatus]:
        """Start whatever is not already healthy, the Prefect server and (unless disabled) MLflow.

        Both start at once (each takes several seconds to import and open its database); the MLflow
        store is created while the Prefect server starts. If either fails, both are stopped.
        """
        configure_local_environment()
        started: list[tuple[BackgroundProcess, subprocess.Popen[bytes], Health]] = []
        try:
            if not self.prefect_health()[0]:
                self._check_port("prefect", self.cfg.prefect.port)
                process = self.prefect.launch(self._prefect_argv(), env=self._server_env())
                started.append((self.prefect, process, self.prefect_health))
            if (self.cfg.mlflow.enabled if mlflow is None else mlflow) and not self.mlflow_health()[0]:
                self._check_port("mlflow", self.cfg.mlflow.port)
                self._prepare_mlflow_store()
                process = self.mlflow.launch(self._mlflow_argv(), env=self._server_env())
                started.append((self.mlflow, process, self.mlflow_health))
            for service, process, health in started:
                service.wait_healthy(process, health, timeout_s)
        except BaseException:
            for service, _, _ in started:
                service.stop()
            raise
        write_env_file(self.cfg)
        return self.status()

    def down(self) -> list[str]:
        """Stop the worker (if one runs), MLflow and the Prefect server; returns what was stopped."""
        from deployments.deploy import LocalWorker

        stopped = []
        if LocalWorker(self.cfg).down():
            stopped.append(LocalWorker.NAME)
        if self.mlflow.stop():
            stopped.append(MLFLOW_SERVER)
        if self.prefect.stop():
            stopped.append(PREFECT_SERVER)
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Pid and health of each service (MLflow only when enabled or running)."""
        result = [_status(PREFECT_SERVER, self.cfg.prefect_url, self.prefect, self.prefect_health)]
        if self.cfg.mlflow.enabled or self.mlflow.pid() is not None:
            result.append(_status(MLFLOW_SERVER, self.cfg.mlflow_url, self.mlflow, self.mlflow_health))
        return result

    def _check_port(self, what: str, port: int) -> None:
        if port_in_use(self.cfg.host, port):
            raise ServiceError(
                f"{what}: port {port} on {self.cfg.host} is in use by another program; "
                f"choose another with --{what}-port or {what}.port in configs/server.yaml"
            )

    def _server_env(self) -> dict[str, str]:
        env = prefect_env(self.cfg)
        env.pop("PREFECT_API_URL", None)  # the server itself is not a client of any other server
        return env

    def _prefect_argv(self) -> list[str]:
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", self.cfg.host]
        argv += ["--port", str(self.cfg.prefect.port), "--analytics-off"]
        argv.append("--ui" if self.cfg.prefect.ui else "--no-ui")
        argv.append("--scheduler" if self.cfg.prefect.scheduler else "--no-scheduler")
        return argv

    def _mlflow_argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.cfg.mlflow_backend_uri(),
            "--artifacts-destination",
            self.cfg.mlflow_artifacts(),
            "--host",
            self.cfg.host,
            "--port",
            str(self.cfg.mlflow.port),
            "--workers",
            "1",
        ]

    def _prepare_mlflow_store(self) -> None:
        """Create a new SQLite store with ``mlflow db upgrade`` before the server opens it.

        Several processes creating one new database at once crash in the schema migrations (the
        server and a flow run, for example); once it exists, concurrent writers are fine.
        """
        uri = self.cfg.mlflow_backend_uri()
        if not uri.startswith("sqlite:///"):
            return
        db = Path(uri.removeprefix("sqlite:///"))
        if db.exists():
            return
        db.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
            env=self._server_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise ServiceError(f"mlflow db upgrade {uri} failed:\n{(result.stdout + result.stderr)[-2000:]}")


def _status(name: str, url: str, process: BackgroundProcess, health: Health) -> ServiceStatus:
    pid = process.pid()
    healthy, detail = health()
    if not healthy and pid is None:
        detail = "stopped"
    return ServiceStatus(name, url, pid, healthy, detail)


def env_file() -> Path:
    """``.flywheel/run/env.sh``: ``source`` it to point the ``prefect`` CLI at the local server."""
    return state_dir("run") / "env.sh"


def write_env_file(cfg: ServerConfig) -> Path:
    """Write the exports a shell needs to use the local server (``prefect deploy``, ``prefect deployment run``)."""
    configure_local_environment()
    exports = {
        "PREFECT_HOME": os.environ["PREFECT_HOME"],
        "PREFECT_API_URL": cfg.local_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "FLYWHEEL_HOME": str(flywheel_home()),
        "MLFLOW_TRACKING_URI": cfg.mlflow_backend_uri(),
    }
    lines = ["# written by `flywheel server up`; `source` it to use the local Prefect server and MLflow"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    path = env_file()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
