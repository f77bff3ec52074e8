"""The rollout check: canary vs baseline → promote | hold | rollback, from the traffic the canary really served.

resolve canary (parameter → config → the registry's `champion`) → MLflow run in `rollout/<app>` → one of
  observe    (router `none`, the default) judge the last window of the agent's spans; nobody is routed
  routed     (router `demo-agent` / `http-hook`) per stage: the router gives the canary its weight, real users,
             the stage judged from its spans (early rollback on an alarm)
  synthetic  (`synthetic_traffic: true`, demo and staging) per stage: simulated users through the demo agent
→ report (MLflow, `rollout-report` artifact) → event `flywheel.rollout.decided` on `flywheel.app.<app>`.
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
from agent_flywheel.scaling.outcomes import RolloutOutcome
from agent_flywheel.scaling.reports import rollout_markdown, run_link
from agent_flywheel.scaling.rollout.routers import DemoAgentRouter
from agent_flywheel.tracking import flatten_params, rollout_experiment
from blocks.agent_target import AgentTarget
from blocks.mlflow_tracking import MlflowTracking
from blocks.resolve import load_block
from tasks.rollout import observe_rollout, run_rollout_stages, run_routed_stages
from tasks.routing import build_router
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
            "mode": report.get("mode"),
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
    mode: str | None = None  # observe | routed | synthetic
    router: str | None = None
    stopped_early: str | None = None
    requests: int = 0
    canary_requests: int = 0
    stages: list[StageDecision] = []
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    markdown: str = ""


def _skipped(app: str, reason: str) -> RolloutCheckOutcome:
    get_run_logger().warning(reason)
    create_markdown_artifact(
        markdown=f"# Rollout check: skipped\n\n{reason}.\n", key="rollout-report", description=reason
    )
    return RolloutCheckOutcome(app=app, skipped=reason)


def rollout_mode(cfg: ScalingConfig) -> str:
    """``synthetic`` when the config turns simulated users on, ``routed`` when it names a router, else ``observe``."""
    if cfg.rollout.synthetic_traffic:
        return "synthetic"
    return "observe" if cfg.rollout.router.kind == "none" else "routed"


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
    baseline_model: str | None = None,
    traces_file: str | None = None,
    window_s: float | None = None,
) -> RolloutCheckOutcome:
    """Check a canary against the baseline and decide promote, hold or rollback.

    The canary is ``canary_model``, else ``rollout.canary_model`` of the config, else the model the registry's
    ``champion`` of ``flywheel-<workload_id>`` is served as; with none of them the check is skipped (a result
    saying why, no failure). How the canary gets users is the config's (:func:`rollout_mode`): by default
    nobody is routed and the check judges the last ``window_s`` (default ``rollout.window_s``) of the agent's
    spans in ``traces_file`` (default ``spans.traces_file``), split by the model that served each request.
    ``agent_block`` is read only for the demo agent's router; ``concurrency`` is the simulated users of
    synthetic traffic; ``min_canary_requests`` overrides how many canary requests a stage needs to promote.
    """
    logger = get_run_logger()
    cfg = config or load_config(config_path, ScalingConfig)
    mode = rollout_mode(cfg)
    tracking = load_block(MlflowTracking, mlflow_block)
    tracker = tracking.get_tracker()
    canary = canary_model or cfg.rollout.canary_model
    source = "parameter" if canary_model else "config"
    if not canary:
        registered = registered_model_name(workload_id)
        canary = champion_served_model(tracker, registered)
        source = f"MLflow registry {registered}@champion"
        if not canary:
            return _skipped(
                cfg.app,
                f"rollout check skipped: no canary_model given, none in the config, and no `champion` in the "
                f"MLflow registry under {registered} (run the flywheel until it promotes a candidate)",
            )
    spans_file = traces_file or cfg.spans.traces_file
    if mode != "synthetic" and not spans_file:
        return _skipped(
            cfg.app,
            f"rollout check of {canary} skipped: judging observed traffic needs the agent's spans, and neither "
            "traces_file nor spans.traces_file is set (run `flywheel otlp serve --out FILE`, or a collector's "
            "file exporter, where the agent exports, and give the check that FILE)",
        )
    agent = load_block(AgentTarget, agent_block) if cfg.rollout.router.kind == "demo-agent" else None
    router = build_router(cfg.rollout.router, agent)
    baseline = baseline_model or cfg.rollout.baseline_model
    if baseline_model is None and isinstance(router, DemoAgentRouter):
        baseline = str((router.state() or {}).get("teacher_model") or baseline)
        if baseline != cfg.rollout.baseline_model:
            logger.warning("the agent's baseline is %s, not %s as configured", baseline, cfg.rollout.baseline_model)
    run_of_flow = flow_run_id()
    tags = {
        "app": cfg.app,
        "prefect.flow_run_id": run_of_flow,
        "simulated": str(agent.simulated if agent else False).lower(),
        "canary_model": canary,
        "canary_source": source,
        "baseline_model": baseline,
        "rollout.mode": mode,
        "router": cfg.rollout.router.kind,
    }
    if agent is not None:
        tags["agent_url"] = agent.url
    if spans_file and mode != "synthetic":
        tags["traces_file"] = spans_file
    params = flatten_params({"rollout": cfg.rollout.model_dump(mode="json")}) | {
        "concurrency": concurrency,
        "min_canary_requests": min_canary_requests or "",
        "canary_model": canary,
        "window_s": window_s or "",
    }
    run_id, mlflow_url = start_tracking_run(
        tracker,
        tracking.ui_url,
        rollout_experiment(cfg.app),
        f"rollout {canary} {current_run.name or run_of_flow}",
        tags,
        params,
    )
    logger.info(
        "rollout check of %s (from %s) vs %s, %s via %s: MLflow run %s",
        canary,
        source,
        baseline,
        mode,
        router.describe(),
        mlflow_url,
    )
    out_dir = str(state_dir("rollout", run_of_flow))
    duration = sum(s.duration_s for s in cfg.rollout.stages)
    status = "FAILED"
    try:
        outcome: RolloutOutcome
        if mode == "synthetic":
            assert agent is not None  # synthetic traffic needs the demo agent's router (RolloutConfig says so)
            stages_task = run_rollout_stages.with_options(timeout_seconds=duration + STAGE_SLACK_S)
            outcome = stages_task(
                agent,
                router,
                canary,
                cfg.rollout,
                cfg.profile,
                out_dir,
                concurrency=concurrency,
                min_canary_requests=min_canary_requests,
            )
        elif mode == "routed":
            assert spans_file is not None
            routed_task = run_routed_stages.with_options(
                timeout_seconds=duration + len(cfg.rollout.stages) * cfg.spans.wait_s + STAGE_SLACK_S
            )
            outcome = routed_task(
                router,
                spans_file,
                baseline,
                canary,
                cfg.rollout,
                out_dir,
                span_wait_s=cfg.spans.wait_s,
                min_canary_requests=min_canary_requests,
            )
        else:
            assert spans_file is not None
            outcome = observe_rollout(
                spans_file, baseline, canary, cfg.rollout, out_dir, window_s, None, min_canary_requests
            )
        log_rollout(tracker, run_id, outcome)
        create_markdown_artifact(
            markdown=rollout_markdown(outcome, canary, baseline, run_link(run_id, mlflow_url)),
            key="rollout-report",
            description=f"Rollout check ({mode}) of {canary} on {cfg.app}: {outcome.decision}",
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
        mode=mode,
        router=router.describe(),
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
