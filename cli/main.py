"""``flywheel``: the command line for the local stack, the demo, offline analysis and one-off runs.

Every command turns a failure into one line on stderr, never a traceback (``cli.errors``): exit code 2
when the user can fix it (bad config, a port in use, a missing file or block, a service that does not
answer), 1 when not, 130 on Ctrl-C; the traceback goes to ``.flywheel/logs/cli.log``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from agent_flywheel.paths import configure_local_environment
from cli.cleanup import cleanup_command
from cli.console import tracebacks_to_log
from cli.errors import CliError, install
from cli.in_process import RunGuard, prefect_server, run_async
from cli.operations import mount as mount_operations
from cli.otlp import otlp_app
from cli.preflight import preflight_command
from cli.rollout import rollout_app
from cli.scale_demo import scale_demo_command
from cli.scaling import profile_app, sizing_app, sweep_app
from simulators.settings import LocalStackConfig, load_local_config
from simulators.stack import LocalStack

if TYPE_CHECKING:  # Prefect is imported only once PREFECT_HOME is set (configure_local_environment)
    from flows.flywheel import FlywheelOutcome

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
app.add_typer(sizing_app, name="sizing")
app.add_typer(profile_app, name="profile")
app.add_typer(sweep_app, name="sweep")
app.add_typer(otlp_app, name="otlp")
app.add_typer(rollout_app, name="rollout")
mount_operations(app)
app.command("scale-demo")(scale_demo_command)
app.command("preflight")(preflight_command)
app.command("cleanup")(cleanup_command)

LocalConfigOption = Annotated[
    Path | None, typer.Option("--local-config", help="Local stack YAML (default: configs/local.yaml)")
]


def _local(config: Path | None) -> LocalStackConfig:
    configure_local_environment()
    return load_local_config(config)


def _register_local_blocks(cfg: LocalStackConfig) -> list[str]:
    """Save the `local` blocks pointing at the stack ``cfg`` describes (Prefect is imported here, not before)."""
    from cli.local_blocks import register_local_blocks

    return register_local_blocks(cfg)


@stack_app.command("up")
def stack_up(local_config: LocalConfigOption = None) -> None:
    """Start every simulator in the background and wait until each is healthy."""
    for part in LocalStack(_local(local_config)).up():
        typer.echo(f"{part.name:<10} {part.url:<26} {part.detail}")


@stack_app.command("down")
def stack_down(local_config: LocalConfigOption = None) -> None:
    """Stop the simulators started by `flywheel stack up`."""
    stopped = LocalStack(_local(local_config)).down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack_app.command("status")
def stack_status(local_config: LocalConfigOption = None) -> None:
    """Show each simulator's URL, process and health; exit code 1 when any part is unhealthy."""
    statuses = LocalStack(_local(local_config)).status()
    for part in statuses:
        pid = str(part.pid) if part.pid else "-"
        typer.echo(f"{part.name:<10} {part.url:<26} pid {pid:<8} {part.detail}")
    if not all(part.healthy for part in statuses):
        raise typer.Exit(1)


@blocks_app.command("register")
def blocks_register(local_config: LocalConfigOption = None) -> None:
    """Register the block types and save `local` documents pointing at the local stack."""
    cfg = _local(local_config)
    with prefect_server():
        for saved in _register_local_blocks(cfg):
            typer.echo(f"saved block {saved}")


