"""Benchmark 3: how many GPUs each sizing method asks for, against the true answer.

The NIM simulator's latency model is a continuous-batching server whose steady state is known exactly
(:mod:`simulators.nim.latency`), so for each parameter set the *true* largest concurrency under
the p95 target (``max_concurrency_under``) and the true replica count for the target users
(``replicas_needed``) are computed, not estimated. Each set is then measured the way a user would:
a closed-loop sweep over HTTP against the simulator running in its own process (``time_scale`` shrinks
simulated seconds; the target is scaled the same way), with the project's load generator. The same
sweep is sized four ways: by :func:`agent_flywheel.scaling.sizing.solve.size` with requests balanced over
replicas (the default) and with users pinned to replicas (sticky sessions), both from the per-request rows;
by the same method from the per-level table alone (one p95 per level: a measured bracket, not a
confidence interval); and by the NeMo Agent Toolkit's straight line
(:func:`agent_flywheel.scaling.sizing.nat_linear.nat_linear_estimate`, ``GPUs = users / C* × test GPUs``,
fractional). A replica here is one simulated replica of one GPU.

The simulator's requests are identical and its balancer keeps each closed-loop client on a replica, so its
truth is the pinned one (whole users per replica); the balanced answer divides by the fraction.

Every case is first measured on a simulated clock (the simulator's scheduler in-process, driven by the same
load generator in an event loop whose time only moves when every request waits: :mod:`simulators.virtual_clock`).
That takes seconds and gives the latency model exactly, whatever else the machine is doing, so it compares the
methods alone; the HTTP measurement adds what a real measurement adds (round trips, a busy machine).

The sweep levels depend only on what an operator knows before measuring (replicas × max batch), never
on the true answer: 1, 2, 4 and ½, 1, 1½, 2, 3 times the slot count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import load_average

USERS = 200
MODEL_PREFIX = "bench/capacity-"


@dataclasses.dataclass(frozen=True)
class Case:
    """One server configuration with its p95 target (simulated seconds) and GPUs per replica."""

    name: str
    description: str
    latency: dict[str, float | int]
    # target = factor x S(max_batch): where on the curve the SLO sits. Factors are chosen so that the
    # target does not fall exactly on a level's latency (N x S(B) / slots past the knee), where the
    # true C* would be a knife edge that any measurement noise tips over.
    target_factor: float
    gpus_per_replica: int = 1
    # instead of the factor: the target halfway between S(n) and S(n + 1) of one replica, so n users fit
    between_users: int | None = None

    @property
    def model(self) -> str:
        return MODEL_PREFIX + self.name


CASES = (
    Case(
        "a",
        "1 replica, batch 16, SLO past the knee",
        {
            "overhead_s": 0.01,
            "prefill_s_per_token": 0.0002,
            "decode_s_per_token": 0.0035,
            "decode_s_per_token_per_request": 0.0014,
            "max_batch": 16,
            "replicas": 1,
        },
        1.6,
    ),
    Case(
        "b",
        "1 replica, batch 32, slow decode, SLO before the knee",
        {
            "overhead_s": 0.02,
            "prefill_s_per_token": 0.0005,
            "decode_s_per_token": 0.006,
            "decode_s_per_token_per_request": 0.0008,
            "max_batch": 32,
            "replicas": 1,
        },
        0.85,
    ),
    Case(
        "c",
        "2 replicas (2 GPUs under test), batch 8",
        {
            "overhead_s": 0.01,
            "prefill_s_per_token": 0.0002,
            "decode_s_per_token": 0.004,
            "decode_s_per_token_per_request": 0.002,
            "max_batch": 8,
            "replicas": 2,
        },
        2.2,
    ),
    Case(
        "d",
        "1 replica, batch 4, deep queue at the SLO",
        {
            "overhead_s": 0.01,
            "prefill_s_per_token": 0.0002,
            "decode_s_per_token": 0.003,
            "decode_s_per_token_per_request": 0.003,
            "max_batch": 4,
            "replicas": 1,
        },
        2.7,
    ),
    Case(
        "e",
        "1 replica, batch 8, small C*: 3 users per replica",
        {
            "overhead_s": 0.01,
            "prefill_s_per_token": 0.0002,
            "decode_s_per_token": 0.004,
            "decode_s_per_token_per_request": 0.01,
            "max_batch": 8,
            "replicas": 1,
        },
        0.0,
        between_users=3,
    ),
)
MESSAGES = [
    {"role": "system", "content": "You are a customer support assistant for an online shop."},
    {
        "role": "user",
        "content": "Hi! Could you tell me, in a few sentences, how returns and refunds work in your shop?",
    },
]
MAX_TOKENS = 48
# Input and output tokens of every request on the simulated clock (over HTTP each case measures its own: 44 → 20-33).
SIMULATED_TOKENS = (44, 33)


def levels_for(slots: int) -> list[int]:
    """Sweep levels from the slot count (replicas x max batch) alone."""
    return sorted({1, 2, 4, *(max(1, round(slots * f)) for f in (0.5, 1, 1.5, 2, 3))})


def truth(case: Case, calls: list[tuple[int, int]]) -> dict[str, Any]:
    """The exact answer from the latency model: C* of the system under test and of one replica, replicas and
    GPUs for USERS."""
    from simulators.nim.latency import (
        LatencyParams,
        max_concurrency_under,
        replicas_needed,
        workflow_latency_s,
    )

    params = LatencyParams(**case.latency)  # type: ignore[arg-type]
    one = dataclasses.replace(params, replicas=1)
    full = workflow_latency_s(params, params.max_batch * params.replicas, calls)
    if case.between_users is not None:
        n = case.between_users
        target = (workflow_latency_s(one, n, calls) + workflow_latency_s(one, n + 1, calls)) / 2
    else:
        target = case.target_factor * workflow_latency_s(one, params.max_batch, calls)
    c_star = max_concurrency_under(params, target, calls=calls, q=0.95)
    replicas = replicas_needed(params, USERS, target, calls, q=0.95)
    return {
        "target_s": target,
        "service_s_at_full_batch": full,
        "c_star": c_star,
        "c_star_per_replica": max_concurrency_under(one, target, calls=calls, q=0.95),
        "replicas": replicas,
        "gpus": None if replicas is None else replicas * case.gpus_per_replica,
        "test_gpus": params.replicas * case.gpus_per_replica,
    }


async def _with_level(function: Callable[[Any, int, int], Any], c: int, client: Any, i: int) -> Any:
    return await function(client, i, c)


async def _levels(
    send: Callable[[Any, int], Any],
    client: Any,
    case: Case,
    scale: float,
    passes: int,
    per_level: int,
    log: Callable[[str], None],
) -> Any:
    """Every level of the case, ``passes`` interleaved passes, users ramped up (below); times by the loop's clock."""
    from agent_flywheel.scaling.loadgen.runs import run_closed_level
    from agent_flywheel.scaling.loadgen.sweep import SweepResult

    loop = asyncio.get_running_loop()
    slots = int(case.latency["max_batch"]) * int(case.latency["replicas"])
    sweep = SweepResult()
    started = loop.time()
    await send(client, 0)
    single = loop.time() - started
    # run_closed_level starts every client at the same instant, and identical requests on a
    # deterministic server then stay in lock-step for ever (see latency.py): past the knee their
    # latencies alternate between two multiples of S(B) instead of settling at the mean. Real load
    # tests ramp users up; here client k's first request (a warm-up, not measured) waits k / c of a
    # ramp of max_batch / 2 single-request latencies (about one full-batch cycle) per slot-full.
    ramp = single * int(case.latency["max_batch"]) / 2

    async def ramped(client: Any, i: int, c: int) -> Any:
        if i < c:
            await asyncio.sleep(ramp * max(1.0, c / slots) * i / c)
        return await send(client, i)

    for p in range(passes):
        for level, c in enumerate(levels_for(slots)):
            run = await run_closed_level(
                functools.partial(_with_level, ramped, c),
                client,
                c,
                max(per_level, 3 * c),
                warmup_requests=c,
                timeout_s=600,
                level=level,
                pass_index=p,
            )
            sweep.runs.append(run)
            p95 = sorted(r.latency_s for r in run.records)[int(0.95 * (len(run.records) - 1))] / scale
            log(f"sizing: case {case.name} pass {p + 1} concurrency {c}: p95 {p95:.3f} simulated s")
    return sweep


