"""The rollout check's tasks, one per way the canary gets its users.

- :func:`observe_rollout` (router ``none``, the default): judge the traffic of the last window from the agent's
  spans; nothing is routed, nothing is sent.
- :func:`run_routed_stages` (router ``demo-agent`` or ``http-hook``): stage by stage, the router gives the canary
  the stage's weight, real users use it, and each stage is judged from the spans of its own time window.
- :func:`run_rollout_stages` (``synthetic_traffic: true``, demo and staging only): simulated users through the
  demo agent's router, judged from its answers.

A routed check never leaves the routing changed: it is restored in a ``finally`` block, also when the task
fails. Acting on the decision is left to whoever receives ``flywheel.rollout.decided``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import ProfileConfig, RolloutConfig, RolloutStage
from agent_flywheel.scaling.blocking import run_coroutine
from agent_flywheel.scaling.inputs import load_inputs
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.outcomes import RolloutOutcome
from agent_flywheel.scaling.rollout.check import ObservedCheck, check_observed
from agent_flywheel.scaling.rollout.observations import Observation
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.report import RolloutReport, analyze_rollout
from agent_flywheel.scaling.rollout.routers import Router
from agent_flywheel.scaling.rollout.service import load_observed_traces
from agent_flywheel.scaling.rollout.stages import StageReport
from agent_flywheel.scaling.rollout.traffic import ObservationRow, drive_stage
from agent_flywheel.scaling.rollout.window import resolve_window
from blocks.agent_target import AgentTarget
from tasks.routing import restore_routing, route_canary

OBSERVATION_COLUMNS = ["t_s", "variant", "ok", "latency_s", "quality", "kind"]


def _policy(min_canary_requests: int | None) -> RolloutPolicy:
    return RolloutPolicy(min_requests=min_canary_requests) if min_canary_requests else RolloutPolicy()


def _write(
    out_dir: str, report: dict[str, Any], markdown: str, rows: Sequence[tuple[Observation, str]]
) -> tuple[str, str, str]:
    """``rollout.json``, ``rollout.md`` and ``observations.csv`` (one row per request or LLM call)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([{**o.__dict__, "kind": kind} for o, kind in rows], columns=OBSERVATION_COLUMNS)
    observations_csv = out / "observations.csv"
    frame.to_csv(observations_csv, index=False)
    json_path = out / "rollout.json"
    json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    md_path = out / "rollout.md"
    md_path.write_text(markdown, encoding="utf-8")
    return str(json_path), str(md_path), str(observations_csv)


def _rows(check: ObservedCheck) -> list[tuple[Observation, str]]:
    return [(o, "workflow") for o in check.workflow_observations] + [(o, "llm_call") for o in check.llm_observations]


@task(name="rollout-observe", cache_policy=NO_CACHE)
def observe_rollout(
    traces_file: str,
    baseline_model: str,
    canary_model: str,
    config: RolloutConfig,
    out_dir: str,
    window_s: float | None = None,
    until_s: float | None = None,
    min_canary_requests: int | None = None,
) -> RolloutOutcome:
    """Judge the canary against the baseline on the requests of the window, read from the agent's spans.

    Why: with the default observe-only router the platform shifts the traffic; the check only says what the
    users got. The window is ``window_s`` (default ``rollout.window_s``) ending at ``until_s`` (default: now).
    """
    logger = get_run_logger()
    traces, problems = load_observed_traces(Path(traces_file))
    start, end = resolve_window(traces, window_s or config.window_s, until_s, time.time())
    check = check_observed(
        traces,
        baseline_model,
        canary_model,
        config.slo,
        start,
        end,
        policy=_policy(min_canary_requests),
        quality_attribute=config.quality_attribute,
    )
    for problem in problems[:5]:
        logger.warning("traces file %s: %s", traces_file, problem)
    report = json_safe(check.to_dict() | {"mode": "observe"})
    markdown = check.to_markdown()
    json_path, md_path, csv_path = _write(out_dir, report, markdown, _rows(check))
    logger.info(
        "observed rollout check of %s vs %s over %.0f s: %s (%d canary, %d baseline requests)",
        canary_model,
        baseline_model,
        end - start,
        check.decision,
        check.traffic.canary,
        check.traffic.baseline,
    )
    return RolloutOutcome(
        decision=check.decision,
        mode="observe",
        report=report,
        markdown=markdown,
        requests=check.traffic.canary + check.traffic.baseline,
        canary_requests=check.traffic.canary,
        json_path=json_path,
        markdown_path=md_path,
        observations_csv=csv_path,
    )


