"""The staged rollout check: canary vs baseline through the real agent, stage by stage → promote | hold | rollback.

resolve canary (parameter → config → the registry's `champion`) → MLflow run in `rollout/<app>` →
per stage: route the stage's weight to the canary, drive traffic, judge (early rollback on an alarm) →
report (MLflow, `rollout-report` artifact) → event `flywheel.rollout.decided` on `flywheel.app.<app>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel

from agent_flywheel.config import ScalingConfig, load_config
from agent_flywheel.nemo.names import registered_model_name
from agent_flywheel.paths import state_dir
from agent_flywheel.scaling.reports import rollout_markdown, run_link
from agent_flywheel.tracking import flatten_params, rollout_experiment
from blocks.agent_target import AgentTarget
from blocks.mlflow_tracking import MlflowTracking
from blocks.resolve import load_block
from tasks.rollout import run_rollout_stages
from tasks.routing import agent_routing_state
from tasks.scaling_tracking import (
    champion_served_model,
    end_tracking_run,
    flow_run_id,
    log_rollout,
    start_tracking_run,
)

DEFAULT_CONFIG = "configs/scaling.yaml"
DEFAULT_WORKLOAD = "customer-support"
EVENT = "flywheel.rollout.decided"
STAGE_SLACK_S = 120.0


def rollout_event(
    app: str,
    canary_model: str,
    baseline_model: str,
    report: Mapping[str, Any],
    mlflow_run_id: str | None = None,
    mlflow_url: str | None = None,
) -> dict[str, Any]:
    """The ``flywheel.rollout.decided`` event as keyword arguments of ``emit_event``.

    Why a function of its own: it is the contract with whoever acts on the decision (an automation that
    shifts traffic, a person), so it is built and tested apart from the flow. The payload holds the
    decision, the models, each judged stage with its decision and reasons, and the MLflow run.
    """
    stages = [
        {
            "stage": s.get("stage"),
            "weight": s.get("weight"),
            "decision": s.get("decision"),
            "reasons": list(s.get("reasons") or []),
            "canary_requests": (s.get("canary") or {}).get("requests"),
            "canary_error_rate": (s.get("canary") or {}).get("error_rate"),
            "canary_p95_latency_s": (s.get("canary") or {}).get("p95_latency_s"),
        }
        for s in report.get("stages") or []
    ]
    return {
        "event": EVENT,
        "resource": {"prefect.resource.id": f"flywheel.app.{app}", "prefect.resource.name": app},
        "payload": {
            "app": app,
            "decision": report.get("decision"),
            "canary_model": canary_model,
            "baseline_model": baseline_model,
            "stages": stages,
            "not_reached": list(report.get("not_reached") or []),
            "mlflow_run_id": mlflow_run_id,
            "mlflow_url": mlflow_url,
        },
    }


class StageDecision(BaseModel):
    """One judged stage of a rollout check: its canary weight, its decision and the reasons."""

    stage: str
    weight: float
    decision: str
    reasons: list[str] = []


class RolloutCheckOutcome(BaseModel):
    """The ``rollout-check`` flow's result: the decision per stage and overall, or why the check was skipped."""

    app: str
    decision: str | None = None  # None when skipped
    skipped: str | None = None  # why, when skipped
    canary_model: str | None = None
    canary_source: str | None = None
    baseline_model: str | None = None
    stopped_early: str | None = None
    requests: int = 0
    canary_requests: int = 0
    stages: list[StageDecision] = []
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    markdown: str = ""