async def _sweep(
    url: str, case: Case, scale: float, passes: int, per_level: int, log: Callable[[str], None]
) -> tuple[Any, list[tuple[int, int]]]:
    """The case measured over HTTP against the simulator's process."""
    import aiohttp

    from agent_flywheel.scaling.loadgen.requests import RequestResult, make_client

    tokens: set[tuple[int, int]] = set()

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        body = {"model": case.model, "messages": MESSAGES, "max_tokens": MAX_TOKENS}
        async with client.post("/v1/chat/completions", json=body) as response:
            if response.status >= 400:
                return RequestResult(ok=False, error_kind=f"http_{response.status}", status_code=response.status)
            usage = (await response.json())["usage"]
        tokens.add((int(usage["prompt_tokens"]), int(usage["completion_tokens"])))
        return RequestResult(ok=True, status_code=200)

    async with make_client(url, timeout_s=600) as client:
        sweep = await _levels(send, client, case, scale, passes, per_level, log)
    return sweep, sorted(tokens)


def _simulated_sweep(
    case: Case, tokens: tuple[int, int], passes: int, per_level: int, log: Callable[[str], None]
) -> Any:
    """The case measured on a simulated clock: the simulator's scheduler in-process, no HTTP, no wall-clock time."""
    from agent_flywheel.scaling.loadgen.requests import RequestResult
    from simulators.nim.latency import BatchScheduler, LatencyParams
    from simulators.virtual_clock import run_simulated

    params = LatencyParams(**case.latency)  # type: ignore[arg-type]

    async def main() -> Any:
        scheduler = BatchScheduler(1.0, lambda _: params)
        loop = asyncio.get_running_loop()

        async def send(_: Any, i: int) -> RequestResult:
            started = loop.time()
            await scheduler.serve(case.model, *tokens)
            return RequestResult(ok=True, latency_s=loop.time() - started)

        return await _levels(send, None, case, 1.0, passes, per_level, log)

    return run_simulated(main())


