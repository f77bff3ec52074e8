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
from pathlib import Path

from agent_flywheel.paths import configure_local_environment, flywheel_home, state_dir
from agent_flywheel.processes import BackgroundProcess, Health, ServiceError, free_port, http_health, port_in_use
from deployments.settings import (
    ServerConfig,
    ServiceStatus,
    forget_running_servers,
    prefect_env,
    save_running_servers,
)
from deployments.worker import LocalWorker

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
        with_mlflow = self.cfg.mlflow.enabled if mlflow is None else mlflow
        started: list[tuple[BackgroundProcess, subprocess.Popen[bytes], Health]] = []
        try:
            if not self.prefect_health()[0]:
                self._check_port("prefect", self.cfg.prefect.port)
                process = self.prefect.launch(self._prefect_argv(), env=self._server_env(ui=True))
                started.append((self.prefect, process, self.prefect_health))
            if with_mlflow and not self.mlflow_health()[0]:
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
        save_running_servers(self.cfg, mlflow=with_mlflow)
        write_env_file(self.cfg)
        return self.status()

    def down(self) -> list[str]:
        """Stop the worker (if one runs), MLflow and the Prefect server; returns what was stopped."""
        stopped = []
        if LocalWorker(self.cfg).down():
            stopped.append(LocalWorker.NAME)
        if self.mlflow.stop():
            stopped.append(MLFLOW_SERVER)
        if self.prefect.stop():
            stopped.append(PREFECT_SERVER)
        forget_running_servers()
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

    def _server_env(self, *, ui: bool = False) -> dict[str, str]:
        env = prefect_env(self.cfg)
        env.pop("PREFECT_API_URL", None)  # the server itself is not a client of any other server
        if ui:
            # The UI asks the server where its API is; without these it says port 4200, whatever `--port` was.
            env["PREFECT_SERVER_API_HOST"] = self.cfg.host
            env["PREFECT_SERVER_API_PORT"] = str(self.cfg.prefect.port)
            env["PREFECT_SERVER_UI_API_URL"] = self.cfg.local_api_url
            env["PREFECT_UI_URL"] = self.cfg.prefect_url  # the links the server itself writes
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


class TemporaryServer:
    """A Prefect server for one command, in a process group of its own; ``with`` it: the API URL, then stopped.

    Why not Prefect's own temporary server: it shares the terminal's process group, so Ctrl-C stops it
    together with the command, before the command has recorded how its flow runs ended (they would stay
    ``Running`` in ``.flywheel/prefect`` for good). The database is the same (``PREFECT_HOME``); no UI, no
    scheduler.
    """

    def __init__(self, cfg: ServerConfig, timeout_s: float | None = None) -> None:
        self.cfg = cfg
        self.port = free_port(cfg.host)
        self.process = BackgroundProcess(f"prefect-temporary-{os.getpid()}")
        default_wait = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 180
        self.timeout_s = timeout_s if timeout_s is not None else float(default_wait)

    @property
    def api_url(self) -> str:
        """The API of this server."""
        return f"http://{self.cfg.host}:{self.port}/api"

    def __enter__(self) -> str:
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", self.cfg.host, "--port", str(self.port)]
        argv += ["--analytics-off", "--no-ui", "--no-scheduler"]
        env = prefect_env(self.cfg)
        env.pop("PREFECT_API_URL", None)
        self.process.start(argv, env=env, health=http_health(f"{self.api_url}/health"), timeout_s=self.timeout_s)
        return self.api_url

    def __exit__(self, *exc_info: object) -> None:
        self.process.stop()
        self.process.log_file.unlink(missing_ok=True)  # kept only when the server did not start


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
    """Write what a shell needs to use the local servers: ``prefect`` and ``flywheel`` on ``PATH`` (this
    environment's ``bin``), pointed at the Prefect server and the MLflow store ``flywheel server up`` serves."""
    configure_local_environment()
    exports = {
        "PREFECT_HOME": os.environ["PREFECT_HOME"],
        "PREFECT_API_URL": cfg.local_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "FLYWHEEL_HOME": str(flywheel_home()),
        "MLFLOW_TRACKING_URI": cfg.mlflow_backend_uri(),
    }
    bin_dir = shlex.quote(str(Path(sys.executable).parent))  # not resolved: a venv's python links elsewhere
    lines = ["# written by `flywheel server up`; `source` it to use the local Prefect server and MLflow"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
    lines += [f'case ":$PATH:" in *:{bin_dir}:*) ;; *) export PATH={bin_dir}:"$PATH" ;; esac']
    path = env_file()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
