"""``flywheel server|deploy|worker``: run the flows the way users do, on a local Prefect server.

``flywheel server up`` starts a Prefect server and the MLflow UI on loopback, ``flywheel deploy
--worker`` registers blocks, work pool, concurrency limits and every deployment in ``prefect.yaml``
and starts a worker; then ``prefect deployment run 'flywheel/nightly'`` works, schedules fire and the
traffic watch triggers flywheel runs. Mounted on the main CLI with :func:`mount`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from cli.errors import install
from deployments.settings import ServerConfig, ServiceStatus, current_server_config

server_app = typer.Typer(help="The local Prefect server and MLflow UI (background processes on loopback).")
worker_app = typer.Typer(help="The local process worker that runs deployed flows.")

ServerConfigOption = Annotated[
    Path | None, typer.Option("--server-config", help="Server YAML (default: configs/server.yaml)")
]
PrefectPortOption = Annotated[
    int | None, typer.Option("--prefect-port", help="Prefect server port (default: prefect.port in the server YAML)")
]
MlflowPortOption = Annotated[
    int | None, typer.Option("--mlflow-port", help="MLflow UI port (default: mlflow.port in the server YAML)")
]


def _config(
    path: Path | None, prefect_port: int | None = None, mlflow_port: int | None = None, api_url: str | None = None
) -> ServerConfig:
    """The flags, else ``PREFECT_API_URL``, else the ports ``server up`` used, else the server YAML."""
    return current_server_config(path, prefect_port=prefect_port, mlflow_port=mlflow_port, api_url=api_url)


def _show(statuses: Sequence[ServiceStatus]) -> None:
    for status in statuses:
        pid = str(status.pid) if status.pid else "-"
        typer.echo(f"{status.name:<15} {status.url:<24} pid {pid:<8} {status.detail}")


@server_app.command("up")
def server_up(
    server_config: ServerConfigOption = None,
    prefect_port: PrefectPortOption = None,
    mlflow_port: MlflowPortOption = None,
    mlflow: Annotated[
        bool | None, typer.Option("--mlflow/--no-mlflow", help="Start the MLflow UI (default: mlflow.enabled)")
    ] = None,
) -> None:
    """Start the Prefect server (API + UI) and the MLflow UI in the background and wait until healthy."""
    from deployments.server import LocalServers, env_file

    cfg = _config(server_config, prefect_port, mlflow_port)
    with_mlflow = cfg.mlflow.enabled if mlflow is None else mlflow
    _show(LocalServers(cfg).up(mlflow=with_mlflow))
    if with_mlflow:
        _point_mlflow_links(cfg)
    typer.echo(f"Prefect UI: {cfg.prefect_url}" + (f"   MLflow UI: {cfg.mlflow_url}" if with_mlflow else ""))
    typer.echo(f"to use it from a shell: source {env_file()}")


def _point_mlflow_links(cfg: ServerConfig) -> None:
    """The saved ``local`` MLflow block links to this MLflow UI (its port may have changed)."""
    from blocks.resolve import LOCAL
    from deployments.blocks import point_mlflow_links
    from deployments.deploy import prefect_api

    with prefect_api(cfg, cfg.local_api_url):
        if point_mlflow_links(LOCAL, cfg.mlflow_url):
            typer.echo(f"block        mlflow-tracking/{LOCAL}: links to {cfg.mlflow_url}")


@server_app.command("down")
def server_down(server_config: ServerConfigOption = None) -> None:
    """Stop the worker (if any), the MLflow UI and the Prefect server started by `flywheel server up`."""
    from deployments.server import LocalServers

    stopped = LocalServers(_config(server_config)).down()
    typer.echo(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@server_app.command("status")
def server_status(server_config: ServerConfigOption = None) -> None:
    """Show each service's URL, process and health; exit code 1 when the Prefect server is not healthy."""
    from deployments.server import LocalServers
    from deployments.worker import LocalWorker

    cfg = _config(server_config)
    statuses = LocalServers(cfg).status()
    worker = LocalWorker(cfg).status()
    _show([*statuses, worker])
    if not statuses[0].healthy:
        raise typer.Exit(1)


