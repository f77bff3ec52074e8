"""The local stack as pytest fixtures: every part a real HTTP server on a free loopback port, fast clocks."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from simulators.settings import PARTS, LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port


def fast_stack_config(state_dir: Path) -> LocalStackConfig:
    """Free ports, a clock 1000x faster than real time, and a NIM that answers without simulated latency."""
    return LocalStackConfig(
        ports=Ports(**{part: free_port() for part in PARTS}),
        clock_speed=1000,
        state_dir=str(state_dir),
        nim={"latency": {"time_scale": 0}, "quality": {"lora_ceiling": 0.995, "lora_records_scale": 100}},
        agent={"tool_latency_scale": 0, "log_flush_interval_s": 0.2},
    )


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackConfig]:
    """All five parts started in threads; ``FLYWHEEL_LOCAL_CONFIG`` points the `local` blocks at them."""
    home = tmp_path_factory.mktemp("stack")
    cfg = fast_stack_config(home / "state")
    config_file = home / "local.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("FLYWHEEL_LOCAL_CONFIG", str(config_file))
    servers = []
    try:
        for part in PARTS:
            module = importlib.import_module(f"simulators.{part}.server")
            servers.append(ThreadedServer(module.create_app(cfg), cfg.host, getattr(cfg.ports, part)).start())
        yield cfg
    finally:
        for server in reversed(servers):
            server.stop()
        monkeypatch.undo()


StackFactory = Callable[..., LocalStackConfig]


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture(scope="module")
def start_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    """Start a local stack like ``running_stack`` but with settings of one's own, and a hook on each app.

    ``start(overrides={"nemo": {...}, "nim": {...}}, prepare=lambda part, app: ...)`` deep-merges the
    overrides into :func:`fast_stack_config`; ``prepare`` may add middleware (e.g. to record requests)
    before the server starts. Everything started is stopped when the module is done.
    """
    servers: list[ThreadedServer] = []
    monkeypatch = pytest.MonkeyPatch()

    def start(
        overrides: dict[str, Any] | None = None, prepare: Callable[[str, FastAPI], None] | None = None
    ) -> LocalStackConfig:
        home = tmp_path_factory.mktemp("stack")
        base = fast_stack_config(home / "state").model_dump(mode="json")
        cfg = LocalStackConfig.model_validate(_merged(base, overrides or {}))
        config_file = home / "local.yaml"
        config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        monkeypatch.setenv("FLYWHEEL_LOCAL_CONFIG", str(config_file))
        for part in PARTS:
            module = importlib.import_module(f"simulators.{part}.server")
            app = module.create_app(cfg)
            if prepare is not None:
                prepare(part, app)
            servers.append(ThreadedServer(app, cfg.host, getattr(cfg.ports, part)).start())
        return cfg

    try:
        yield start
    finally:
        for server in reversed(servers):
            server.stop()
        monkeypatch.undo()
