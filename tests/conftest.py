"""Shared fixtures: every test gets its own state directory, so nothing touches the project's .flywheel/."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The local stack as fixtures (``running_stack``, ``start_stack``): the simulators' own pytest plugin.
pytest_plugins = ["simulators.pytest_plugin"]


def pytest_configure(config: pytest.Config) -> None:
    """Prefect reads its settings once per process, so its home is set before anything imports it."""
    home = Path(tempfile.mkdtemp(prefix="flywheel-tests-prefect-"))
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    # Prefect logs "Stopping temporary server" at interpreter exit, after pytest closed its streams.
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture(autouse=True)
def _isolated_flywheel_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("flywheel-home")
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    yield home
