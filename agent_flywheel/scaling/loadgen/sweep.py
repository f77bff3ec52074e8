"""A whole sweep: every level, ``num_passes`` interleaved passes, and the tables sizing reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import pandas as pd

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.scaling.loadgen.requests import SendFn, make_client
from agent_flywheel.scaling.loadgen.runs import (
    DEFAULT_LATE_THRESHOLD_S,
    LevelRun,
    Mode,
    run_closed_level,
    run_open_level,
)
from agent_flywheel.scaling.loadgen.shares import GeneratorShare, split_level
from agent_flywheel.scaling.loadgen.summaries import LevelSummary, summarize_level

Drive = Callable[[Sequence[GeneratorShare]], list[LevelRun]]

REQUEST_COLUMNS = [
    "mode",
    "level",
    "pass",
    "concurrency",
    "rate_rps",
    "request",
    "intended_s",
    "sent_s",
    "lateness_s",
    "workflow_latency_s",
    "llm_latency_s",
    "llm_latency_sum_s",
    "llm_calls",
    "ok",
    "error_kind",
    "input_tokens",
    "output_tokens",
    "trace_id",
    "generator",
]


LLM_CALL_COLUMNS = [
    "mode",
    "concurrency",
    "rate_rps",
    "pass",
    "generator",
    "request",
    "model",
    "latency_s",
    "input_tokens",
    "output_tokens",
]


@dataclass
class SweepResult:
    """Every pass of every level of a sweep.

    ``requests_frame()`` has one row per measured request. ``llm_latency_s`` is the **slowest** LLM call of the
    request (``max``): a workflow meets an LLM-call target only if all its calls do, and the max is what a
    per-request p95 should be compared with; ``llm_latency_sum_s`` (time spent in LLM calls, if sequential)
    and ``llm_calls`` are kept beside it. Pooled per-call percentiles are in the level summary and in
    ``llm_calls_frame()``.
    """

    runs: list[LevelRun] = field(default_factory=list)

    def merge(self, other: SweepResult) -> SweepResult:
        """Combine the runs of two workers (same levels); summaries then merge their histograms exactly."""
        return SweepResult(self.runs + other.runs)

    def _levels(self) -> list[list[LevelRun]]:
        groups: dict[tuple[str, int | None, float | None], list[LevelRun]] = {}
        for run in self.runs:
            groups.setdefault((run.mode, run.concurrency, run.rate_rps), []).append(run)
        return sorted(groups.values(), key=lambda g: (g[0].mode, g[0].concurrency or 0, g[0].rate_rps or 0.0))

    def summaries(self) -> list[LevelSummary]:
        """One summary per level, passes merged."""
        return [summarize_level(g) for g in self._levels()]

    def summary_frame(self) -> pd.DataFrame:
        """The per-level table."""
        return pd.DataFrame([s.to_row() for s in self.summaries()])

    @property
    def warnings(self) -> list[str]:
        """Every self-check warning of every level."""
        return [w for s in self.summaries() for w in s.warnings]

    def _pass_origins(self) -> dict[tuple[int, int], float]:
        """When each level-pass started (its first generator's start, epoch seconds)."""
        origins: dict[tuple[int, int], float] = {}
        for run in self.runs:
            key = (run.level, run.pass_index)
            origins[key] = min(origins.get(key, run.started_at), run.started_at)
        return origins

    def requests_frame(self) -> pd.DataFrame:
        """One row per measured request (see the class docstring for the LLM columns).

        ``intended_s`` and ``sent_s`` count from the start of the level-pass, the same clock for every
        generator of a split level; ``generator`` and ``request`` together name a request.
        """
        rows = []
        origins = self._pass_origins()
        for run in self.runs:
            offset = run.started_at - origins[(run.level, run.pass_index)]
            for rec in run.records:
                calls = [c.latency_s for c in rec.result.llm_calls]
                rows.append(
                    {
                        "mode": run.mode,
                        "level": run.level,
                        "pass": run.pass_index,
                        "concurrency": run.concurrency,
                        "rate_rps": run.rate_rps,
                        "request": rec.index,
                        "intended_s": rec.intended_s + offset,
                        "sent_s": rec.sent_s + offset,
                        "lateness_s": rec.lateness_s,
                        "workflow_latency_s": rec.latency_s,
                        "llm_latency_s": max(calls) if calls else None,
                        "llm_latency_sum_s": sum(calls) if calls else None,
                        "llm_calls": len(calls),
                        "ok": rec.result.ok,
                        "error_kind": rec.result.error_kind,
                        "input_tokens": rec.result.input_tokens,
                        "output_tokens": rec.result.output_tokens,
                        "trace_id": rec.result.trace.trace_id if rec.result.trace else None,
                        "generator": run.generator,
                    }
                )
        return pd.DataFrame(rows, columns=REQUEST_COLUMNS)

    def llm_calls_frame(self) -> pd.DataFrame:
        """One row per LLM call (from the request's spans): level, pass, request, model, latency_s, tokens."""
        rows = [
            {
                "mode": run.mode,
                "concurrency": run.concurrency,
                "rate_rps": run.rate_rps,
                "pass": run.pass_index,
                "generator": run.generator,
                "request": rec.index,
                "model": call.model,
                "latency_s": call.latency_s,
                "input_tokens": call.input_tokens,
                "output_tokens": call.output_tokens,
            }
            for run in self.runs
            for rec in run.records
            for call in rec.result.llm_calls
        ]
        return pd.DataFrame(rows, columns=LLM_CALL_COLUMNS)

    def to_csv(self, path: str | Path, per: Literal["request", "level"] = "request") -> Path:
        """Write the per-request (default) or per-level table; ``sizing calc --sweep`` reads either."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = self.requests_frame() if per == "request" else self.summary_frame()
        frame.to_csv(path, index=False)
        return path


@dataclass(frozen=True)
class LevelPass:
    """One pass of one level, as a sweep runs them: closed loop at ``value`` users or open loop at ``value``/s."""

    mode: Mode
    level: int
    pass_index: int
    value: float
    seed: int | None


def sweep_plan(config: LoadSweepConfig, seed: int = 0) -> list[LevelPass]:
    """Every pass of every level in the order they run: pass 0 of every level, then pass 1, ... (against drift)."""
    plan: list[LevelPass] = []
    for p in range(config.num_passes):
        plan += [LevelPass("closed", level, p, c, None) for level, c in enumerate(config.concurrencies)]
        first_open = len(config.concurrencies)
        plan += [
            LevelPass("open", first_open + k, p, rate, seed + 7919 * p + k)
            for k, rate in enumerate(config.arrival_rates)
        ]
    return plan


async def run_sweep(
    send: SendFn,
    client: aiohttp.ClientSession,
    config: LoadSweepConfig,
    *,
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
    seed: int = 0,
    max_in_flight: int | None = None,
    on_run: Callable[[LevelRun], None] | None = None,
) -> SweepResult:
    """Run every configured level ``num_passes`` times (closed loop over concurrencies, open loop over rates).

    Why: sizing needs the latency curve with repeats (for an interval) and with errors counted, not a sweep
    that stops at the first failure. Passes are interleaved across levels against slow drift.
    """
    result = SweepResult()
    for step in sweep_plan(config, seed):
        if step.mode == "closed":
            run = await run_closed_level(
                send,
                client,
                int(step.value),
                config.requests_per_level,
                warmup_requests=config.warmup_requests,
                timeout_s=config.request_timeout_s,
                level=step.level,
                pass_index=step.pass_index,
                late_threshold_s=late_threshold_s,
            )
        else:
            run = await run_open_level(
                send,
                client,
                step.value,
                config.requests_per_level,
                warmup_requests=config.warmup_requests,
                timeout_s=config.request_timeout_s,
                level=step.level,
                pass_index=step.pass_index,
                late_threshold_s=late_threshold_s,
                seed=step.seed,
                max_in_flight=max_in_flight,
            )
        result.runs.append(run)
        if on_run is not None:
            on_run(run)
    return result


def run_split_sweep(
    drive: Drive,
    config: LoadSweepConfig,
    generators: int,
    start_at: Callable[[], float],
    *,
    seed: int = 0,
    on_run: Callable[[LevelRun], None] | None = None,
) -> SweepResult:
    """The sweep with every pass of every level split over ``generators`` generators (:mod:`.shares`).

    ``drive`` runs the shares of one level-pass wherever the generators are (processes, Prefect workers) and
    returns their runs; ``start_at()`` gives each level-pass its common start time. Levels and passes run
    in the same order and with the same seeds as :func:`run_sweep`; the summaries merge the generators' runs
    like passes (histograms exactly).
    """
    result = SweepResult()
    for step in sweep_plan(config, seed):
        shares = split_level(
            step.mode,
            step.value,
            config.requests_per_level,
            config.warmup_requests,
            generators,
            level=step.level,
            pass_index=step.pass_index,
            start_at=start_at(),
            seed=step.seed,
        )
        for run in drive(shares):
            result.runs.append(run)
            if on_run is not None:
                on_run(run)
    return result


def run_sweep_blocking(
    base_url: str,
    config: LoadSweepConfig,
    send: SendFn,
    *,
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
    seed: int = 0,
) -> SweepResult:
    """Synchronous entry point: own event loop and a pool sized to the largest level."""
    biggest = max([*config.concurrencies, 1])

    async def main() -> SweepResult:
        async with make_client(base_url, max_connections=max(256, 2 * biggest)) as client:
            return await run_sweep(send, client, config, late_threshold_s=late_threshold_s, seed=seed)

    return asyncio.run(main())


def sweep_timeout_s(cfg: LoadSweepConfig, slack_s: float = 120.0) -> float:
    """An upper bound on a sweep's duration: every round of every level timing out, each level-pass's start
    lead when it is split over workers, plus slack (which also covers starting generator processes)."""
    rounds = 0
    per_level = cfg.requests_per_level + cfg.warmup_requests
    for c in cfg.concurrencies:
        rounds += math.ceil(per_level / c) + 1
    rounds += len(cfg.arrival_rates) * (per_level + 1)
    leads = len(sweep_plan(cfg)) * cfg.start_lead_s if cfg.workers > 1 else 0.0
    return cfg.num_passes * rounds * cfg.request_timeout_s + leads + slack_s
