"""The load-sweep task: closed loop at every concurrency (and open loop at every rate), interleaved passes.

Why a task of its own: the sweep is the long, expensive measurement; its tables are written before anything
else reads them, so sizing can be re-run from the files without sweeping again. Every request carries its own
``traceparent``; the per-LLM-call figures come from the spans of those traces (``ScalingConfig.spans``: the
task's OTLP receiver and/or a traces file), never from the agent's answers.

More load than one process: ``load_sweep.processes`` splits every level over generator processes beside this
task; ``load_sweep.workers`` over ``load-generator`` tasks, each driving its share from a common start time
and returning its run (histogram, counters, rows), merged here. Where those tasks run is
``load_sweep.worker_runner``: threads or a process pool of this task's machine, or Prefect task workers
(``prefect task serve tasks/sweep.py:load_generator``, a pod each on Kubernetes: docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import PrefectTaskRunner, ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from agent_flywheel.config import LoadSweepConfig, ProfileConfig, SpansConfig
from agent_flywheel.scaling.inputs import Input, load_inputs
from agent_flywheel.scaling.jsonable import frame_rows
from agent_flywheel.scaling.loadgen.generator import drive_share
from agent_flywheel.scaling.loadgen.runs import LevelRun
from agent_flywheel.scaling.loadgen.shares import GeneratorShare
from agent_flywheel.scaling.loadgen.sweep import Drive
from agent_flywheel.scaling.otlp.sources import collecting_spans
from agent_flywheel.scaling.outcomes import SweepOutcome
from agent_flywheel.scaling.sweep_run import sweep_with_spans
from blocks.agent_target import AgentTarget
from blocks.resolve import load_block


def _progress(total: int) -> Callable[[LevelRun], None]:
    logger = get_run_logger()
    done = itertools.count(1)

    def on_run(run: LevelRun) -> None:
        ok = [r.latency_s for r in run.records if r.result.ok]
        p95 = f"{float(np.percentile(ok, 95)):.3f} s" if ok else "—"
        label = f"concurrency {run.concurrency}" if run.mode == "closed" else f"rate {run.rate_rps:g}/s"
        if run.generators > 1:
            label += f", generator {run.generator} of {run.generators}"
        counted = f" ({next(done)}/{total} level-passes)" if run.generator == run.generators - 1 else ""
        logger.info(
            "load sweep: pass %d, %s: %d measured, %d failed, p95 %s%s",
            run.pass_index + 1,
            label,
            len(run.records),
            len(run.records) - len(ok),
            p95,
            counted,
        )

    return on_run


@task(name="load-generator", cache_policy=NO_CACHE)
def load_generator(
    agent: AgentTarget | str, inputs: Sequence[Input], cfg: LoadSweepConfig, share: Mapping[str, Any]
) -> dict[str, Any]:
    """One generator's share of one pass of one level (a split level's part): its run, as JSON, to be merged.

    ``agent`` is the block itself, or, for a task worker elsewhere, the name of the saved block (so the
    credentials never travel as a task parameter).
    """
    target = agent if isinstance(agent, AgentTarget) else load_block(AgentTarget, agent)
    setup = target.load_generator(inputs, cfg.request_timeout_s)
    return drive_share(setup, GeneratorShare.from_dict(share)).to_dict()


def _task_runner(cfg: LoadSweepConfig) -> TaskRunner[Any]:
    if cfg.worker_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.worker_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=cfg.workers)
    return PrefectTaskRunner()


@contextlib.contextmanager
def worker_generators(agent: AgentTarget, inputs: Sequence[Input], cfg: LoadSweepConfig) -> Iterator[Drive]:
    """A ``drive`` that runs each share of a level-pass as a ``load-generator`` task on ``cfg.worker_runner``."""
    ref: AgentTarget | str = agent
    if cfg.worker_runner == "task-workers":
        name = agent._block_document_name
        if not name:
            raise ValueError("load_sweep.worker_runner task-workers: the agent must be a saved block (by name)")
        ref = name
    with _task_runner(cfg) as runner:

        def drive(shares: Sequence[GeneratorShare]) -> list[LevelRun]:
            futures = [
                runner.submit(load_generator, {"agent": ref, "inputs": list(inputs), "cfg": cfg, "share": s.to_dict()})
                for s in shares
            ]
            return [LevelRun.from_dict(future.result()) for future in futures]

        yield drive


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
    total = cfg.num_passes * (len(cfg.concurrencies) + len(cfg.arrival_rates))
    split = (
        f", every level split over {cfg.processes} processes"
        if cfg.processes > 1
        else f", every level split over {cfg.workers} {cfg.worker_runner} generators"
        if cfg.workers > 1
        else ""
    )
    logger.info(
        "load sweep of %s: concurrencies %s, rates %s, %d passes, %d measured requests per level%s",
        agent.url,
        cfg.concurrencies,
        cfg.arrival_rates,
        cfg.num_passes,
        cfg.requests_per_level,
        split,
    )
    started = time.monotonic()
    with (
        agent.get_client() as http,
        collecting_spans(spans, http if agent.uses_admin_otlp else None) as sources,
        worker_generators(agent, inputs, cfg) if cfg.workers > 1 else contextlib.nullcontext() as workers,
    ):
        logger.info("load sweep: spans from %s", sources.describe)
        result, match = sweep_with_spans(
            agent.load_generator(inputs, cfg.request_timeout_s),
            cfg,
            sources,
            spans.wait_s,
            on_run=_progress(total),
            workers=workers,
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
