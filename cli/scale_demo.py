"""``flywheel scale-demo``: the scaling lifecycle on the local stack, in demo-sized time.

Mounted on the main app with ``app.command("scale-demo")(scale_demo_command)``. The flows are imported
only when the command runs, so the functional core keeps no import of Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import one_line_errors


@one_line_errors  # also where the function is mounted on an app of its own
def scale_demo_command(
    local_config: Annotated[
        Path | None, typer.Option("--local-config", help="Local stack YAML (default: configs/local.yaml)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Scaling config YAML (default: configs/scaling-demo.yaml)")
    ] = None,
) -> None:
    """Profile the demo agent, sweep it, size it for 200 users under a 2 s p95, check a canary rollout."""
    from agent_flywheel.paths import configure_local_environment
    from cli.in_process import prefect_server
    from cli.scaling_demo import scaling_demo

    configure_local_environment()
    with prefect_server():
        result = scaling_demo(
            str(local_config) if local_config else None, str(config) if config else None, echo=typer.echo
        )
    typer.echo(result.scaling.markdown)
    for line in result.summary:
        typer.echo(line)
