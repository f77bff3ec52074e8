"""Settings of the local stack (the simulators): host, ports, clock speed and each part's own section.

Each part validates its own section (``nemo``, ``datastore``, ``nim``, ``logserver``, ``agent``) with
its own model, so the parts stay independent; this module only knows where they listen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_flywheel.config import load_config
from agent_flywheel.paths import flywheel_home

PARTS = ("logserver", "datastore", "nim", "nemo", "agent")


class Ports(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Clear of Prefect (4200), MLflow (5000), Elasticsearch (9200) and NeMo's 8000/7331/3000.
    logserver: int = 19200
    datastore: int = 18001
    nim: int = 18002
    nemo: int = 18000
    agent: int = 18003


class LocalStackConfig(BaseModel):
    """``configs/local.yaml``: where each simulator listens and how it behaves."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    ports: Ports = Field(default_factory=Ports)
    clock_speed: float = Field(default=1.0, gt=0, description="Simulated seconds per real second for job clocks")
    state_dir: str | None = Field(default=None, description="Default: <flywheel home>/stack")
    nemo: dict[str, Any] = Field(default_factory=dict)
    datastore: dict[str, Any] = Field(default_factory=dict)
    nim: dict[str, Any] = Field(default_factory=dict)
    logserver: dict[str, Any] = Field(default_factory=dict)
    agent: dict[str, Any] = Field(default_factory=dict)

    def url(self, part: str) -> str:
        """Base URL of a part, e.g. ``http://127.0.0.1:18002``."""
        return f"http://{self.host}:{getattr(self.ports, part)}"

    def state_path(self) -> Path:
        path = Path(self.state_dir) if self.state_dir else flywheel_home() / "stack"
        path.mkdir(parents=True, exist_ok=True)
        return path


DEFAULT_LOCAL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "local.yaml"


def load_local_config(path: str | Path | None = None) -> LocalStackConfig:
    """Load the given file, else ``$FLYWHEEL_LOCAL_CONFIG``, else ``configs/local.yaml``; defaults when absent."""
    path = Path(path or os.environ.get("FLYWHEEL_LOCAL_CONFIG") or DEFAULT_LOCAL_CONFIG)
    if not path.exists():
        return LocalStackConfig()
    return load_config(path, LocalStackConfig)
