"""The sizing tasks: from the sweep's tables to C*, replicas and GPUs with an interval; and its confirmation."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.outcomes import SizingOutcome
from agent_flywheel.scaling.sizing.confirm import judge_confirmation, plan_confirmation
from agent_flywheel.scaling.sizing.plots import plot_all
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import sweep_data


@task(name="size", retries=0, cache_policy=NO_CACHE)
def run_sizing(
    requests_csv: str, llm_calls_csv: str | None, targets: SizingTargets, out_dir: str, seed: int = 0
) -> SizingOutcome:
    """C*, replicas and GPUs with an interval, cost; the two plots; ``sizing.json`` and ``sizing.md``.

    Never fails on an unreachable target: that is an answer (``reachable: false`` with the reason).
    """
    result = size(sweep_data(requests_csv, llm_calls_csv), targets, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(result, out)
    answer = json_safe(result.to_dict())
    json_path = out / "sizing.json"
    json_path.write_text(json.dumps(answer, indent=2), encoding="utf-8")
    md_path = out / "sizing.md"
    md_path.write_text(result.to_markdown(), encoding="utf-8")
    logger = get_run_logger()
    if result.reachable:
        logger.info(
            "sizing: C* %s %.2f per replica, %s replicas × %d GPU(s) = %s GPUs for %d users (%s), %s",
            "≥" if result.slo_concurrency_is_lower_bound else "=",
            result.slo_concurrency_per_replica or 0.0,
            result.replicas,
            result.replica_model.gpus_per_replica,
            result.gpus,
            targets.target_users,
            result.interval_text(result.gpus_low, result.gpus_high, "d"),
            result.replica_model.traffic,
        )
    else:
        logger.warning("sizing: %s", result.reason)
    for warning in result.warnings:
        logger.warning("sizing: %s", warning)
    return SizingOutcome(
        answer=answer,
        markdown=result.to_markdown(),
        json_path=str(json_path),
        markdown_path=str(md_path),
        latency_plot=str(plots["latency_vs_concurrency"]),
        sizing_plot=str(plots["sizing"]),
    )


@task(name="confirm-sizing", retries=0, cache_policy=NO_CACHE)
def confirm_sizing(
    outcome: SizingOutcome, requests_csv: str, llm_calls_csv: str | None, targets: SizingTargets
) -> SizingOutcome:
    """Judge the re-measurement at the recommended load: ``confirmation`` in the answer, a section in the report.

    ``sizing.json`` and ``sizing.md`` are rewritten with it, so the files say what the flow returns.
    """
    plan = plan_confirmation(outcome.answer)
    if plan is None:
        raise ValueError("nothing to confirm: the sizing answer is not reachable")
    confirmation = judge_confirmation(plan, sweep_data(requests_csv, llm_calls_csv), targets)
    answer = {**outcome.answer, "confirmation": json_safe(confirmation.to_dict())}
    markdown = outcome.markdown + "\n" + confirmation.to_markdown()
    Path(outcome.json_path).write_text(json.dumps(answer, indent=2), encoding="utf-8")
    Path(outcome.markdown_path).write_text(markdown, encoding="utf-8")
    logger = get_run_logger()
    (logger.info if confirmation.confirmed else logger.warning)("sizing confirmation: %s", confirmation.summary())
    for warning in confirmation.warnings:
        logger.warning("sizing confirmation: %s", warning)
    return outcome.model_copy(update={"answer": answer, "markdown": markdown, "confirmation_csv": requests_csv})