def _answer(result: Any) -> dict[str, Any]:
    return {
        "c_star": result.slo_concurrency,
        "c_star_low": result.slo_concurrency_low,
        "c_star_high": result.slo_concurrency_high,
        "c_star_per_replica": result.slo_concurrency_per_replica,
        "replicas": result.replicas,
        "gpus": result.gpus,
        "gpus_low": result.gpus_low,
        "gpus_high": result.gpus_high,
        "interval_kind": result.interval_kind,
        "interval_notes": result.interval_notes,
        "thin_levels": len(result.warnings),
        "reachable": result.reachable,
        "reason": result.reason,
        "bracket": result.bracket,
    }


def evaluate(case: Case, data: Any, levels: Any, calls: list[tuple[int, int]], scale: float) -> dict[str, Any]:
    """Size one measured sweep (:class:`~agent_flywheel.scaling.sizing.sweeps.SweepData` in real seconds: per request,
    and its per-level table) every way, next to the truth for the same requests."""
    from agent_flywheel.config import SizingTargets
    from agent_flywheel.scaling.sizing.solve import size

    true = truth(case, calls)
    targets = SizingTargets(
        target_users=USERS,
        target_workflow_p95_s=true["target_s"] * scale,
        test_gpus=true["test_gpus"],
        gpus_per_replica=case.gpus_per_replica,
        bootstrap_samples=1000,
    )
    result = size(data, targets, seed=0)
    pinned = size(data, targets.model_copy(update={"sticky_sessions": True}), seed=0)
    per_level = size(levels, targets, seed=0)
    nat = result.nat_linear
    return {
        "case": case.name,
        "description": case.description,
        "latency": case.latency,
        "tokens": {"input": calls[0][0], "output": calls[0][1]},
        "levels": levels_for(int(case.latency["max_batch"]) * int(case.latency["replicas"])),
        "truth": true,
        "ours": _answer(result),
        "ours_pinned": _answer(pinned),
        "ours_per_level": _answer(per_level),
        "nat": None
        if nat is None
        else {
            "c_star": nat.slo_concurrency,
            "gpus": nat.gpus,
            "gpus_rounded_up": None if nat.gpus is None else math.ceil(nat.gpus - 1e-9),
            "r_squared": nat.r_squared,
            "outliers_removed": nat.outliers_removed,
            "error": nat.error,
        },
        "measured_p95_s": {
            str(lv["concurrency"]): None if lv["workflow_p95_s"] is None else lv["workflow_p95_s"] / scale
            for lv in result.levels
        },
    }


