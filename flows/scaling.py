"""The scaling lifecycle: profile → load sweep → sizing, one MLflow run in ``sizing/<app>`` for all three.

profile      the example inputs one at a time → spans → per-step stats, critical path, Gantt
load-sweep   closed loop at every concurrency (open loop at every rate), interleaved passes; LLM calls from spans
             (each level split over ``load_sweep.processes`` processes or ``load_sweep.workers`` generator tasks)
sizing       C*, replicas and GPUs with an interval, never a crash when the SLO cannot be met; optionally
             confirmed by measuring again at the recommended load per replica
scaling      the three in a row; with ``candidate_model``, every user is routed to it meanwhile, which only a
             router the config names explicitly does (``rollout.router``; the default ``none`` refuses)

Each flow also runs on its own (a deployment, a person); it then opens and closes its own MLflow run. Each
flow resolves its blocks once and hands the tasks the agent and the MLflow tracker.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run as current_run
from pydantic import BaseModel

from agent_flywheel.config import LoadSweepConfig, ScalingConfig, load_config
from agent_flywheel.paths import state_dir
from agent_flywheel.scaling.loadgen.sweep import sweep_timeout_s
from agent_flywheel.scaling.outcomes import ProfileOutcome, SizingOutcome, SweepOutcome
from agent_flywheel.scaling.profile_run import profile_timeout_s
from agent_flywheel.scaling.reports import image_markdown, profile_markdown, sizing_markdown, sweep_table
from agent_flywheel.scaling.rollout.routers import ObserveOnly, Router
from agent_flywheel.scaling.sizing.confirm import plan_confirmation
from agent_flywheel.tracking import sizing_experiment
from blocks.agent_target import AgentTarget
from blocks.mlflow_tracking import MlflowTracking
from blocks.resolve import load_block
from tasks.profile import run_profile
from tasks.routing import build_router, routed_to
from tasks.scaling_tracking import (
    SizingRun,
    end_tracking_run,
    flow_run_id,
    log_profile,
    log_sizing,
    log_sweep,
    sizing_params,
    sizing_tags,
    start_tracking_run,
)
from tasks.sizing import confirm_sizing, run_sizing
from tasks.sweep import run_load_sweep

DEFAULT_CONFIG = "configs/scaling.yaml"


class ProfileFlowOutcome(ProfileOutcome):
    """The ``profile`` flow's result: the profile and the MLflow run it was recorded in."""

    mlflow_run_id: str


class SweepFlowOutcome(SweepOutcome):
    """The ``load-sweep`` flow's result: the sweep and the MLflow run it was recorded in."""

    mlflow_run_id: str


class SizingFlowOutcome(SizingOutcome):
    """The ``sizing`` flow's result: the answer and the MLflow run it was recorded in."""

    mlflow_run_id: str


class ProfileSummary(BaseModel):
    """The profile's headline, as the ``scaling`` flow reports it."""

    requests: int
    failed: int
    traces: int
    source: str
    summary: dict[str, Any] = {}


class SweepSummary(BaseModel):
    """The sweep's headline and per-level rows, as the ``scaling`` flow reports it."""

    requests: int
    errors: int
    warnings: list[str] = []
    seconds: float
    levels: list[dict[str, Any]]
    spans: dict[str, int] = {}


class ScalingOutcome(BaseModel):
    """The ``scaling`` flow's result: what the profile and the sweep found, the sizing answer, the MLflow run."""

    app: str
    candidate_model: str | None
    mlflow_run_id: str
    mlflow_url: str
    profile: ProfileSummary
    sweep: SweepSummary
    sizing: dict[str, Any]  # SizingResult.to_dict(), JSON-safe: the same document as the run's sizing.json
    markdown: str


def _config(config: ScalingConfig | None, config_path: str) -> ScalingConfig:
    return config or load_config(config_path, ScalingConfig)


def _out_dir(kind: str) -> str:
    return str(state_dir("scaling", flow_run_id(), kind))


def _candidate_router(cfg: ScalingConfig, agent: AgentTarget, candidate_model: str | None) -> Router:
    """The configured router, refused up front (before any MLflow run) when a candidate asks the default ``none``.

    Why: sizing a candidate sends every user of the agent to it; only a config that names a router may do that.
    """
    if not candidate_model:
        return ObserveOnly()  # nothing to route: the configured router (and its secret) is not even built
    router = build_router(cfg.rollout.router, agent)
    if router.kind == "none":
        router.route(candidate_model, 1.0)  # raises RoutingRefused, saying how to route or to observe instead
    return router


