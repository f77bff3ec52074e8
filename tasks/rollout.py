"""The rollout task: stage by stage, route the stage's weight to the canary, drive traffic, judge.

Nothing changes the agent for longer than the task runs: its routing is restored in a ``finally`` block,
also when the task fails. Acting on the decision is left to whoever receives ``flywheel.rollout.decided``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import ProfileConfig, RolloutConfig, RolloutStage
from agent_flywheel.scaling.blocking import run_coroutine
from agent_flywheel.scaling.inputs import load_inputs
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.outcomes import RolloutOutcome
from agent_flywheel.scaling.rollout.observations import Observation
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.report import analyze_rollout
from agent_flywheel.scaling.rollout.traffic import ObservationRow, drive_stage
from blocks.agent_target import AgentTarget
from tasks.routing import restore_agent_routing, set_agent_routing


@task(name="rollout-stages", cache_policy=NO_CACHE)
def run_rollout_stages(
    agent: AgentTarget,
    canary_model: str,
    config: RolloutConfig,
    inputs_cfg: ProfileConfig,
    out_dir: str,
    concurrency: int = 8,
    min_canary_requests: int | None = None,
    check_interval_s: float = 1.0,
) -> RolloutOutcome:
    """Walk the stages: route each stage's weight to the canary, drive traffic, judge; stop at the first non-promote.

    Observations are ``(t_s, variant, ok, latency_s, None)`` with ``t_s`` the send time on the rollout's
    clock (stage ``k`` starts at the sum of the earlier stages' durations).
    """
    logger = get_run_logger()
    inputs, _ = load_inputs(inputs_cfg)
    policy = RolloutPolicy(min_requests=min_canary_requests) if min_canary_requests else RolloutPolicy()
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

    previous = set_agent_routing(agent, canary_model, 0.0)
    try:
        start_s = 0.0
        for k, stage in enumerate(config.stages):
            set_agent_routing(agent, canary_model, stage.weight)
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
        restore_agent_routing(agent, previous)
    final = analyze_rollout(observations, config, now_s=cut_at, policy=policy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        [Observation.of(o).__dict__ for o in observations], columns=["t_s", "variant", "ok", "latency_s", "quality"]
    )
    observations_csv = out / "observations.csv"
    frame.to_csv(observations_csv, index=False)
    report_dict = json_safe(final.to_dict())
    json_path = out / "rollout.json"
    json_path.write_text(json.dumps(report_dict, indent=2), encoding="utf-8")
    md_path = out / "rollout.md"
    md_path.write_text(final.to_markdown(), encoding="utf-8")
    logger.info("rollout check of %s: %s", canary_model, final.decision)
    return RolloutOutcome(
        decision=final.decision,
        report=report_dict,
        markdown=final.to_markdown(),
        requests=len(observations),
        canary_requests=sum(o[1] == "canary" for o in observations),
        stopped_early=stopped_early,
        json_path=str(json_path),
        markdown_path=str(md_path),
        observations_csv=str(observations_csv),
    )
