"""Tasks: have the NIM proxy serve the teacher, a local judge and a local embedding model for one run, and
leave them again (:mod:`agent_flywheel.nemo.serving` says which and when).

A model the NIM proxy serves outside Deployment Management (the platform team's teacher, a preloaded judge) is
used as it is. Otherwise the run joins the DMS deployment of that name, or creates it, like a candidate's
(``custom_fields.flywheel_users``: the last live user deletes it; the failure hooks and the reaper find it
there too) and waits until the NIM proxy serves the model. Nothing here occupies the ``gpu`` concurrency
limit: the judge must stay up while candidates hold it, or the run would wait on itself.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.poller import JobWaitError, PollSettings
from agent_flywheel.nemo.serving import Phase, RequiredModel, required_models
from tasks.nemo_jobs import (
    SERVE_GRACE_S,
    DeploymentRef,
    FlywheelStepError,
    _deployment_error,
    _nim_error,
    release_deployment,
)
from tasks.ownership import deployment_users_lock


class RunModels(BaseModel):
    """Whose run the models are served for: its namespace and flow run id (the deployments' users)."""

    namespace: str
    flow_run_id: str
    poll_interval_s: float = 5.0
    timeout_s: float = 3600.0

    @classmethod
    def of(cls, cfg: FlywheelConfig, flow_run_id: str) -> RunModels:
        ev = cfg.evaluation_config
        return cls(
            namespace=cfg.namespace,
            flow_run_id=flow_run_id,
            poll_interval_s=ev.poll_interval_s,
            timeout_s=ev.timeout_s,
        )


def _not_served(model: RequiredModel, base_url: str) -> FlywheelStepError:
    setting = "teacher.deployment_type: local" if "teacher" in model.roles else "deployment_type: local"
    return FlywheelStepError(
        "NIM",
        model.label,
        f"is not served by the NIM proxy at {base_url}",
        f"deploy it, or set `{setting}` so that the flywheel deploys it through Deployment Management",
    )


@task(name="serve-model", retries=2, retry_delay_seconds=[10, 60], cache_policy=NO_CACHE)
async def serve_model(model: RequiredModel, run: RunModels, nemo: NemoClient) -> DeploymentRef | None:
    """Make the NIM proxy serve ``model`` for this run; the DMS deployment the run uses, or None when the model
    is served without one of ours (nothing to leave afterwards)."""
    logger = get_run_logger()
    description = f"agent-flywheel {model.label} (created by run {run.flow_run_id})"
    body = model.deployment_body(run.namespace, description)
    name = str(body["name"])
    if await nemo.deployments.get(run.namespace, name) is None:  # else: join the deployment (its users) below
        if await nemo.nim.has_model(model.model_name):
            logger.info("serve: %s is served by the NIM proxy already; used as it is", model.label)
            return None
        if not model.deploy:
            raise _not_served(model, nemo.nim.http.base_url)
    async with deployment_users_lock(run.flow_run_id):
        use = await nemo.deployments.use(body, run.flow_run_id)
    ref = DeploymentRef(
        namespace=run.namespace, name=name, model=model.model_name, managed=use.managed, created=use.created
    )
    logger.info(
        "serve: %s through deployment %s/%s (%s)",
        model.label,
        run.namespace,
        name,
        "created" if use.created else "joined" if use.managed else "not ours, used as it is",
    )
    poll = PollSettings(interval_s=run.poll_interval_s, stall_timeout_s=run.timeout_s, timeout_s=4 * run.timeout_s)
    try:
        await nemo.deployments.wait_until_ready(run.namespace, name, settings=poll)
    except JobWaitError as exc:
        removed = False
        if use.managed:
            released = await release_deployment(run.namespace, name, run.flow_run_id, nemo)
            removed = released is not None and released.deleted
        raise _deployment_error(exc, ref, nemo.deployments.http.base_url, removed) from exc
    grace = min(SERVE_GRACE_S, run.timeout_s)
    try:
        await nemo.nim.wait_for_model(
            model.model_name,
            settings=PollSettings(interval_s=run.poll_interval_s, stall_timeout_s=grace, timeout_s=grace),
        )
    except JobWaitError as exc:
        raise _nim_error(exc, model.model_name, nemo.nim.http.base_url) from exc
    return ref


@task(name="release-model", retries=2, retry_delay_seconds=[5, 30], cache_policy=NO_CACHE)
async def release_model(ref: DeploymentRef, run: RunModels, nemo: NemoClient) -> bool:
    """This run is done with the deployment: deleted unless another live run uses it (or it is not ours)."""
    if not ref.managed:
        return False
    release = await release_deployment(ref.namespace, ref.name, run.flow_run_id, nemo)
    deleted = release is not None and release.deleted
    get_run_logger().info(
        "release: %s/%s (%s) %s", ref.namespace, ref.name, ref.model, "deleted" if deleted else "left for other runs"
    )
    return deleted


async def serve_models(
    cfg: FlywheelConfig, phase: Phase, run: RunModels, nemo: NemoClient, *, tool_calling: bool | None = None
) -> list[DeploymentRef]:
    """Serve every model ``cfg`` needs in ``phase``; the deployments to release when the phase is done.

    When one cannot be served, the ones already served for the phase are released before the error is raised.
    """
    held: list[DeploymentRef] = []
    try:
        for model in required_models(cfg, phase, tool_calling=tool_calling):
            ref = await serve_model(model, run, nemo)
            if ref is not None:
                held.append(ref)
    except BaseException:
        await release_models(held, run, nemo)
        raise
    return held


async def release_models(held: list[DeploymentRef], run: RunModels, nemo: NemoClient) -> None:
    """Release each deployment; a failure is logged (its users list keeps the run for the failure hooks and the
    reaper)."""
    for ref in held:
        try:
            await release_model(ref, run, nemo)
        except Exception as exc:
            get_run_logger().warning(
                "release of %s/%s failed (%s); the run's hooks retry", ref.namespace, ref.name, exc
            )
