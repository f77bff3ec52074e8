"""Shared fixtures: every test gets its own state directory, so nothing touches the project's .flywheel/.

The product side of the local stack's fixtures lives here too: the simulators' plugin starts stacks and
knows nothing of the product, so saving the ``local`` blocks that point the flows at a stack is done by
:func:`local_stack` and :func:`start_local_stack`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.settings import LocalStackConfig

# The local stack as fixtures (``running_stack``, ``start_stack``): the simulators' own pytest plugin.
pytest_plugins = ["simulators.pytest_plugin"]


def pytest_configure(config: pytest.Config) -> None:
    """Prefect reads its settings once per process, so its home is set before anything imports it.

    Without ``PREFECT_API_URL`` the tests share one temporary Prefect server per session, started on first
    use; on a busy machine it needs far longer than Prefect's default wait to come up.
    """
    home = Path(tempfile.mkdtemp(prefix="flywheel-tests-prefect-"))
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # Prefect logs "Stopping temporary server" at interpreter exit, after pytest closed its streams.
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)
    # Run state (watermarks, cooldowns) lives on the Prefect server the tests share: each FLYWHEEL_HOME its own.
    os.environ["FLYWHEEL_STATE_PREFIX"] = "@home"


@pytest.fixture(autouse=True)
def _isolated_flywheel_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("flywheel-home")
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    yield home


SaveLocalBlocks = Callable[[LocalStackConfig], LocalStackConfig]


def _save_local_blocks(stack: LocalStackConfig) -> LocalStackConfig:
    from cli.local_blocks import register_local_blocks  # imports Prefect: only once pytest_configure ran

    register_local_blocks(stack)
    return stack


@pytest.fixture(scope="session")
def save_local_blocks() -> SaveLocalBlocks:
    """Saves the ``local`` blocks pointing at a stack in this session's Prefect server, replacing earlier
    ones (as ``flywheel blocks register`` does), and returns the stack: for tests with a stack of their own."""
    return _save_local_blocks


@pytest.fixture(scope="module")
def local_stack(running_stack: LocalStackConfig, save_local_blocks: SaveLocalBlocks) -> LocalStackConfig:
    """The plugin's ``running_stack``, with the ``local`` blocks pointing at it."""
    return save_local_blocks(running_stack)


@pytest.fixture(scope="module")
def start_local_stack(
    start_stack: Callable[..., LocalStackConfig], save_local_blocks: SaveLocalBlocks
) -> Callable[..., LocalStackConfig]:
    """The plugin's ``start_stack``; the ``local`` blocks point at the stack it started last."""

    def start(*args: Any, **kwargs: Any) -> LocalStackConfig:
        return save_local_blocks(start_stack(*args, **kwargs))

    return start
