"""Sizing against the NIM simulator's true capacity, on a simulated clock (no wall-clock time, no HTTP).

The simulator's scheduler (:class:`simulators.nim.latency.BatchScheduler`, the continuous-batching model behind
its chat endpoint) serves the project's load generator (:func:`agent_flywheel.scaling.loadgen.sweep.run_sweep`)
inside an event loop whose clock only moves when every request is waiting (``simulators.virtual_clock``).
Every request is the same (fixed token counts), and no level reaches ``max_batch``, so every request at
concurrency ``N`` on a replica holding ``n`` of them takes exactly ``S(n) = o + a·I + O·(d0 + d1·n)``: the sweep
measures the latency model itself, the same on a busy machine as on an idle one.

The truth follows from the model's parameters: ``max_concurrency_under`` (the most clients whose p95 meets the
target) and ``replicas_needed`` (replicas for the target users). With identical requests of fixed length the
simulator's balancer keeps each client on its replica, so its truth is the pinned one (whole users per
replica): the sticky-sessions answer must equal it exactly, and the balanced answer lies between it and the
replicas that C* rounded up to the next whole user would give.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any, cast

import pytest

from agent_flywheel.config import LoadSweepConfig, SizingTargets
from agent_flywheel.scaling.loadgen.requests import RequestResult
from agent_flywheel.scaling.loadgen.sweep import SweepResult, run_sweep
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import sweep_data
from simulators.nim.latency import BatchScheduler, LatencyParams, max_concurrency_under, replicas_needed, service_time_s
from simulators.virtual_clock import run_simulated

TOKENS = (24, 40)  # input, output tokens of every request
USERS = 200


def simulated_sweep(params: LatencyParams, cfg: LoadSweepConfig) -> SweepResult:
    """The load generator against the simulator's scheduler, every sleep on the simulated clock."""

    async def main() -> SweepResult:
        scheduler = BatchScheduler(1.0, lambda _: params)
        loop = asyncio.get_running_loop()

        async def send(_: Any, i: int) -> RequestResult:
            started = loop.time()
            await scheduler.serve("model", *TOKENS)
            return RequestResult(
                ok=True, latency_s=loop.time() - started, input_tokens=TOKENS[0], output_tokens=TOKENS[1]
            )

        return await run_sweep(send, cast(Any, None), cfg)

    return run_simulated(main())


def sized(tmp_path: Path, sweep: SweepResult, targets: SizingTargets) -> Any:
    """Sized the way the flow does (``sweep_data`` from the per-request CSV); ``sent_s`` is wall-clock, so dropped."""
    frame = sweep.requests_frame().drop(columns=["sent_s"])
    path = tmp_path / f"requests-{targets.sticky_sessions}.csv"
    frame.to_csv(path, index=False)
    return size(sweep_data(path), targets)


@pytest.mark.parametrize(
    ("name", "params", "pinned_per_replica", "levels", "gpus_per_replica"),
    [
        # one replica; the target halfway between S(8) and S(9): 8 users fit
        (
            "one replica",
            LatencyParams(decode_s_per_token=0.001, decode_s_per_token_per_request=0.002, max_batch=64),
            8,
            [6, 7, 8, 9, 10, 12],
            None,
        ),
        # two replicas of one GPU under test, 2-4 users per replica: the target halfway between S(3) and S(4)
        (
            "small C*",
            LatencyParams(decode_s_per_token=0.004, decode_s_per_token_per_request=0.01, max_batch=16, replicas=2),
            3,
            [2, 4, 6, 8, 10],
            1,
        ),
    ],
)
def test_sizing_finds_the_simulators_true_capacity(
    tmp_path: Path,
    name: str,
    params: LatencyParams,
    pinned_per_replica: int,
    levels: list[int],
    gpus_per_replica: int | None,
) -> None:
    n = pinned_per_replica
    one = dataclasses.replace(params, replicas=1)
    target = (service_time_s(one, n, *TOKENS) + service_time_s(one, n + 1, *TOKENS)) / 2
    assert max_concurrency_under(one, target, *TOKENS, q=0.95) == n
    true_replicas = replicas_needed(params, USERS, target, [TOKENS])
    assert true_replicas == math.ceil(USERS / n)

    sweep = simulated_sweep(params, LoadSweepConfig(concurrencies=levels, num_passes=2, requests_per_level=40))
    for run in sweep.runs:  # the latency model itself: S(n) for the n requests on each replica, no clock noise
        assert run.concurrency is not None
        per_replica = math.ceil(run.concurrency / params.replicas)
        expected = service_time_s(one, per_replica, *TOKENS)
        assert {round(r.latency_s, 9) for r in run.records} == {round(expected, 9)}, run.concurrency

    test_gpus = params.replicas * (gpus_per_replica or 1)
    base = {"target_users": USERS, "target_workflow_p95_s": target, "test_gpus": test_gpus}
    pinned = sized(tmp_path, sweep, SizingTargets(**base, gpus_per_replica=gpus_per_replica, sticky_sessions=True))
    balanced = sized(tmp_path, sweep, SizingTargets(**base, gpus_per_replica=gpus_per_replica))
    assert pinned.slo_concurrency_per_replica is not None and balanced.slo_concurrency_per_replica is not None
    assert n <= balanced.slo_concurrency_per_replica < n + 1  # between the last whole load that fits and the next
    assert pinned.replicas == true_replicas and pinned.gpus == true_replicas * (gpus_per_replica or test_gpus)
    assert math.ceil(USERS / (n + 1)) <= balanced.replicas <= true_replicas
    assert balanced.replicas == math.ceil(USERS / balanced.slo_concurrency_per_replica - 1e-9)
    # 80 identical latencies per level: the interval is the point, and no level is too thin for a p95
    assert not pinned.warnings and pinned.gpus_low == pinned.gpus == pinned.gpus_high
    assert pinned.nat_linear is not None
    print(
        f"{name}: C* per replica {balanced.slo_concurrency_per_replica:.2f} (truth: {n} pinned users); "
        f"replicas balanced {balanced.replicas}, pinned {pinned.replicas} (truth {true_replicas}); "
        f"toolkit line {pinned.nat_linear.gpus} GPUs"
    )