def run(*, quick: bool, work_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Sweep every case against one NIM simulator process and size each sweep both ways."""
    from agent_flywheel.scaling.sizing.sweeps import SweepData
    from bench.servers import simulator

    scale = 0.25 if quick else 0.5
    passes = 1 if quick else 2
    per_level = 30 if quick else 64
    cases = (CASES[0], CASES[4]) if quick else CASES
    section = {
        "preloaded": [c.model for c in cases],
        "latency": {"time_scale": scale, "models": {c.model: c.latency for c in cases}},
    }
    results: dict[str, Any] = {
        "users": USERS,
        "time_scale": scale,
        "passes": passes,
        "requests_per_level": f"max({per_level}, 3 × concurrency) measured requests after a warm-up of one request per client",
        "loads": [load_average()],
        "cases": [],
    }

    def record(into: list[dict[str, Any]], case: Case, sweep: Any, tokens: tuple[int, int], scale: float) -> None:
        per_level_table = SweepData.from_levels_frame(sweep.summary_frame())
        entry = evaluate(case, SweepData.from_sweep(sweep), per_level_table, [tokens], scale)
        into.append(entry)
        true, ours, pinned, nat = entry["truth"], entry["ours"], entry["ours_pinned"], entry["nat"] or {}
        table = entry["ours_per_level"]
        log(
            f"sizing: case {case.name}: truth C*={true['c_star']} GPUs={true['gpus']}; ours C*={ours['c_star']} "
            f"GPUs balanced={ours['gpus']} [{ours['gpus_low']}, {ours['gpus_high']}] pinned={pinned['gpus']} "
            f"[{pinned['gpus_low']}, {pinned['gpus_high']}]; per-level only={table['gpus']} bracket "
            f"[{table['gpus_low']}, {table['gpus_high']}]; NAT GPUs={nat.get('gpus')}"
        )

    # On a simulated clock first: the latency model exactly, whatever else the machine is doing (seconds).
    results["simulated"] = {"passes": 2, "requests_per_level": results["requests_per_level"], "cases": []}
    for case in CASES:
        sweep = _simulated_sweep(case, SIMULATED_TOKENS, 2, per_level, log)
        record(results["simulated"]["cases"], case, sweep, SIMULATED_TOKENS, 1.0)
    with simulator("nim", work_dir / "nim", section) as url:
        for case in cases:
            started = time.perf_counter()
            sweep, tokens = asyncio.run(_sweep(url, case, scale, passes, per_level, log))
            if len(tokens) != 1:
                raise RuntimeError(f"case {case.name}: requests were not identical in tokens: {tokens}")
            record(results["cases"], case, sweep, tokens[0], scale)
            results["cases"][-1]["seconds"] = time.perf_counter() - started
            results["loads"].append(load_average())
    shutil.rmtree(work_dir, ignore_errors=True)
    return results
