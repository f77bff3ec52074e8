"""The load-sweep task: closed loop at every concurrency (and open loop at every rate), interleaved passes.

Why a task of its own: the sweep is the long, expensive measurement; its tables are written before anything
else reads them, so sizing can be re-run from the files without sweeping again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import LoadSweepConfig, ProfileConfig
from agent_flywheel.scaling.blocking import run_coroutine
from agent_flywheel.scaling.inputs import load_inputs, request_body
from agent_flywheel.scaling.jsonable import frame_rows
from agent_flywheel.scaling.loadgen.requests import chat_sender
from agent_flywheel.scaling.loadgen.runs import LevelRun
from agent_flywheel.scaling.loadgen.sweep import SweepResult, run_sweep
from agent_flywheel.scaling.outcomes import SweepOutcome
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
def run_load_sweep(agent: AgentTarget, cfg: LoadSweepConfig, inputs_cfg: ProfileConfig, out_dir: str) -> SweepOutcome:
    """Closed loop at every concurrency (and open loop at every rate), ``num_passes`` interleaved passes."""
    inputs, problems = load_inputs(inputs_cfg)
    logger = get_run_logger()
    for p in problems:
        logger.warning("sweep input skipped: %s", p)
    send = chat_sender(path=agent.chat_path, body=lambda i: request_body(inputs, i, "load-user"))
    total = cfg.num_passes * (len(cfg.concurrencies) + len(cfg.arrival_rates))
    biggest = max([*cfg.concurrencies, 1])
    logger.info(
        "load sweep of %s: concurrencies %s, rates %s, %d passes, %d measured requests per level",
        agent.url,
        cfg.concurrencies,
        cfg.arrival_rates,
        cfg.num_passes,
        cfg.requests_per_level,
    )

    async def main() -> SweepResult:
        async with agent.get_load_client(max(256, 2 * biggest), cfg.request_timeout_s) as client:
            return await run_sweep(send, client, cfg, on_run=_progress(total))

    started = time.monotonic()
    result = run_coroutine(main())
    seconds = time.monotonic() - started
    out = Path(out_dir)
    requests_csv = result.to_csv(out / "requests.csv", per="request")
    levels_csv = result.to_csv(out / "levels.csv", per="level")
    llm_calls_csv = out / "llm_calls.csv"
    result.llm_calls_frame().to_csv(llm_calls_csv, index=False)
    summary = result.summary_frame()
    requests = int(summary["requests"].sum()) if len(summary) else 0
    errors = requests - (int(summary["ok"].sum()) if len(summary) else 0)
    for w in result.warnings:
        logger.warning("load generator: %s", w)
    logger.info("load sweep done: %d measured requests, %d failed, in %.0f s", requests, errors, seconds)
    return SweepOutcome(
        requests_csv=str(requests_csv),
        levels_csv=str(levels_csv),
        llm_calls_csv=str(llm_calls_csv),
        levels=frame_rows(summary),
        requests=requests,
        errors=errors,
        warnings=result.warnings,
        seconds=seconds,
    )
