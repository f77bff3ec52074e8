"""``flywheel cleanup``: remove what flywheel runs created on the NeMo platform, by run or by age; a dry run that
lists it unless ``--apply`` (:mod:`flows.cleanup`)."""

from __future__ import annotations

from typing import Annotated

import typer

from agent_flywheel.paths import configure_local_environment
from cli.errors import CliError
from cli.in_process import RunGuard, prefect_server, run_async


def cleanup_command(
    run: Annotated[str | None, typer.Option("--run", help="Flow run id of the flywheel run to clean up after")] = None,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="What flywheel runs created before this long ago: 7d, 12h, 30m")
    ] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Remove it (default: only list what would go)")] = False,
    namespace: Annotated[str, typer.Option(help="NeMo namespace of the flywheel's resources")] = "dfwbp",
    nemo_block: Annotated[str, typer.Option(help="NemoPlatform block name")] = "local",
    mlflow_block: Annotated[
        str, typer.Option(help="MlflowTracking block name (champions are never removed)")
    ] = "local",
) -> None:
    """List (or with --apply remove) the evaluation jobs, adapters, datasets and deployments flywheel runs left."""
    if run is None and older_than is None:
        raise CliError("say what to clean up: --run <flow run id>, --older-than <age> (e.g. 7d), or both")
    configure_local_environment()
    from agent_flywheel.nemo.cleanup import parse_age

    try:
        if older_than is not None:
            parse_age(older_than)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with prefect_server():  # the blocks live there, and the cleanup's flow run is recorded there
        from flows.cleanup import flywheel_cleanup

        guard = RunGuard()
        cleanup = guard.watch(flywheel_cleanup)
        report = guard.run(
            lambda: run_async(
                cleanup(
                    run_id=run,
                    older_than=older_than,
                    apply_changes=apply,
                    namespace=namespace,
                    nemo_block=nemo_block,
                    mlflow_block=mlflow_block,
                )
            )
        )
    for line in report.done if apply else report.planned:
        typer.echo(line)
    if not report.planned:
        typer.echo("nothing to clean up")
    typer.echo(report.summary())
