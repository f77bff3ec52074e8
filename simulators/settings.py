"""Settings of the local stack (the simulators): host, ports, clock speed and each part's own section.

Each part validates its own section (``nemo``, ``datastore``, ``nim``, ``logserver``, ``agent``) with
its own model, so the parts stay independent; this module only knows where they listen, where their
state lives, and how a bad settings file is reported (:class:`SettingsError`, one line per problem).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PARTS = ("logserver", "datastore", "nim", "nemo", "agent")

SettingsT = TypeVar("SettingsT", bound=BaseModel)


class SettingsError(ValueError):
    """A settings file or section cannot be read or does not validate; the message names source, key and problem."""


def _problems(source: str, error: ValidationError) -> str:
    """``<source>: <dotted.key>: <message> (got <value>)``, one line per problem."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        value = problem.get("input")
        shown = "" if problem["type"] == "missing" or isinstance(value, dict | list) else f" (got {value!r})"
        lines.append(f"{source}: {key}: {problem['msg']}{shown}")
    return "\n".join(lines)


def parse_settings(data: Any, model: type[SettingsT], source: str) -> SettingsT:
    """Validate loaded data (``None`` is an empty section) into ``model``; raise SettingsError naming the key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: expected a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_problems(source, exc)) from None


def read_settings_file(path: Path, model: type[SettingsT]) -> SettingsT:
    """A YAML settings file validated into ``model``; unreadable files and bad YAML are SettingsErrors too."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise SettingsError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    return parse_settings(data, model, str(path))


def flywheel_home() -> Path:
    """The local state directory the product uses too: ``$FLYWHEEL_HOME``, else ``./.flywheel``; created on first use."""
    home = Path(os.environ.get("FLYWHEEL_HOME") or Path.cwd() / ".flywheel").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def home_dir(*parts: str) -> Path:
    """A directory under the state directory (``run``, ``logs``, ...), created on first use."""
    path = flywheel_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    return read_settings_file(path, LocalStackConfig)
