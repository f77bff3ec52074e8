"""``flywheel-cleanup``: remove what flywheel runs created on the NeMo platform, by run or by age.

Evaluation jobs, customized models (adapters), datasets (Entity Store registrations and Data Store repos) and
deployments (:mod:`agent_flywheel.nemo.cleanup` says how each is found and when one is kept). A dry run by
default: the result lists what would go; ``apply=True`` removes it. The ``champion``'s adapter is never removed,
nor anything a live run uses. The equivalent of the blueprint's ``DELETE /api/jobs/{id}`` is
``flywheel cleanup --run <flow run id> --apply``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel

from agent_flywheel.nemo.cleanup import parse_age
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform
from blocks.resolve import load_block
from tasks.cleanup import apply, champion_models, plan


class CleanupReport(BaseModel):
    """What the cleanup found (one line each) and, when applied, what it did."""

    applied: bool
    planned: list[str]
    done: list[str] = []

    def summary(self) -> str:
        """One line: how much was found and done."""
        removable = [line for line in self.planned if not line.startswith("keep")]
        if not self.applied:
            return f"dry run: {len(removable)} to remove, {len(self.planned) - len(removable)} kept; apply to remove"
        failed = [line for line in self.done if line.startswith("could not")]
        return (
            f"removed {len(removable) - len(failed)}, kept {len(self.planned) - len(removable)}, failed {len(failed)}"
        )


@flow(name="flywheel-cleanup", log_prints=True)
async def flywheel_cleanup(
    run_id: str | None = None,
    older_than: str | None = None,
    apply_changes: bool = False,
    namespace: str = "dfwbp",
    nemo_block: str = "local",
    mlflow_block: str = "local",
) -> CleanupReport:
    """Remove what the flywheel run ``run_id`` created, or what flywheel runs created more than ``older_than``
    ago (``7d``, ``12h``), or both; only lists it unless ``apply_changes``."""
    age = parse_age(older_than) if older_than else None
    platform = load_block(NemoPlatform, nemo_block)
    protected = champion_models(load_block(MlflowTracking, mlflow_block).get_tracker())
    async with platform.get_client() as nemo:
        items = await plan(nemo, namespace, run_id, age, protected)
        done = await apply(nemo, items, str(current_run.id) if current_run.id else None) if apply_changes else []
    report = CleanupReport(applied=apply_changes, planned=[item.line() for item in items], done=done)
    get_run_logger().info("flywheel-cleanup: %s", report.summary())
    return report