@flow(name="rollout-check", log_prints=True)
def rollout_check(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    canary_model: str | None = None,
    config: ScalingConfig | None = None,
    workload_id: str = DEFAULT_WORKLOAD,
    concurrency: int = 8,
    min_canary_requests: int | None = None,
) -> RolloutCheckOutcome:
    """Check a canary stage by stage against the baseline and decide promote, hold or rollback.

    The canary is ``canary_model``, else ``rollout.canary_model`` of the config, else the model the
    registry's ``champion`` of ``flywheel-<workload_id>`` is served as; with none of them the check is
    skipped (a result saying why, no failure). ``concurrency`` simulated users drive the agent in a
    closed loop; ``min_canary_requests`` overrides how many canary requests a stage needs to promote.
    """
    logger = get_run_logger()
    cfg = config or load_config(config_path, ScalingConfig)
    agent = load_block(AgentTarget, agent_block)
    tracking = load_block(MlflowTracking, mlflow_block)
    tracker = tracking.get_tracker()
    canary = canary_model or cfg.rollout.canary_model
    source = "parameter" if canary_model else "config"
    if not canary:
        registered = registered_model_name(workload_id)
        canary = champion_served_model(tracker, registered)
        source = f"MLflow registry {registered}@champion"
        if not canary:
            reason = (
                f"rollout check skipped: no canary_model given, none in the config, and no `champion` in the "
                f"MLflow registry under {registered} (run the flywheel until it promotes a candidate)"
            )
            logger.warning(reason)
            create_markdown_artifact(
                markdown=f"# Rollout check: skipped\n\n{reason}.\n", key="rollout-report", description=reason
            )
            return RolloutCheckOutcome(app=cfg.app, skipped=reason)
    baseline = str((agent_routing_state(agent) or {}).get("teacher_model") or cfg.rollout.baseline_model)
    if baseline != cfg.rollout.baseline_model:
        logger.warning("the agent's baseline is %s, not %s as configured", baseline, cfg.rollout.baseline_model)
    run_of_flow = flow_run_id()
    tags = {
        "app": cfg.app,
        "prefect.flow_run_id": run_of_flow,
        "simulated": str(agent.simulated).lower(),
        "canary_model": canary,
        "canary_source": source,
        "baseline_model": baseline,
        "agent_url": agent.url,
    }
    params = flatten_params({"rollout": cfg.rollout.model_dump(mode="json")}) | {
        "concurrency": concurrency,
        "min_canary_requests": min_canary_requests or "",
        "canary_model": canary,
    }
    run_id, mlflow_url = start_tracking_run(
        tracker,
        tracking.ui_url,
        rollout_experiment(cfg.app),
        f"rollout {canary} {current_run.name or run_of_flow}",
        tags,
        params,
    )
    logger.info("rollout check of %s (from %s) vs %s: MLflow run %s", canary, source, baseline, mlflow_url)
    status = "FAILED"
    try:
        duration = sum(s.duration_s for s in cfg.rollout.stages)
        stages_task = run_rollout_stages.with_options(timeout_seconds=duration + STAGE_SLACK_S)
        outcome = stages_task(
            agent,
            canary,
            cfg.rollout,
            cfg.profile,
            str(state_dir("rollout", run_of_flow)),
            concurrency=concurrency,
            min_canary_requests=min_canary_requests,
        )
        log_rollout(tracker, run_id, outcome)
        create_markdown_artifact(
            markdown=rollout_markdown(outcome, canary, baseline, run_link(run_id, mlflow_url)),
            key="rollout-report",
            description=f"Rollout check of {canary} on {cfg.app}: {outcome.decision}",
        )
        emit_event(**rollout_event(cfg.app, canary, baseline, outcome.report, run_id, mlflow_url))
        status = "FINISHED"
    finally:
        end_tracking_run(tracker, run_id, status)
    logger.info("rollout check of %s: %s", canary, outcome.decision)
    return RolloutCheckOutcome(
        app=cfg.app,
        decision=outcome.decision,
        canary_model=canary,
        canary_source=source,
        baseline_model=baseline,
        stopped_early=outcome.stopped_early,
        requests=outcome.requests,
        canary_requests=outcome.canary_requests,
        stages=[
            StageDecision(stage=s["stage"], weight=s["weight"], decision=s["decision"], reasons=s["reasons"])
            for s in outcome.report.get("stages") or []
        ],
        mlflow_run_id=run_id,
        mlflow_url=mlflow_url,
        markdown=outcome.markdown,
    )
