"""The NIM simulator's latency model: the closed-loop truth is exact, and the scheduler behaves like it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from simulators.nim.latency import (
    BatchScheduler,
    LatencyParams,
    Timing,
    closed_loop,
    expected_latency_s,
    latency_quantile_s,
    max_concurrency_under,
    max_throughput_per_s,
    params_for,
    replicas_needed,
    saturated_latency_bounds_s,
    service_time_s,
    throughput_per_s,
    workflow_latency_s,
)
from simulators.nim.settings import LatencySettings
from simulators.virtual_clock import run_simulated

T = TypeVar("T")

P = LatencyParams(
    overhead_s=0.01,
    prefill_s_per_token=0.0002,
    decode_s_per_token=0.0035,
    decode_s_per_token_per_request=0.0014,
    max_batch=16,
    replicas=1,
)
DEMO_WORKFLOW = [(300, 40), (300, 40)]


def test_service_time_is_prefill_plus_batch_dependent_decode() -> None:
    assert service_time_s(P, 1, 300, 40) == pytest.approx(0.01 + 0.06 + 40 * 0.0049)
    assert service_time_s(P, 10, 300, 40) - service_time_s(P, 1, 300, 40) == pytest.approx(40 * 0.0014 * 9)


def test_unsaturated_latency_is_the_service_time_at_that_batch() -> None:
    for n in (1, 5, 16):
        assert expected_latency_s(P, n, 300, 40) == pytest.approx(service_time_s(P, n, 300, 40))
        assert latency_quantile_s(P, n, 300, 40, q=0.95) == pytest.approx(service_time_s(P, n, 300, 40))
        assert throughput_per_s(P, n, 300, 40) == pytest.approx(n / service_time_s(P, n, 300, 40))


def test_saturated_loop_follows_littles_law() -> None:
    s_full = service_time_s(P, 16, 300, 40)
    loop = closed_loop(P, 40, [(300, 40)])
    assert loop.saturated
    assert loop.throughput_per_s == pytest.approx(16 / s_full)
    assert loop.latency_mean_s == pytest.approx(40 * s_full / 16)
    assert loop.queue_wait_mean_s == pytest.approx(40 * s_full / 16 - s_full)
    low, high = saturated_latency_bounds_s(P, 40, [(300, 40)])
    assert (low, high) == (pytest.approx(2 * s_full), pytest.approx(3 * s_full))
    assert low <= loop.latency_mean_s <= high
    assert max_throughput_per_s(P, [(300, 40)]) == pytest.approx(loop.throughput_per_s)


def test_uneven_replicas_give_two_latency_levels() -> None:
    params = dataclasses.replace(P, replicas=3)
    loop = closed_loop(params, 7, [(100, 20)])  # replicas hold 3, 2, 2
    assert loop.batch_per_replica == (3, 2, 2)
    slow, fast = service_time_s(params, 3, 100, 20), service_time_s(params, 2, 100, 20)
    assert [level for level, _ in loop.latency_levels] == [pytest.approx(fast), pytest.approx(slow)]
    share_slow = (3 / slow) / (3 / slow + 4 / fast)
    assert loop.latency_levels[1][1] == pytest.approx(share_slow)
    assert loop.quantile_s(0.95) == pytest.approx(slow)  # the fuller replica makes > 5% of completions
    assert loop.quantile_s(0.5) == pytest.approx(fast)
    assert loop.latency_mean_s == pytest.approx(7 / loop.throughput_per_s)


def test_workflow_latency_is_the_sum_of_its_calls() -> None:
    for n in (1, 8):
        expected = sum(service_time_s(P, n, i, o) for i, o in [(500, 10), (200, 60)])
        assert workflow_latency_s(P, n, [(500, 10), (200, 60)]) == pytest.approx(expected)


def test_max_concurrency_matches_a_linear_scan() -> None:
    for target in (0.2, 0.55, 1.0, 2.0, 3.5, 6.0):
        scan = 0
        for n in range(1, 200):
            if workflow_latency_s(P, n, DEMO_WORKFLOW, q=0.95) <= target:
                scan = n
        assert max_concurrency_under(P, target, calls=DEMO_WORKFLOW) == scan
    assert max_concurrency_under(P, 0.1, 300, 40) == 0


def test_replicas_needed_is_the_smallest_sufficient_count() -> None:
    replicas = replicas_needed(P, 200, 2.0, DEMO_WORKFLOW)
    assert replicas is not None
    enough = dataclasses.replace(P, replicas=replicas)
    fewer = dataclasses.replace(P, replicas=replicas - 1)
    assert workflow_latency_s(enough, 200, DEMO_WORKFLOW, q=0.95) <= 2.0
    assert workflow_latency_s(fewer, 200, DEMO_WORKFLOW, q=0.95) > 2.0
    assert replicas_needed(P, 10, 0.1, DEMO_WORKFLOW) is None


def test_default_parameters_fit_the_demo() -> None:
    params = params_for(LatencySettings(), "meta/llama-3.3-70b-instruct")
    assert 0.3 <= workflow_latency_s(params, 1, DEMO_WORKFLOW) <= 0.6
    assert 10 <= max_concurrency_under(params, 2.0, calls=DEMO_WORKFLOW) < 20


def test_per_model_overrides_and_fallbacks() -> None:
    settings = LatencySettings.model_validate({"models": {"base/m-1b": {"max_batch": 4, "replicas": 2}}})
    assert params_for(settings, "ns/lora@cust-1", "base/m-1b").max_batch == 4
    assert params_for(settings, "other").max_batch == 16
    with pytest.raises(ValueError):
        LatencyParams(max_batch=0)


# The scheduler below runs on a simulated clock (tests/support/virtual_clock.py): its sleeps take no real
# time and every timing is exact, however busy the machine is.


async def _timed(work: Awaitable[T]) -> tuple[T, float]:
    """``work``'s result and how much (simulated) loop time it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await work
    return result, loop.time() - started


