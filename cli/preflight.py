"""``flywheel preflight``: check, before any run, everything a flywheel run on these blocks and this config needs
(:mod:`agent_flywheel.preflight`); exit code 2 when something would stop it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from agent_flywheel.paths import configure_local_environment
from cli.in_process import prefect_server


def preflight_command(
    config: Annotated[Path, typer.Option(help="Flywheel config YAML")] = Path("configs/flywheel.yaml"),
    nemo_block: Annotated[str, typer.Option(help="NemoPlatform block name")] = "local",
    log_store_block: Annotated[str, typer.Option(help="LogStore block name")] = "local",
) -> None:
    """Check the teacher, the judge, the candidates, the customization targets, the Data Store and the log index."""
    configure_local_environment()
    from agent_flywheel.config import FlywheelConfig, load_config

    cfg = load_config(config, FlywheelConfig)  # a bad config fails here, in one line, before Prefect starts
    with prefect_server():  # the blocks live there
        from blocks.log_store import LogStore
        from blocks.nemo_platform import NemoPlatform
        from blocks.resolve import load_block
        from tasks.preflight import check

        report = asyncio.run(check(cfg, load_block(NemoPlatform, nemo_block), load_block(LogStore, log_store_block)))
    for line in report.lines():
        typer.echo(line)
    if not report.ok:
        typer.echo(f"preflight: {len(report.problems)} problem(s); a flywheel run would stop before any GPU work")
        raise typer.Exit(2)
    typer.echo(f"preflight: all {len(report.findings)} checks passed")
