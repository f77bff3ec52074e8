"""The sizing task: from the sweep's tables to C*, GPUs with an interval, cost, plots and reports."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.outcomes import SizingOutcome
from agent_flywheel.scaling.sizing.plots import plot_all
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import sweep_data


@task(name="size", retries=0, cache_policy=NO_CACHE)
def run_sizing(
    requests_csv: str, llm_calls_csv: str | None, targets: SizingTargets, out_dir: str, seed: int = 0
) -> SizingOutcome:
    """C*, GPUs with a bootstrap interval, cost; the two plots; ``sizing.json`` and ``sizing.md``.

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
            "sizing: C* %s %.1f (%.1f–%.1f), %s GPUs for %d users (%s–%s)",
            "≥" if result.slo_concurrency_is_lower_bound else "=",
            result.slo_concurrency or 0.0,
            result.slo_concurrency_low or 0.0,
            result.slo_concurrency_high or 0.0,
            result.gpus,
            targets.target_users,
            result.gpus_low,
            result.gpus_high,
        )
    else:
        logger.warning("sizing: %s", result.reason)
    return SizingOutcome(
        answer=answer,
        markdown=result.to_markdown(),
        json_path=str(json_path),
        markdown_path=str(md_path),
        latency_plot=str(plots["latency_vs_concurrency"]),
        sizing_plot=str(plots["sizing"]),
    )
