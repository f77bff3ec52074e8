"""Where local state lives: databases, logs, datasets and simulator files, all under ``.flywheel/``."""

from __future__ import annotations

import os
from pathlib import Path


def flywheel_home() -> Path:
    """The local state directory: ``$FLYWHEEL_HOME`` or ``./.flywheel``; created on first use."""
    home = Path(os.environ.get("FLYWHEEL_HOME") or Path.cwd() / ".flywheel").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def state_dir(*parts: str) -> Path:
    """A sub-directory of the state directory (``logs``, ``run``, ``datastore``...), created on first use."""
    path = flywheel_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_mlflow_uri() -> str:
    """SQLite so that the model registry and aliases work without a server."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{flywheel_home() / 'mlflow.db'}"


def configure_local_environment() -> None:
    """Project-local Prefect home and no telemetry (the offline machine logs errors and once locked the DB).

    Without ``PREFECT_API_URL`` the first block load or flow run starts Prefect's temporary server in a
    subprocess; on a busy machine that takes far longer than Prefect's default wait, hence a generous one.
    Flow runs send a heartbeat a minute, so that the ``reaper`` can tell a run killed outright from a live one.
    """
    os.environ.setdefault("PREFECT_HOME", str(flywheel_home() / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect's SQLite cannot create it
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("MLFLOW_TRACKING_URI", default_mlflow_uri())
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