def _stage_run(
    cfg: ScalingConfig,
    agent_block: str,
    mlflow_block: str,
    candidate_model: str | None,
    mlflow_run_id: str | None,
    stage: str,
    section: str,
) -> tuple[AgentTarget, Router, SizingRun]:
    """The agent, its router (a candidate refused before any MLflow run) and the run ``profile`` or ``load-sweep``
    logs to: both resolve their blocks and open their run alike."""
    agent = load_block(AgentTarget, agent_block)
    router = _candidate_router(cfg, agent, candidate_model)
    tracking = load_block(MlflowTracking, mlflow_block)
    tags = sizing_tags(cfg, agent.url, agent.simulated, candidate_model, stage)
    run = SizingRun(tracking.get_tracker(), tracking.ui_url, mlflow_run_id, cfg, stage, tags, (section,))
    return agent, router, run


@flow(name="profile", log_prints=True)
def profile(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
    config: ScalingConfig | None = None,
    mlflow_run_id: str | None = None,
) -> ProfileFlowOutcome:
    """Profile the agent at concurrency 1: per-step latency, LLM calls, the critical path and a Gantt chart.

    With ``candidate_model``, the configured router sends every user to it meanwhile (the default router refuses).
    """
    cfg = _config(config, config_path)
    agent, router, run = _stage_run(
        cfg, agent_block, mlflow_block, candidate_model, mlflow_run_id, "profile", "profile"
    )
    with run:
        with routed_to(router, candidate_model):
            profile_task = run_profile.with_options(timeout_seconds=profile_timeout_s(cfg.profile, cfg.spans.wait_s))
            outcome = profile_task(agent, cfg.profile, cfg.spans, _out_dir("profile"))
        log_profile(run.tracker, run.run_id, outcome)
        gantt = image_markdown(run.ui_url, run.run_id, "profile/gantt.png", "Gantt chart of a median request")
        create_markdown_artifact(
            markdown=profile_markdown(outcome, run.link(), gantt),
            key="profile-report",
            description=f"Profile of {cfg.app}",
        )
        return ProfileFlowOutcome(mlflow_run_id=run.run_id, **outcome.model_dump())


@flow(name="load-sweep", log_prints=True)
def load_sweep(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
    config: ScalingConfig | None = None,
    mlflow_run_id: str | None = None,
) -> SweepFlowOutcome:
    """Sweep the agent with load (closed loop per concurrency, open loop per rate); the tables go to MLflow.

    With ``candidate_model``, the configured router sends every user to it meanwhile (the default router refuses).
    """
    cfg = _config(config, config_path)
    agent, router, run = _stage_run(
        cfg, agent_block, mlflow_block, candidate_model, mlflow_run_id, "load-sweep", "load_sweep"
    )
    with run:
        with routed_to(router, candidate_model):
            sweep_task = run_load_sweep.with_options(timeout_seconds=sweep_timeout_s(cfg.load_sweep) + cfg.spans.wait_s)
            outcome = sweep_task(agent, cfg.load_sweep, cfg.profile, cfg.spans, _out_dir("sweep"))
        log_sweep(run.tracker, run.run_id, outcome)
        create_table_artifact(
            table=sweep_table(outcome),
            key="load-sweep",
            description=f"Load sweep of {cfg.app}: one row per level, passes merged ({run.link()})",
        )
        return SweepFlowOutcome(mlflow_run_id=run.run_id, **outcome.model_dump())


def _confirm(
    outcome: SizingOutcome, cfg: ScalingConfig, agent: AgentTarget, router: Router, candidate_model: str | None
) -> SizingOutcome:
    """Re-measure at the load the answer puts on each replica (same passes and requests as the sweep)."""
    plan = plan_confirmation(outcome.answer)
    if plan is None:
        get_run_logger().warning("sizing confirmation skipped: %s", outcome.answer["reason"])
        return outcome
    check = LoadSweepConfig.model_validate(
        cfg.load_sweep.model_dump() | {"concurrencies": plan.concurrencies, "arrival_rates": []}
    )
    with routed_to(router, candidate_model):
        sweep_task = run_load_sweep.with_options(name="confirm-sizing-load", timeout_seconds=sweep_timeout_s(check))
        measured = sweep_task(agent, check, cfg.profile, cfg.spans, _out_dir("confirm"))
    return confirm_sizing(outcome, measured.requests_csv, measured.llm_calls_csv, cfg.sizing)


