"""A whole sweep: every level, ``num_passes`` interleaved passes, and the tables sizing reads."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiohttp
import pandas as pd

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.scaling.loadgen.requests import SendFn, make_client
from agent_flywheel.scaling.loadgen.runs import DEFAULT_LATE_THRESHOLD_S, LevelRun, run_closed_level, run_open_level
from agent_flywheel.scaling.loadgen.summaries import LevelSummary, summarize_level

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
]


LLM_CALL_COLUMNS = [
    "mode",
    "concurrency",
    "rate_rps",
    "pass",
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

    def requests_frame(self) -> pd.DataFrame:
        """One row per measured request (see the class docstring for the LLM columns)."""
        rows = []
        for run in self.runs:
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
                        "intended_s": rec.intended_s,
                        "sent_s": rec.sent_s,
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
    for p in range(config.num_passes):
        for level, c in enumerate(config.concurrencies):
            run = await run_closed_level(
                send,
                client,
                c,
                config.requests_per_level,
                warmup_requests=config.warmup_requests,
                timeout_s=config.request_timeout_s,
                level=level,
                pass_index=p,
                late_threshold_s=late_threshold_s,
            )
            result.runs.append(run)
            if on_run is not None:
                on_run(run)
        for k, rate in enumerate(config.arrival_rates):
            run = await run_open_level(
                send,
                client,
                rate,
                config.requests_per_level,
                warmup_requests=config.warmup_requests,
                timeout_s=config.request_timeout_s,
                level=len(config.concurrencies) + k,
                pass_index=p,
                late_threshold_s=late_threshold_s,
                seed=seed + 7919 * p + k,
                max_in_flight=max_in_flight,
            )
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
    """An upper bound on a sweep's duration: every round of every level timing out, plus slack."""
    rounds = 0
    per_level = cfg.requests_per_level + cfg.warmup_requests
    for c in cfg.concurrencies:
        rounds += math.ceil(per_level / c) + 1
    rounds += len(cfg.arrival_rates) * (per_level + 1)
    return cfg.num_passes * rounds * cfg.request_timeout_s + slack_s
