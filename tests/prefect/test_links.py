"""The Prefect UI link an MLflow run carries (``prefect.flow_run_url``): the UI's page, or none at all."""

from __future__ import annotations

from prefect import flow
from prefect.settings import PREFECT_UI_URL, temporary_settings

from tasks.links import flow_run_ui_url


@flow
def link_of_this_run() -> tuple[str | None, str]:
    from prefect.runtime import flow_run

    return flow_run_ui_url(), str(flow_run.id)


def test_the_link_is_the_ui_page_of_the_flow_run_or_nothing() -> None:
    assert flow_run_ui_url() is None  # outside a flow run
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:54200"}):
        link, run_id = link_of_this_run()
    assert link == f"http://127.0.0.1:54200/runs/flow-run/{run_id}"
    link, _ = link_of_this_run()
    assert link is None or (link.startswith("http") and "None" not in link), (
        link
    )  # never Prefect's "None/flow-runs/..."