@flow(name="sizing", log_prints=True)
def sizing(
    sweep_csv: str,
    config_path: str = DEFAULT_CONFIG,
    mlflow_block: str = "local",
    config: ScalingConfig | None = None,
    llm_calls_csv: str | None = None,
    mlflow_run_id: str | None = None,
    agent_block: str = "local",
    candidate_model: str | None = None,
) -> SizingFlowOutcome:
    """Size from a sweep table (per request or per level): C*, replicas and GPUs with an interval, cost, plots.

    With ``sizing.confirm`` the agent (``agent_block``, serving ``candidate_model`` when given, through the
    configured router, which the default refuses) is measured again at the recommended load per replica;
    otherwise ``agent_block`` only names the agent in the tags of a run this flow opens itself.
    """
    cfg = _config(config, config_path)
    tracking = load_block(MlflowTracking, mlflow_block)
    tags = None
    agent = load_block(AgentTarget, agent_block) if mlflow_run_id is None or cfg.sizing.confirm else None
    router: Router = ObserveOnly()
    if cfg.sizing.confirm:
        assert agent is not None
        router = _candidate_router(cfg, agent, candidate_model)
    if mlflow_run_id is None:
        assert agent is not None
        tags = sizing_tags(cfg, agent.url, agent.simulated, candidate_model, "sizing")
    run = SizingRun(tracking.get_tracker(), tracking.ui_url, mlflow_run_id, cfg, "sizing", tags, ("sizing",))
    with run:
        outcome = run_sizing(sweep_csv, llm_calls_csv, cfg.sizing, _out_dir("sizing"))
        if cfg.sizing.confirm:
            assert agent is not None
            outcome = _confirm(outcome, cfg, agent, router, candidate_model)
        log_sizing(run.tracker, run.run_id, outcome)
        plots = [
            image_markdown(run.ui_url, run.run_id, "latency_vs_concurrency.png", "p95 latency vs concurrency"),
            image_markdown(run.ui_url, run.run_id, "sizing.png", "GPUs with their interval"),
        ]
        create_markdown_artifact(
            markdown=sizing_markdown(outcome, run.link(), plots),
            key="sizing-report",
            description=f"Sizing of {cfg.app} for {cfg.sizing.target_users} users",
        )
        return SizingFlowOutcome(mlflow_run_id=run.run_id, **outcome.model_dump())


@flow(name="scaling", log_prints=True)
def scaling(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
    config: ScalingConfig | None = None,
) -> ScalingOutcome:
    """Profile, load-sweep and size the agent (with ``candidate_model`` serving every user, when given).

    One MLflow run in ``sizing/<app>`` holds the profile, the sweep and the answer; ``config`` (a form in
    the Prefect UI) wins over ``config_path``. A ``candidate_model`` is routed only by a router the config
    names (``rollout.router``: ``demo-agent`` or ``http-hook``); with the default ``none`` the flow refuses
    before it starts: a promotion is checked by ``rollout-check`` on observed traffic instead.
    """
    logger = get_run_logger()
    cfg = _config(config, config_path)
    agent = load_block(AgentTarget, agent_block)
    _candidate_router(cfg, agent, candidate_model)
    tracking = load_block(MlflowTracking, mlflow_block)
    tracker = tracking.get_tracker()
    run_id, mlflow_url = start_tracking_run(
        tracker,
        tracking.ui_url,
        sizing_experiment(cfg.app),
        f"scaling {current_run.name or flow_run_id()}",
        sizing_tags(cfg, agent.url, agent.simulated, candidate_model, "scaling"),
        sizing_params(cfg, "profile", "load_sweep", "sizing") | {"candidate_model": candidate_model or ""},
    )
    logger.info(
        "scaling %s%s: MLflow run %s", cfg.app, f" with {candidate_model}" if candidate_model else "", mlflow_url
    )
    status = "FAILED"
    try:
        prof = profile(
            agent_block=agent_block,
            mlflow_block=mlflow_block,
            candidate_model=candidate_model,
            config=cfg,
            mlflow_run_id=run_id,
        )
        if prof.traces == 0:
            logger.warning("profile: no traces collected; the sweep and sizing go on without a profile")
        sweep = load_sweep(
            agent_block=agent_block,
            mlflow_block=mlflow_block,
            candidate_model=candidate_model,
            config=cfg,
            mlflow_run_id=run_id,
        )
        answer = sizing(
            sweep_csv=sweep.requests_csv,
            llm_calls_csv=sweep.llm_calls_csv,
            mlflow_block=mlflow_block,
            config=cfg,
            mlflow_run_id=run_id,
            agent_block=agent_block,
            candidate_model=candidate_model,
        )
        status = "FINISHED"
    finally:
        end_tracking_run(tracker, run_id, status)
    logger.info("scaling %s: %s", cfg.app, answer.answer["reason"])
    return ScalingOutcome(
        app=cfg.app,
        candidate_model=candidate_model,
        mlflow_run_id=run_id,
        mlflow_url=mlflow_url,
        profile=ProfileSummary.model_validate(prof.model_dump(include=set(ProfileSummary.model_fields))),
        sweep=SweepSummary.model_validate(sweep.model_dump(include=set(SweepSummary.model_fields))),
        sizing=answer.answer,
        markdown=answer.markdown,
    )