def test_zero_time_scale_answers_at_once() -> None:
    scheduler = BatchScheduler(0, lambda _: P)
    timing, took = run_simulated(_timed(scheduler.serve("m", 300, 40)))
    assert took == 0
    assert timing.total_s == pytest.approx(service_time_s(P, 1, 300, 40))


def test_batching_slows_decoding_and_fifo_queues_beyond_max_batch() -> None:
    # One slot: three simultaneous requests run one after another, in arrival order.
    params = LatencyParams(overhead_s=0.0, prefill_s_per_token=0.0, decode_s_per_token=0.01,
                           decode_s_per_token_per_request=0.0, max_batch=1, replicas=1)  # fmt: skip
    scheduler = BatchScheduler(1.0, lambda _: params)

    async def three() -> list[Timing]:
        return list(await asyncio.gather(*(scheduler.serve("m", 0, 3) for _ in range(3))))

    timings, took = run_simulated(_timed(three()))
    assert [t.queue_s for t in timings] == pytest.approx([0.0, 0.03, 0.06], abs=1e-9)
    assert [t.decode_s for t in timings] == pytest.approx([0.03] * 3, abs=1e-9)
    assert took == pytest.approx(0.09, abs=1e-9)
    assert scheduler.load("m") == {"running": [0], "queued": 0}

    # A batch of four: each token takes d0 + d1 * 4, so each request lasts as long as four do together.
    batched = LatencyParams(overhead_s=0.0, prefill_s_per_token=0.0, decode_s_per_token=0.0,
                            decode_s_per_token_per_request=0.005, max_batch=8, replicas=1)  # fmt: skip
    scheduler = BatchScheduler(1.0, lambda _: batched)

    async def four() -> list[Timing]:
        return list(await asyncio.gather(*(scheduler.serve("m", 0, 4) for _ in range(4))))

    for timing in run_simulated(four()):
        assert timing.queue_s == 0
        assert timing.decode_s == pytest.approx(4 * 0.005 * 4, abs=1e-9)


def test_a_cancelled_request_frees_its_slot() -> None:
    params = LatencyParams(overhead_s=0.0, prefill_s_per_token=0.0, decode_s_per_token=0.05,
                           decode_s_per_token_per_request=0.0, max_batch=1, replicas=1)  # fmt: skip
    scheduler = BatchScheduler(1.0, lambda _: params)

    async def scenario() -> Timing:
        first = asyncio.create_task(scheduler.serve("m", 0, 100))
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(scheduler.serve("m", 0, 100))
        await asyncio.sleep(0.01)
        assert scheduler.load("m") == {"running": [1], "queued": 1}
        queued.cancel()
        first.cancel()
        for task in (first, queued):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert scheduler.load("m") == {"running": [0], "queued": 0}
        return await scheduler.serve("m", 0, 1)

    timing = run_simulated(scenario())
    assert timing.queue_s == 0 and timing.decode_s == pytest.approx(0.05, abs=1e-9)


def test_requests_spread_over_replicas() -> None:
    params = LatencyParams(overhead_s=0.0, prefill_s_per_token=0.0, decode_s_per_token=0.01,
                           decode_s_per_token_per_request=0.0, max_batch=1, replicas=2)  # fmt: skip
    scheduler = BatchScheduler(1.0, lambda _: params)

    async def two() -> list[Timing]:
        return list(await asyncio.gather(*(scheduler.serve("m", 0, 2) for _ in range(2))))

    timings = run_simulated(two())
    assert sorted(t.replica for t in timings) == [0, 1]
    assert all(t.queue_s == 0 for t in timings)