@task(name="rollout-routed-stages", cache_policy=NO_CACHE)
def run_routed_stages(
    router: Router,
    traces_file: str,
    baseline_model: str,
    canary_model: str,
    config: RolloutConfig,
    out_dir: str,
    span_wait_s: float = 10.0,
    min_canary_requests: int | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> RolloutOutcome:
    """Walk the stages: the router gives the canary each stage's weight, real users use it, each stage is judged
    from the spans of its own window; stop at the first non-promote, cut a stage short at its first rollback.

    Every ``rollout.check_interval_s`` the running stage is judged (it may roll back, not promote); a stage is
    judged for good ``span_wait_s`` after it ends, when the spans of its last requests have arrived.
    """
    logger = get_run_logger()
    policy = _policy(min_canary_requests)
    path = Path(traces_file)
    judged: list[ObservedCheck] = []
    stages: list[StageReport] = []
    not_reached: list[str] = []
    stopped_early: str | None = None
    origin = clock()

    def judge(stage: RolloutStage, start: float, end: float, now: float | None) -> ObservedCheck:
        traces, _ = load_observed_traces(path)
        return check_observed(
            traces,
            baseline_model,
            canary_model,
            config.slo,
            start,
            end,
            stage=stage,
            origin_s=origin,
            now_s=now,
            policy=policy,
            quality_attribute=config.quality_attribute,
        )

    previous: dict[str, Any] | None = None
    try:
        for k, stage in enumerate(config.stages):
            before = route_canary(router, canary_model, stage.weight)
            previous = before if previous is None else previous
            start = clock()
            end = start + stage.duration_s
            check: ObservedCheck | None = None
            while (now := clock()) < end:
                sleep(min(config.check_interval_s, end - now))
                now = clock()
                if now < end:
                    running = judge(stage, start, end, now)
                    if running.decision == "rollback":
                        check, stopped_early = running, stage.name
                        break
            if check is None:
                sleep(span_wait_s)
                check = judge(stage, start, end, None)
            judged.append(check)
            stages += check.stages
            logger.info(
                "rollout stage %s (%s canary, via %s): %d canary / %d baseline requests -> %s",
                stage.name,
                f"{stage.weight:.0%}",
                router.describe(),
                check.traffic.canary,
                check.traffic.baseline,
                check.decision,
            )
            if check.decision != "promote":
                not_reached = [s.name for s in config.stages[k + 1 :]]
                break
    finally:
        if previous is not None:
            restore_routing(router, previous)
    decision = judged[-1].decision if judged else "hold"
    report_obj = RolloutReport(decision, stages, not_reached)
    report = json_safe(
        report_obj.to_dict()
        | {
            "mode": "routed",
            "router": router.describe(),
            "baseline_model": baseline_model,
            "canary_model": canary_model,
        }
    )
    markdown = report_obj.to_markdown()
    rows = [row for c in judged for row in _rows(c)]
    json_path, md_path, csv_path = _write(out_dir, report, markdown, rows)
    logger.info("routed rollout check of %s: %s", canary_model, decision)
    return RolloutOutcome(
        decision=decision,
        mode="routed",
        report=report,
        markdown=markdown,
        requests=sum(c.traffic.canary + c.traffic.baseline for c in judged),
        canary_requests=sum(c.traffic.canary for c in judged),
        stopped_early=stopped_early,
        json_path=json_path,
        markdown_path=md_path,
        observations_csv=csv_path,
    )


@task(name="rollout-stages", cache_policy=NO_CACHE)
def run_rollout_stages(
    agent: AgentTarget,
    router: Router,
    canary_model: str,
    config: RolloutConfig,
    inputs_cfg: ProfileConfig,
    out_dir: str,
    concurrency: int = 8,
    min_canary_requests: int | None = None,
    check_interval_s: float = 1.0,
) -> RolloutOutcome:
    """Synthetic traffic (``synthetic_traffic: true``): per stage, route its weight to the canary through the demo
    agent's router, drive simulated users, judge; stop at the first non-promote.

    Observations are ``(t_s, variant, ok, latency_s, None)`` with ``t_s`` the send time on the rollout's
    clock (stage ``k`` starts at the sum of the earlier stages' durations).
    """
    logger = get_run_logger()
    inputs, _ = load_inputs(inputs_cfg)
    policy = _policy(min_canary_requests)
    observations: list[ObservationRow] = []
    counter = itertools.count()
    cut_at: float | None = None
    stopped_early: str | None = None

    async def drive(stage: RolloutStage, start_s: float) -> float | None:
        async with agent.get_async_client(timeout_s=60.0, max_connections=max(64, 2 * concurrency)) as client:
            return await drive_stage(
                client,
                agent.request_template().path,
                inputs,
                stage,
                start_s,
                config,
                canary_model,
                concurrency,
                policy,
                observations,
                counter,
                check_interval_s,
            )

    previous = route_canary(router, canary_model, 0.0)
    try:
        start_s = 0.0
        for k, stage in enumerate(config.stages):
            route_canary(router, canary_model, stage.weight)
            cut_at = run_coroutine(drive(stage, start_s))
            so_far = RolloutConfig(stages=config.stages[: k + 1], slo=config.slo)
            report = analyze_rollout(observations, so_far, now_s=cut_at, policy=policy)
            in_stage = [o for o in observations if start_s <= o[0] < start_s + stage.duration_s]
            canary_n = sum(o[1] == "canary" for o in in_stage)
            logger.info(
                "rollout stage %s (%s canary): %d requests, %d on the canary, %d failed -> %s",
                stage.name,
                f"{stage.weight:.0%}",
                len(in_stage),
                canary_n,
                sum(not o[2] for o in in_stage),
                report.stages[-1].decision if report.stages else report.decision,
            )
            if cut_at is not None:
                stopped_early = stage.name
            if report.decision != "promote":
                break
            start_s += stage.duration_s
    finally:
        restore_routing(router, previous)
    final = analyze_rollout(observations, config, now_s=cut_at, policy=policy)
    report_dict = json_safe(final.to_dict() | {"mode": "synthetic", "router": router.describe()})
    markdown = final.to_markdown()
    rows = [(Observation.of(o), "workflow") for o in observations]
    json_path, md_path, csv_path = _write(out_dir, report_dict, markdown, rows)
    logger.info("rollout check of %s: %s", canary_model, final.decision)
    return RolloutOutcome(
        decision=final.decision,
        mode="synthetic",
        report=report_dict,
        markdown=markdown,
        requests=len(observations),
        canary_requests=sum(o[1] == "canary" for o in observations),
        stopped_early=stopped_early,
        json_path=json_path,
        markdown_path=md_path,
        observations_csv=csv_path,
    )
