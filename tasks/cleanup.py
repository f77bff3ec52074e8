"""Tasks of ``flywheel cleanup``: find what flywheel runs left on the NeMo platform and remove it
(:mod:`agent_flywheel.nemo.cleanup`), never the adapter the ``champion`` serves."""

from __future__ import annotations

from datetime import timedelta

from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.nemo.cleanup import CleanupItem, CleanupScope, apply_cleanup, plan_cleanup
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.tracking import Tracker
from tasks.ownership import deployment_users_lock, flow_run_is_over


def champion_models(mlflow: Tracker) -> set[str]:
    """The models the ``champion`` of every registered model serves (its version's ``served_model`` tag)."""
    served: set[str] = set()
    try:
        registered = mlflow.client.search_registered_models()
    except MlflowException:
        return served
    for model in registered:
        champion = mlflow.champion(model.name)
        if champion is not None and champion[1].get("served_model"):
            served.add(champion[1]["served_model"])
    return served


@task(name="plan-cleanup", cache_policy=NO_CACHE)
async def plan(
    nemo: NemoClient, namespace: str, run_id: str | None, older_than: timedelta | None, protected: set[str]
) -> list[CleanupItem]:
    """What the cleanup removes (and what it keeps, saying why); changes nothing."""
    scope = CleanupScope(namespace, run_id=run_id, older_than=older_than)
    items = await plan_cleanup(nemo, scope, is_over=flow_run_is_over, protected_models=protected)
    for item in items:
        get_run_logger().info("cleanup plan: %s", item.line())
    return items


@task(name="apply-cleanup", cache_policy=NO_CACHE)
async def apply(nemo: NemoClient, items: list[CleanupItem], holder_run_id: str | None) -> list[str]:
    """Carry the plan out; deployments' users are changed under the ``flywheel-deployment-users`` lock."""
    async with deployment_users_lock(holder_run_id):
        done = await apply_cleanup(nemo, items, is_over=flow_run_is_over)
    for line in done:
        get_run_logger().info("cleanup: %s", line)
    return done
