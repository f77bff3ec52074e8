"""``flywheel scale-demo``: prints the sizing report and the summary; a bad config is one line and exit code 2."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import cli.scaling_demo
from agent_flywheel.config import ConfigError
from cli.scale_demo import scale_demo_command


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("scale-demo")(scale_demo_command)
    app.command("other")(lambda: None)  # two commands, so typer keeps the sub-command name
    return app


def test_prints_the_report_and_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(local: str | None, config: str | None, echo: Any = None) -> SimpleNamespace:
        seen.update(local=local, config=config)
        return SimpleNamespace(
            scaling=SimpleNamespace(markdown="# Sizing\n"), summary=["scaling demo (1 s, simulated):", "  sizing: ok"]
        )

    monkeypatch.setattr(cli.scaling_demo, "scaling_demo", fake)
    result = CliRunner().invoke(_app(), ["scale-demo", "--local-config", "x.yaml"])
    assert result.exit_code == 0
    assert "# Sizing" in result.output and "  sizing: ok" in result.output
    assert seen == {"local": "x.yaml", "config": None}


def test_a_bad_config_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any, **__: Any) -> SimpleNamespace:
        raise ConfigError("configs/scaling-demo.yaml: sizing.target_users: must be >= 1")

    monkeypatch.setattr(cli.scaling_demo, "scaling_demo", fail)
    result = CliRunner().invoke(_app(), ["scale-demo"])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: configs/scaling-demo.yaml: sizing.target_users: must be >= 1 (traceback in ")


def test_the_demo_config_sizes_200_users_under_2_s() -> None:
    from agent_flywheel.config import ScalingConfig, load_config

    cfg = load_config(cli.scaling_demo.DEMO_CONFIG, ScalingConfig)
    assert (cfg.sizing.target_users, cfg.sizing.target_workflow_p95_s) == (200, 2.0)
    assert cfg.load_sweep.concurrencies == [1, 2, 4, 8, 16, 24] and cfg.load_sweep.num_passes == 2
    assert sum(s.duration_s for s in cfg.rollout.stages) <= 60
