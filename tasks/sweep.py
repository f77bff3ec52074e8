"""The load-sweep task: closed loop at every concurrency (and open loop at every rate), interleaved passes.

Why a task of its own: the sweep is the long, expensive measurement; its tables are written before anything
else reads them, so sizing can be re-run from the files without sweeping again. Every request carries its own
``traceparent``; the per-LLM-call figures come from the spans of those traces (``ScalingConfig.spans``: the
task's OTLP receiver and/or a traces file), never from the agent's answers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import LoadSweepConfig, ProfileConfig, SpansConfig
from agent_flywheel.scaling.inputs import load_inputs
from agent_flywheel.scaling.jsonable import frame_rows
from agent_flywheel.scaling.loadgen.requests import template_sender
from agent_flywheel.scaling.loadgen.runs import LevelRun
from agent_flywheel.scaling.otlp.sources import collecting_spans
from agent_flywheel.scaling.outcomes import SweepOutcome
from agent_flywheel.scaling.sweep_run import sweep_with_spans
from blocks.agent_target import AgentTarget


def _progress(total: int) -> Callable[[LevelRun], None]:
    logger = get_run_logger()
    done = itertools.count(1)

    def on_run(run: LevelRun) -> None:
        ok = [r.latency_s for r in run.records if r.result.ok]
        p95 = f"{float(np.percentile(ok, 95)):.3f} s" if ok else "—"
        label = f"concurrency {run.concurrency}" if run.mode == "closed" else f"rate {run.rate_rps:g}/s"
        logger.info(
            "load sweep: pass %d, %s: %d measured, %d failed, p95 %s (%d/%d level-passes)",
            run.pass_index + 1,
            label,
            len(run.records),
            len(run.records) - len(ok),
            p95,
            next(done),
            total,
        )

    return on_run


@task(name="load-sweep", cache_policy=NO_CACHE)
def run_load_sweep(
    agent: AgentTarget, cfg: LoadSweepConfig, inputs_cfg: ProfileConfig, spans: SpansConfig, out_dir: str
) -> SweepOutcome:
    """Closed loop at every concurrency (and open loop at every rate), ``num_passes`` interleaved passes; each
    measured request's LLM calls from its spans."""
    inputs, problems = load_inputs(inputs_cfg)
    logger = get_run_logger()
    for p in problems:
        logger.warning("sweep input skipped: %s", p)
    send = template_sender(agent.request_template(), inputs, "load-user")
    total = cfg.num_passes * (len(cfg.concurrencies) + len(cfg.arrival_rates))
    logger.info(
        "load sweep of %s: concurrencies %s, rates %s, %d passes, %d measured requests per level",
        agent.url,
        cfg.concurrencies,
        cfg.arrival_rates,
        cfg.num_passes,
        cfg.requests_per_level,
    )
    started = time.monotonic()
    with agent.get_client() as http, collecting_spans(spans, http if agent.uses_admin_otlp else None) as sources:
        logger.info("load sweep: spans from %s", sources.describe)
        result, match = sweep_with_spans(
            send,
            lambda connections: agent.get_load_client(connections, cfg.request_timeout_s),
            cfg,
            sources,
            spans.wait_s,
            on_run=_progress(total),
        )
    seconds = time.monotonic() - started
    out = Path(out_dir)
    requests_csv = result.to_csv(out / "requests.csv", per="request")
    levels_csv = result.to_csv(out / "levels.csv", per="level")
    llm_calls_csv = out / "llm_calls.csv"
    result.llm_calls_frame().to_csv(llm_calls_csv, index=False)
    summary = result.summary_frame()
    requests = int(summary["requests"].sum()) if len(summary) else 0
    errors = requests - (int(summary["ok"].sum()) if len(summary) else 0)
    warnings = list(result.warnings)
    for w in warnings:
        logger.warning("load generator: %s", w)
    if match.without_spans:
        warnings.append(
            f"{match.without_spans} of {match.requests} measured requests have no spans: their LLM calls are not "
            "counted (is the agent exporting to the run's receiver or traces file, and continuing the traceparent?)"
        )
        logger.warning("load sweep: %s", warnings[-1])
    logger.info(
        "load sweep done: %d measured requests, %d failed, %d LLM calls from spans, in %.0f s",
        requests,
        errors,
        match.llm_calls,
        seconds,
    )
    return SweepOutcome(
        requests_csv=str(requests_csv),
        levels_csv=str(levels_csv),
        llm_calls_csv=str(llm_calls_csv),
        levels=frame_rows(summary),
        requests=requests,
        errors=errors,
        warnings=warnings,
        seconds=seconds,
        spans=match.to_dict(),
    )
