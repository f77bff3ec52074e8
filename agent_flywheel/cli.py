"""``flywheel``: the command line for the local stack, the demo, offline analysis and one-off runs.

Every command turns a known failure (bad config, a port in use, a missing file) into one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer

from agent_flywheel.config import ConfigError
from agent_flywheel.local.settings import LocalStackConfig, load_local_config
from agent_flywheel.local.stack import LocalStack, StackError
from agent_flywheel.paths import configure_local_environment

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="flywheel",
    help="agent-flywheel: the data flywheel and the scaling lifecycle on Prefect, MLflow and NeMo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
stack_app = typer.Typer(help="The local stack of simulators (NeMo, Data Store, NIM, Elasticsearch, demo agent).")
blocks_app = typer.Typer(help="Prefect blocks: where the services live, with their secrets.")
logs_app = typer.Typer(help="The log store of agent traffic.")
app.add_typer(stack_app, name="stack")
app.add_typer(blocks_app, name="blocks")
app.add_typer(logs_app, name="logs")

LocalConfigOption = Annotated[
    Path | None, typer.Option("--local-config", help="Local stack YAML (default: configs/local.yaml)")
]


class CliError(Exception):
    """A failure the user can fix; printed as one line."""


def one_line_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can fix into ``error: ...`` on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (CliError, ConfigError, StackError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _local(config: Path | None) -> LocalStackConfig:
    configure_local_environment()
    return load_local_config(config)


@stack_app.command("up")
@one_line_errors
def stack_up(local_config: LocalConfigOption = None) -> None:
    """Start every simulator in the background and wait until each is healthy."""
    for part in LocalStack(_local(local_config)).up():
        typer.echo(f"{part.name:<10} {part.url:<26} {part.detail}")


@stack_app.command("down")
@one_line_errors
def stack_down(local_config: LocalConfigOption = None) -> None:
    """Stop the simulators started by `flywheel stack up`."""
    stopped = LocalStack(_local(local_config)).down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack_app.command("status")
@one_line_errors
def stack_status(local_config: LocalConfigOption = None) -> None:
    """Show each simulator's URL, process and health; exit code 1 when any part is unhealthy."""
    statuses = LocalStack(_local(local_config)).status()
    for part in statuses:
        pid = str(part.pid) if part.pid else "-"
        typer.echo(f"{part.name:<10} {part.url:<26} pid {pid:<8} {part.detail}")
    if not all(part.healthy for part in statuses):
        raise typer.Exit(1)


@blocks_app.command("register")
@one_line_errors
def blocks_register(local_config: LocalConfigOption = None) -> None:
    """Register the block types and save `local` documents pointing at the local stack."""
    cfg = _local(local_config)
    from deployments.blocks import register_blocks

    for saved in register_blocks(cfg):
        typer.echo(f"saved block {saved}")


@logs_app.command("import")
@one_line_errors
def logs_import(
    file: Annotated[Path, typer.Argument(help="JSONL file of log records (the blueprint's format)")],
    workload_id: Annotated[str | None, typer.Option(help="Override every record's workload_id")] = None,
    client_id: Annotated[str | None, typer.Option(help="Override every record's client_id")] = None,
    block: Annotated[str, typer.Option(help="LogStore block name")] = "local",
) -> None:
    """Bulk-load log records into the log store; bad lines are counted and quarantined, never dropped."""
    configure_local_environment()
    if not file.is_file():
        raise CliError(f"{file}: no such file")
    from agent_flywheel.logstore import ensure_index, import_jsonl
    from agent_flywheel.paths import state_dir
    from agent_flywheel.records import QuarantineWriter
    from blocks.log_store import LogStore
    from blocks.resolve import load_block

    store = load_block(LogStore, block)
    quarantine_path = state_dir("quarantine") / f"import-{file.stem}.jsonl"
    es = store.client()
    try:
        ensure_index(es, store.index)
        with QuarantineWriter(quarantine_path) as quarantine:
            report = import_jsonl(
                es, store.index, file, workload_id=workload_id, client_id=client_id, quarantine=quarantine
            )
    finally:
        es.close()
    typer.echo(f"indexed {report.indexed} records into {store.index} from {report.lines} lines")
    quarantined = sum(report.quarantined.values())
    typer.echo(f"quarantined {quarantined}" + (f" (written to {quarantine_path})" if quarantined else ""))
    for reason, count in sorted(report.quarantined.items()):
        typer.echo(f"  {reason}: {count}")


@app.command("traffic")
@one_line_errors
def traffic(
    requests: Annotated[int, typer.Option(min=1, help="How many user turns to send")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Users at once")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic users")] = 7,
    local_config: LocalConfigOption = None,
) -> None:
    """Drive the demo agent with varied synthetic users; every LLM call is logged to the log store."""
    cfg = _local(local_config)
    from agent_flywheel.local.agent.traffic import run_traffic

    report = run_traffic(cfg.url("agent"), requests=requests, concurrency=concurrency, seed=seed)
    typer.echo(json.dumps(report.to_dict() if hasattr(report, "to_dict") else report.__dict__, default=str))


def main() -> None:
    """Console-script entry point."""
    app()


def _mount_optional_apps() -> None:
    try:
        from agent_flywheel.cli_scaling import profile_app, sizing_app
    except ImportError:  # the scaling CLI is optional while it is being built
        return
    app.add_typer(sizing_app, name="sizing")
    app.add_typer(profile_app, name="profile")


_mount_optional_apps()
