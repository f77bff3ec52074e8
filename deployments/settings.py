"""What the local server, the worker and ``flywheel deploy`` share: ``configs/server.yaml``, the environment of
a Prefect client process, the status line of a background service, and the check that a Prefect server answers.

Nothing here imports Prefect, so it works whatever ``PREFECT_*`` settings the calling process already loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from agent_flywheel.config import load_config
from agent_flywheel.paths import configure_local_environment, flywheel_home, state_dir
from agent_flywheel.processes import http_health

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERVER_CONFIG = PROJECT_ROOT / "configs" / "server.yaml"


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
    def prefect_ui_url(self) -> str:
        """The UI of the server the clients use: ``prefect_api_url`` without its ``/api`` (Prefect's own rule)."""
        return self.prefect_api_url.removesuffix("/api")

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
    return _override(cfg, prefect_port=prefect_port, mlflow_port=mlflow_port, api_url=api_url)


def _override(
    cfg: ServerConfig, *, prefect_port: int | None = None, mlflow_port: int | None = None, api_url: str | None = None
) -> ServerConfig:
    """``cfg`` with the ports and API URL given (None keeps what it has)."""
    if prefect_port is not None:
        cfg.prefect.port = prefect_port
    if mlflow_port is not None:
        cfg.mlflow.port = mlflow_port
    if api_url is not None:
        cfg.prefect.api_url = api_url
    return cfg


def running_servers_file() -> Path:
    """``.flywheel/run/servers.json``: the ports ``flywheel server up`` started the servers on, until ``down``."""
    return state_dir("run") / "servers.json"


def save_running_servers(cfg: ServerConfig, *, mlflow: bool) -> Path:
    """Remember where ``flywheel server up`` started the servers, so later commands find them without flags."""
    path = running_servers_file()
    state = {"host": cfg.host, "prefect_port": cfg.prefect.port, "mlflow_port": cfg.mlflow.port if mlflow else None}
    path.write_text(json.dumps(state) + "\n", encoding="utf-8")
    return path


def forget_running_servers() -> None:
    """``flywheel server down``: the servers are gone, the ports of ``configs/server.yaml`` apply again."""
    running_servers_file().unlink(missing_ok=True)


def current_server_config(
    path: str | Path | None = None,
    *,
    prefect_port: int | None = None,
    mlflow_port: int | None = None,
    api_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """The servers every ``flywheel`` command talks to, most specific first.

    The command line (``--prefect-port``, ``--mlflow-port``, ``--api-url``), then ``PREFECT_API_URL`` when set
    (the Prefect server clients use, as ``prefect`` itself does), then the ports the running servers were
    started on (``flywheel server up --prefect-port 54200`` is followed by ``server status``, ``deploy``,
    ``worker up``... without flags), then ``configs/server.yaml``.
    """
    configure_local_environment()
    cfg = load_server_config(path)
    running = _running_servers()
    if running.get("host") == cfg.host:
        prefect, mlflow = running.get("prefect_port"), running.get("mlflow_port")
        cfg.prefect.port = prefect if isinstance(prefect, int) else cfg.prefect.port
        cfg.mlflow.port = mlflow if isinstance(mlflow, int) else cfg.mlflow.port
    env = os.environ if environ is None else environ
    return _override(
        cfg, prefect_port=prefect_port, mlflow_port=mlflow_port, api_url=api_url or env.get("PREFECT_API_URL") or None
    )


def _running_servers() -> dict[str, object]:
    try:
        data = json.loads(running_servers_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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


@dataclass(frozen=True)
class ServiceStatus:
    """What ``flywheel server status`` shows for one service."""

    name: str
    url: str
    pid: int | None
    healthy: bool
    detail: str


class DeployError(RuntimeError):
    """Deploying failed; the message says which step and why."""


def require_server(cfg: ServerConfig) -> None:
    """Fail with the command to run when no Prefect server answers (deploying to a temporary one is useless)."""
    healthy, detail = http_health(f"{cfg.prefect_api_url}/health")()
    if not healthy:
        raise DeployError(f"no Prefect server at {cfg.prefect_api_url} ({detail}); run `flywheel server up` first")