@logs_app.command("import")
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
    from elasticsearch import ApiError, TransportError

    from agent_flywheel.logstore.index import ensure_index
    from agent_flywheel.logstore.writer import import_jsonl
    from agent_flywheel.paths import state_dir
    from agent_flywheel.records.quarantine import QuarantineWriter
    from blocks.log_store import LogStore
    from blocks.resolve import load_block

    with prefect_server():
        store = load_block(LogStore, block)
    quarantine_path = state_dir("quarantine") / f"import-{file.stem}.jsonl"
    es = store.get_client()
    try:
        ensure_index(es, store.index)
        with QuarantineWriter(quarantine_path) as quarantine:
            report = import_jsonl(
                es, store.index, file, workload_id=workload_id, client_id=client_id, quarantine=quarantine
            )
    except (ApiError, TransportError) as exc:
        raise CliError(
            f"log store (Elasticsearch at {store.public_url()}, index {store.index!r}): {store.redact(str(exc))}; "
            f"check that it is up and that the {block!r} LogStore block's URL and credentials are right"
        ) from exc
    finally:
        es.close()
    typer.echo(f"indexed {report.indexed} records into {store.index} from {report.lines} lines")
    quarantined = sum(report.quarantined.values())
    typer.echo(f"quarantined {quarantined}" + (f" (written to {quarantine_path})" if quarantined else ""))
    for reason, count in sorted(report.quarantined.items()):
        typer.echo(f"  {reason}: {count}")


@logs_app.command("create-index")
def logs_create_index(
    index: Annotated[str | None, typer.Option(help="Index to create (default: the LogStore block's)")] = None,
    block: Annotated[str, typer.Option(help="LogStore block name")] = "local",
) -> None:
    """Create the log index with the flywheel's mapping (before any producer writes to it); check an existing one."""
    configure_local_environment()
    from agent_flywheel.logstore.index import ensure_index
    from agent_flywheel.logstore.shape import inspect_index
    from blocks.log_store import LogStore
    from blocks.resolve import load_block

    store = load_block(LogStore, block)
    name = index or store.index
    es = store.get_client()
    try:
        created = ensure_index(es, name)
        shape = inspect_index(es, name)
    finally:
        es.close()
    typer.echo(f"created {name} with the flywheel's mapping" if created else f"{name} exists; {shape.describe()}")
    for line in (*shape.notes, *shape.warnings):
        typer.echo(f"  {line}")


@app.command("traffic")
def traffic(
    requests: Annotated[int, typer.Option(min=1, help="How many user turns to send")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, help="Users at once")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic users")] = 7,
    local_config: LocalConfigOption = None,
) -> None:
    """Drive the demo agent with varied synthetic users; every LLM call is logged to the log store."""
    cfg = _local(local_config)
    from simulators.agent.traffic import run_traffic

    report = run_traffic(cfg.url("agent"), requests=requests, concurrency=concurrency, seed=seed)
    typer.echo(json.dumps(report.to_dict(), default=str))
    if report.ok == 0:
        errors = ", ".join(f"{kind}: {count}" for kind, count in sorted(report.errors.items()))
        raise CliError(
            f"the agent at {cfg.url('agent')} answered none of {report.failed} requests ({errors}); "
            "is the local stack up (`flywheel stack status`)?"
        )


DEFAULT_FLYWHEEL_CONFIG = Path("configs/flywheel.yaml")


def _run_flywheel(
    workload_id: str,
    client_id: str,
    config: Path,
    nemo_block: str = "local",
    log_store_block: str = "local",
    mlflow_block: str = "local",
    full_rebuild: bool = False,
) -> FlywheelOutcome:
    from agent_flywheel.config import FlywheelConfig, load_config

    cfg = load_config(config, FlywheelConfig)  # a bad config fails here, in one line, before Prefect starts
    from blocks.log_store import LogStore
    from blocks.mlflow_tracking import MlflowTracking
    from blocks.nemo_platform import NemoPlatform
    from blocks.resolve import load_block
    from flows.flywheel import FlywheelRunError, flywheel

    for block_type, name in ((NemoPlatform, nemo_block), (LogStore, log_store_block), (MlflowTracking, mlflow_block)):
        load_block(block_type, name)  # so does a missing block, before the flow run starts
    tracebacks_to_log()
    guard = RunGuard()
    run_flywheel = guard.watch(flywheel)
    try:
        return guard.run(
            lambda: run_async(
                run_flywheel(
                    workload_id=workload_id,
                    client_id=client_id,
                    config_path=str(config),
                    config=cfg,
                    nemo_block=nemo_block,
                    log_store_block=log_store_block,
                    mlflow_block=mlflow_block,
                    full_rebuild=full_rebuild,
                )
            )
        )
    except FlywheelRunError as exc:  # its message names the failed steps, services, job ids and what to do
        raise CliError(str(exc)) from None


