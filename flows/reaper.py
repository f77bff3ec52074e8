"""``reaper``: mark dead flow runs crashed, and stop what dead flywheel runs left on NeMo, from any machine.

Deployed as ``reaper/every-10m``. A flywheel run that fails, crashes or is cancelled cleans up after itself
(its hooks); one killed outright (SIGKILL, an evicted pod, a lost node) cannot, stays ``Running`` in Prefect,
and its fine-tunes, evaluations and NIM deployments would hold GPUs for nothing. Each pass:

1. **zombies**: a run of this project's flows that is ``Running`` but whose heartbeats stopped more than
   ``zombie_after_minutes`` ago is marked ``Crashed`` (:mod:`agent_flywheel.zombies` states the rule);
2. **what runs left behind**: NeMo lists the live jobs labelled with a flywheel run and the deployments
   agent-flywheel created (:mod:`agent_flywheel.ledger`); Prefect says which of their runs are over
   (``Completed``, ``Failed``, ``Cancelled``, ``Crashed``); a job whose every run (the one on its label and
   those that took it over) is over is cancelled, a deployment's users that are over are taken off its list
   and a deployment with no live user left is deleted. With ``max_age_hours``, anything agent-flywheel
   started that is older than that is stopped too, whoever uses it.

Nothing is taken from a run that may be alive: a run Prefect does not know, or cannot be asked about, counts
as alive. ``dry_run`` says what would be done and does nothing.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from pydantic import BaseModel

from blocks.nemo_platform import NemoPlatform
from blocks.resolve import load_block
from tasks.reaping import PROJECT_FLOWS, ReapedLine, ZombieLine, mark_zombies, reap_left_behind, table


class ReaperOutcome(BaseModel):
    """What one pass found and did."""

    zombies: list[ZombieLine]
    resources: list[ReapedLine]

    def summary(self) -> str:
        """One line: how many runs were marked and resources stopped."""
        stopped = sum(1 for line in self.resources if line.done.startswith("stopped"))
        return (
            f"reaper: {len(self.zombies)} zombie run(s) marked crashed, {stopped} job(s) or deployment(s) stopped, "
            f"{len(self.resources) - stopped} other action(s)"
        )


@flow(name="reaper", log_prints=True)
async def reaper(
    nemo_block: str = "local",
    namespaces: list[str] | None = None,
    zombie_after_minutes: float = 10.0,
    max_age_hours: float | None = None,
    flow_names: list[str] | None = None,
    dry_run: bool = False,
) -> ReaperOutcome:
    """Mark runs whose heartbeats stopped ``Crashed``, then stop the NeMo jobs and deployments of runs that are over.

    ``namespaces``: the NeMo namespaces to look in (all when empty). ``flow_names``: the flows whose runs are
    judged by their heartbeats (this project's by default).
    """
    logger = get_run_logger()
    zombies = await mark_zombies(
        tuple(flow_names or PROJECT_FLOWS), timedelta(minutes=zombie_after_minutes), dry_run=dry_run
    )
    platform = load_block(NemoPlatform, nemo_block)
    max_age = timedelta(hours=max_age_hours) if max_age_hours is not None else None
    async with platform.get_client() as nemo:
        lines = await reap_left_behind(nemo, namespaces or None, max_age, dry_run=dry_run)
    outcome = ReaperOutcome(zombies=zombies, resources=lines)
    rows = table(lines, zombies)
    if rows:
        await acreate_table_artifact(
            key="reaper", table=rows, description="Runs marked crashed and NeMo resources stopped by the reaper."
        )
    logger.info("%s", outcome.summary())
    return outcome


if __name__ == "__main__":
    import asyncio

    asyncio.run(reaper())