@worker_app.command("up")
def worker_up(server_config: ServerConfigOption = None) -> None:
    """Start a process worker for the local pool in the background (logs in .flywheel/logs/)."""
    from deployments.worker import LocalWorker

    _show([LocalWorker(_config(server_config)).up()])


@worker_app.command("down")
def worker_down(server_config: ServerConfigOption = None) -> None:
    """Stop the worker (SIGINT; flow runs it already started finish on their own)."""
    from deployments.worker import LocalWorker

    stopped = LocalWorker(_config(server_config)).down()
    typer.echo("stopped: prefect-worker" if stopped else "stopped: nothing was running")


@worker_app.command("status")
def worker_status(server_config: ServerConfigOption = None) -> None:
    """Show the worker's process and whether the server sees it online; exit code 1 when not."""
    from deployments.worker import LocalWorker

    status = LocalWorker(_config(server_config)).status()
    _show([status])
    if not status.healthy:
        raise typer.Exit(1)


def deploy_command(
    worker: Annotated[bool, typer.Option("--worker", help="Also start a local worker in the background")] = False,
    pool: Annotated[
        str | None, typer.Option(help="Deploy to this existing work pool instead (e.g. a Kubernetes pool)")
    ] = None,
    code_dir: Annotated[
        str | None, typer.Option(help="Where the code lives on the workers (e.g. in the image); default: here")
    ] = None,
    prefect_file: Annotated[Path | None, typer.Option(help="Default: prefect.yaml in the project root")] = None,
    blocks: Annotated[
        bool, typer.Option("--blocks/--no-blocks", help="Register blocks pointing at the local stack")
    ] = True,
    reset_schedules: Annotated[
        bool, typer.Option(help="Put prefect.yaml's schedules back (default: keep what was changed in the UI)")
    ] = False,
    api_url: Annotated[
        str | None, typer.Option(help="Deploy to this Prefect API (e.g. https://prefect.internal/api); default: local")
    ] = None,
    server_config: ServerConfigOption = None,
    local_config: Annotated[
        Path | None,
        typer.Option("--local-config", help="Local stack YAML for the blocks (default: configs/local.yaml)"),
    ] = None,
) -> None:
    """Register blocks, work pool, concurrency limits and every deployment in prefect.yaml (and a worker)."""
    cfg = _config(server_config, api_url=api_url)
    from cli.local_blocks import local_blocks
    from deployments.deploy import DEFAULT_PREFECT_FILE, deploy
    from simulators.settings import load_local_config

    file = prefect_file or DEFAULT_PREFECT_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    report = deploy(
        cfg,
        blocks=local_blocks(load_local_config(local_config), mlflow_ui_url=cfg.mlflow_url) if blocks else (),
        prefect_file=file.resolve(),
        pool=pool,
        code_dir=code_dir,
        start_worker=worker,
        reset_schedules=reset_schedules,
    )
    for block in report.blocks:
        typer.echo(f"block        {block}")
    typer.echo(f"work pool    {report.work_pool}")
    for limit in report.concurrency_limits:
        typer.echo(f"concurrency  {limit}")
    for name in report.deployments:
        typer.echo(f"deployment   {name}")
    for name in report.paused_automations:
        typer.echo(f"automation   {name}: kept paused (resume it in the UI or with `prefect automation resume {name}`)")
    if report.worker is not None:
        _show([report.worker])
    typer.echo(f"try: prefect deployment run 'flywheel/nightly'   (UI: {cfg.prefect_ui_url})")


def mount(app: typer.Typer) -> None:
    """Add ``server``, ``worker`` and ``deploy`` to the main ``flywheel`` CLI."""
    app.add_typer(server_app, name="server")
    app.add_typer(worker_app, name="worker")
    app.command("deploy")(deploy_command)


operations_app = typer.Typer(
    help="Local operations: Prefect server, MLflow UI, deployments, worker.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
mount(operations_app)
install(operations_app)

if __name__ == "__main__":
    operations_app()