def _print_decision(result: FlywheelOutcome) -> None:
    typer.echo(result.markdown)
    if result.mlflow_url:  # no run for an outcome decided before tracking (no new data, workload busy)
        typer.echo(f"MLflow run: {result.mlflow_url}")
    typer.echo(f"decision: {result.outcome}: {result.reason}")


@app.command("run")
def run(
    workload_id: Annotated[str, typer.Option(help="The workload whose traffic to learn from")],
    client_id: Annotated[str, typer.Option(help="The client that logged it")],
    config: Annotated[Path, typer.Option(help="Flywheel config YAML")] = DEFAULT_FLYWHEEL_CONFIG,
    nemo_block: Annotated[str, typer.Option(help="NemoPlatform block name")] = "local",
    log_store_block: Annotated[str, typer.Option(help="LogStore block name")] = "local",
    mlflow_block: Annotated[str, typer.Option(help="MlflowTracking block name")] = "local",
    full_rebuild: Annotated[bool, typer.Option(help="Ignore the watermark and read every record")] = False,
) -> None:
    """Run the flywheel once, in process, against the configured blocks, and print the decision."""
    configure_local_environment()
    with prefect_server():
        _print_decision(
            _run_flywheel(workload_id, client_id, config, nemo_block, log_store_block, mlflow_block, full_rebuild)
        )


@app.command("demo")
def demo(
    requests: Annotated[int, typer.Option(min=1, help="Demo user turns to send before the flywheel runs")] = 1000,
    config: Annotated[Path, typer.Option(help="Flywheel config YAML")] = DEFAULT_FLYWHEEL_CONFIG,
    scaling: Annotated[bool, typer.Option(help="Also profile, sweep, size and rollout-check the agent")] = True,
    local_config: LocalConfigOption = None,
) -> None:
    """Start the local stack, send demo traffic, run the flywheel and the scaling lifecycle, stop the stack."""
    cfg = _local(local_config)
    stack = LocalStack(cfg)
    started = not all(part.healthy for part in stack.status())
    if started:
        typer.echo("starting the local stack (simulators)...")
        stack.up()
    try:
        with prefect_server():
            saved = _register_local_blocks(cfg)
            typer.echo(f"saved the blocks pointing at the local stack: {', '.join(saved)}")
            from simulators.agent.traffic import run_traffic

            typer.echo(f"sending {requests} demo user turns to the agent at {cfg.url('agent')}...")
            report = run_traffic(cfg.url("agent"), requests=requests, concurrency=8, seed=7)
            typer.echo(f"traffic: {report.ok} ok, {report.failed} failed, {report.llm_calls} LLM calls logged")
            flushed = httpx.post(f"{cfg.url('agent')}/admin/flush", timeout=60)
            if flushed.status_code != 200:
                raise CliError(f"the agent could not flush its logs to the log server: {flushed.text[:200]}")
            workload = str(cfg.agent.get("workload_id", "customer-support"))
            client = str(cfg.agent.get("client_id", "demo"))
            typer.echo(f"running the flywheel for {workload}/{client}...")
            _print_decision(_run_flywheel(workload, client, config, full_rebuild=True))
            if scaling:
                from cli.scaling_demo import scaling_demo

                typer.echo("running the scaling lifecycle: profile, load sweep, sizing, rollout check...")
                for line in scaling_demo(str(local_config) if local_config else None, echo=typer.echo).summary:
                    typer.echo(line)
    finally:
        if started:
            stack.down()
            typer.echo("local stack stopped")


install(app)  # every command above, and those of the apps added to it: one line per failure, never a traceback


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
