"""Links to the Prefect UI for what a flow run records elsewhere (the MLflow tag ``prefect.flow_run_url``)."""

from __future__ import annotations

from prefect.runtime import flow_run as current_run
from prefect.utilities.urls import url_for


def flow_run_ui_url() -> str | None:
    """The current flow run's page in the Prefect UI, or None outside a flow run or where there is no UI.

    Why not ``prefect.runtime.flow_run.ui_url``: without a UI URL (Prefect's temporary server, which serves
    no UI) it is the string ``None/flow-runs/...``, and its path is not the one the UI serves.
    """
    run_id = current_run.id
    return url_for("flow-run", obj_id=run_id) if run_id else None
