"""``flywheel server|deploy|worker``: run the flows the way users do, on a local Prefect server.

``flywheel server up`` starts a Prefect server and the MLflow UI on loopback, ``flywheel deploy
--worker`` registers blocks, work pool, concurrency limits and every deployment in ``prefect.yaml``
and starts a worker; then ``prefect deployment run 'flywheel/nightly'`` works, schedules fire and the
traffic watch triggers flywheel runs. Mounted on the main CLI with :func:`mount`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import CliError, install
from deployments.settings import ServerConfig, ServiceStatus, current_server_config

if TYPE_CHECKING:
    from deployments.kubernetes import KubernetesTarget

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
    image: Annotated[
        str | None,
        typer.Option(
            help="Production: the flows' image (./Dockerfile) on every deployment, with its resources, for the "
            "Kubernetes work pool --pool (prefect.yaml definitions.kubernetes)"
        ),
    ] = None,
    block_name: Annotated[
        str | None, typer.Option(help="With --image: the blocks the deployments use (default: prod)")
    ] = None,
    build: Annotated[
        bool,
        typer.Option("--build", help="With --image: build ./Dockerfile as that image and push it (prefect-docker)"),
    ] = False,
    code_dir: Annotated[
        str | None,
        typer.Option(help="Where the code lives on the workers; default: here, or with --image the image's directory"),
    ] = None,
    prefect_file: Annotated[Path | None, typer.Option(help="Default: prefect.yaml in the project root")] = None,
    blocks: Annotated[
        bool | None,
        typer.Option(
            "--blocks/--no-blocks", help="Register blocks pointing at the local stack (default: not with --image)"
        ),
    ] = None,
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
    """Register blocks, work pool, concurrency limits and every deployment in prefect.yaml (and a worker).

    With --pool and --image, the deployments are production ones for a Kubernetes work pool (docs/operations.md,
    "Production on Kubernetes").
    """
    target = _kubernetes_target(
        pool=pool, image=image, block_name=block_name, build=build, blocks=blocks, worker=worker
    )
    cfg = _config(server_config, api_url=api_url)
    from cli.local_blocks import local_blocks
    from deployments.deploy import DEFAULT_PREFECT_FILE, deploy
    from simulators.settings import load_local_config

    file = prefect_file or DEFAULT_PREFECT_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    register_local_blocks = target is None if blocks is None else blocks
    report = deploy(
        cfg,
        blocks=local_blocks(load_local_config(local_config), mlflow_ui_url=cfg.mlflow_url)
        if register_local_blocks
        else (),
        prefect_file=file.resolve(),
        pool=pool,
        code_dir=code_dir,
        kubernetes=target,
        start_worker=worker,
        reset_schedules=reset_schedules,
    )
    for block in report.blocks:
        typer.echo(f"block        {block}")
    typer.echo(f"work pool    {report.work_pool}")
    if target is not None:
        typer.echo(f"image        {target.image}" + (" (built and pushed by prefect deploy)" if target.build else ""))
        typer.echo(f"blocks       every *_block parameter: {target.block_name}")
    for limit in report.concurrency_limits:
        typer.echo(f"concurrency  {limit}")
    for name in report.deployments:
        typer.echo(f"deployment   {name}")
    for name in report.paused_automations:
        typer.echo(f"automation   {name}: kept paused (resume it in the UI or with `prefect automation resume {name}`)")
    if report.worker is not None:
        _show([report.worker])
    typer.echo(f"try: prefect deployment run 'flywheel/nightly'   (UI: {cfg.prefect_ui_url})")


def _kubernetes_target(
    *, pool: str | None, image: str | None, block_name: str | None, build: bool, blocks: bool | None, worker: bool
) -> KubernetesTarget | None:
    """The production target the flags ask for, or None for the local pool; flags that do not go together are an
    error before anything is deployed."""
    from deployments.kubernetes import PRODUCTION_BLOCK_NAME, KubernetesTarget

    if image is None:
        for flag, given in (("--block-name", block_name is not None), ("--build", build)):
            if given:
                raise CliError(f"{flag} goes with --image (a production deployment)")
        return None
    if pool is None:
        raise CliError("--image needs --pool: the Kubernetes work pool the deployments run on")
    if blocks:
        raise CliError("--blocks saves blocks pointing at the local stack; not with --image")
    if worker:
        raise CliError("--worker starts a local process worker; a Kubernetes pool has its own")
    return KubernetesTarget(image=image, block_name=block_name or PRODUCTION_BLOCK_NAME, build=build)


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
