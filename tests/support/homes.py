"""A module's own home: Prefect's home, MLflow's SQLite store and the working directory (where MLflow would put
``./mlruns``) in one temporary directory, so that nothing a test writes reaches the project or another module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def isolated_home(root: Path) -> Iterator[Path]:
    """Inside: ``PREFECT_HOME``, ``MLFLOW_TRACKING_URI`` and the working directory under ``root``; restored after."""
    from prefect.settings import PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(root / "prefect"))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.chdir(root)
    try:
        with temporary_settings(updates={PREFECT_HOME: root / "prefect", PREFECT_SERVER_ANALYTICS_ENABLED: False}):
            yield root
    finally:
        mp.undo()
