"""Load generation: HDR histogram maths, closed and open loop against an in-process fake agent, self-checks."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.loadgen import (
    LatencyHistogram,
    LevelRun,
    RequestResult,
    chat_sender,
    poisson_schedule,
    run_closed_level,
    run_open_level,
    run_sweep,
    summarize_level,
)
from agent_flywheel.sizing import SweepData, read_sweep_csv

# --------------------------------------------------------------------------------------------------
# Histogram
# --------------------------------------------------------------------------------------------------


def test_histogram_merge_is_exact() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(np.log(0.8), 0.6, 30_000)
    whole = LatencyHistogram().record_many(values)
    parts = [LatencyHistogram().record_many(chunk) for chunk in np.array_split(values, 3)]
    merged = LatencyHistogram.merged(parts)
    assert merged == whole
    assert merged.counts == whole.counts and merged.count == 30_000
    for q in (50, 90, 95, 99, 99.9):
        assert merged.percentile(q) == whole.percentile(q)
    # a worker's histogram survives the trip through JSON
    again = LatencyHistogram.from_dict(json.loads(json.dumps(parts[0].to_dict())))
    assert again == parts[0]


def test_histogram_percentiles_are_within_bucket_precision() -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.lognormal(np.log(0.05), 1.0, 20_000), rng.uniform(5, 60, 500)])
    h = LatencyHistogram().record_many(values)
    for q in (1, 25, 50, 90, 95, 99, 99.9):
        exact = float(np.percentile(values, q, method="inverted_cdf"))  # nearest rank, as the histogram reads
        got = h.percentile(q)
        assert got is not None
        assert abs(got - exact) <= exact * (1 / 256) + 1e-6, (q, got, exact)  # half a bucket: 0.39 %
    assert h.percentile(0) == values.min() and h.percentile(100) == values.max()
    assert h.mean_s == pytest.approx(values.mean())


def test_histogram_buckets_are_contiguous_and_contain_their_values() -> None:
    h = LatencyHistogram(sub_bucket_bits=4)
    rng = np.random.default_rng(3)
    for v in rng.lognormal(0, 3, 2000):
        lo, hi = h.bucket_bounds_s(h._index(int(v / h.unit_s)))
        assert lo <= int(v / h.unit_s) * h.unit_s < hi
    for i in range(1, 200):
        assert h.bucket_bounds_s(i)[0] == pytest.approx(h.bucket_bounds_s(i - 1)[1])


def test_histogram_refuses_bad_values_and_layouts() -> None:
    h = LatencyHistogram()
    for bad in (math.nan, math.inf, -0.1):
        with pytest.raises(ValueError):
            h.record(bad)
    with pytest.raises(ValueError):
        h.merge(LatencyHistogram(sub_bucket_bits=6))
    assert h.percentile(95) is None


def test_poisson_schedule_has_the_right_rate() -> None:
    times = poisson_schedule(50.0, 20_000, seed=7)
    assert times[0] == 0 and np.all(np.diff(times) >= 0)
    gaps = np.diff(times)
    assert gaps.mean() == pytest.approx(1 / 50.0, rel=0.03)
    assert gaps.std() == pytest.approx(1 / 50.0, rel=0.05)  # exponential: std = mean
    assert np.array_equal(times, poisson_schedule(50.0, 20_000, seed=7))


# --------------------------------------------------------------------------------------------------
# A fake agent: `servers` parallel slots, `service_s` per request, errors and hangs on chosen requests
# --------------------------------------------------------------------------------------------------


class FakeAgent:
    def __init__(self, servers: int = 2, service_s: float = 0.01, fail_every: int = 0, hang: set[int] | None = None):
        self.slots = asyncio.Semaphore(servers)
        self.service_s = service_s
        self.fail_every = fail_every
        self.hang = hang or set()
        self.seen = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        i = int(body["session_id"].split("-")[1])
        self.seen += 1
        if i in self.hang:
            await asyncio.sleep(5)
        if self.fail_every and i % self.fail_every == 0:
            return httpx.Response(500, json={"detail": "boom"})
        async with self.slots:
            await asyncio.sleep(self.service_s)
        calls = [
            {"model": "m", "latency_s": self.service_s * 0.4, "input_tokens": 10, "output_tokens": 5},
            {"model": "m", "latency_s": self.service_s * 0.5, "input_tokens": 12, "output_tokens": 3},
        ]
        return httpx.Response(200, json={"reply": "ok", "llm_calls": calls})


def _client(agent: FakeAgent) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(agent), base_url="http://agent.test")


async def test_closed_loop_queues_beyond_capacity() -> None:
    agent = FakeAgent(servers=2, service_s=0.01)
    send = chat_sender()
    async with _client(agent) as client:
        one = await run_closed_level(send, client, 1, 20, warmup_requests=2)
        eight = await run_closed_level(send, client, 8, 40, warmup_requests=4)
    s1, s8 = summarize_level([one]), summarize_level([eight])
    assert s1.requests == 20 and s8.requests == 40 and s1.error_rate == 0
    assert all(r.index >= 2 for r in one.records)  # warm-up excluded
    p1, p8 = s1.workflow.percentile(50), s8.workflow.percentile(50)
    assert p1 is not None and p8 is not None
    assert p8 > 2.5 * p1  # 8 users on 2 slots wait about 4 services
    assert s8.llm.count == 80  # two LLM calls per request, 0.004 s and 0.005 s
    assert s8.llm.percentile(50) == pytest.approx(0.004, rel=0.01)
    assert s8.llm.percentile(95) == pytest.approx(0.005, rel=0.01)
    assert s8.throughput_rps > 1.5 * s1.throughput_rps


async def test_errors_and_timeouts_are_counted_and_never_stop_the_run() -> None:
    agent = FakeAgent(servers=4, service_s=0.005, fail_every=5, hang={7, 13})
    async with _client(agent) as client:
        run = await run_closed_level(chat_sender(), client, 4, 30, warmup_requests=0, timeout_s=0.2)
    s = summarize_level([run])
    assert s.requests == 30
    assert s.error_kinds == {"http_500": 6, "timeout": 2}  # 0,5,...,25 fail; 7 and 13 hang past the timeout
    assert s.error_rate == pytest.approx(8 / 30)
    timeouts = [r for r in run.records if r.result.error_kind == "timeout"]
    assert all(0.19 < r.latency_s < 1.0 for r in timeouts)


async def test_send_function_exceptions_become_error_kinds() -> None:
    async def send(client: httpx.AsyncClient, i: int) -> RequestResult:
        if i % 2:
            raise httpx.ConnectError("refused")
        if i % 3 == 0:
            raise RuntimeError("bug in the adapter")
        return RequestResult(ok=True, latency_s=0.001, llm_latencies=[0.0005])

    async with httpx.AsyncClient() as client:
        run = await run_closed_level(send, client, 2, 12)
    s = summarize_level([run])
    assert s.error_kinds == {"connect_error": 6, "RuntimeError": 2}
    assert s.workflow.count == 4 and s.workflow.percentile(50) == pytest.approx(0.001, rel=0.01)


async def test_open_loop_follows_the_schedule_and_reports_lateness() -> None:
    agent = FakeAgent(servers=8, service_s=0.005)
    async with _client(agent) as client:
        run = await run_open_level(chat_sender(), client, 100.0, 40, warmup_requests=5, seed=3)
    assert len(run.records) == 40 and min(r.index for r in run.records) == 5
    intended = poisson_schedule(100.0, 90, seed=3)
    assert [r.intended_s for r in run.records] == pytest.approx(intended[5:45].tolist())
    s = summarize_level([run])
    assert s.error_rate == 0 and s.late_share < 0.5


async def test_a_blocked_event_loop_is_reported_as_a_generator_bottleneck() -> None:
    async def blocking_send(client: httpx.AsyncClient, i: int) -> RequestResult:
        time.sleep(0.02)  # synchronous work in the client: it starves the event loop
        return RequestResult(ok=True)

    async with httpx.AsyncClient() as client:
        run = await run_open_level(blocking_send, client, 200.0, 12, seed=1, late_threshold_s=0.01)
    s = summarize_level([run])
    assert s.late_share > 0.5
    assert any("could not keep up" in w for w in s.warnings)


async def test_sweep_table_summary_and_csv_round_trip(tmp_path: Path) -> None:
    agent = FakeAgent(servers=2, service_s=0.004)
    cfg = LoadSweepConfig(
        concurrencies=[1, 4], arrival_rates=[150.0], num_passes=2, requests_per_level=10, warmup_requests=2
    )
    seen: list[LevelRun] = []
    async with _client(agent) as client:
        sweep = await run_sweep(chat_sender(), client, cfg, on_run=seen.append)
    assert len(seen) == 6 and [r.pass_index for r in seen] == [0, 0, 0, 1, 1, 1]  # passes interleaved
    df = sweep.requests_frame()
    assert len(df) == 60 and df["request"].min() == 2
    assert set(df["concurrency"].dropna()) == {1, 4} and set(df["rate_rps"].dropna()) == {150.0}
    assert np.allclose(df["llm_latency_s"], 0.002)  # max of the two calls
    assert np.allclose(df["llm_latency_sum_s"], 0.0036)
    summary = sweep.summary_frame()
    assert len(summary) == 3 and set(summary["passes"]) == {2}
    assert {"workflow_p50_s", "workflow_p90_s", "workflow_p95_s", "workflow_p99_s", "llm_p95_s"} <= set(summary)
    # per-level histograms are the exact merge of the passes' histograms
    closed_1 = [r for r in sweep.runs if r.concurrency == 1]
    merged = summarize_level(closed_1).workflow
    direct = LatencyHistogram().record_many([rec.latency_s for r in closed_1 for rec in r.records])
    assert merged == direct
    path = sweep.to_csv(tmp_path / "sweep.csv")
    data = read_sweep_csv(path)
    assert [lv.concurrency for lv in data.levels] == [1.0, 4.0]  # open-loop rows are not sizing levels
    assert any("open-loop rows ignored" in n for n in data.notes)
    assert len(data.levels[0].workflow) == 2  # one sample array per pass
    per_call = SweepData.from_sweep(sweep)
    assert sum(len(p) for p in per_call.levels[1].llm) == 40  # every LLM call, two per request
    sweep.to_csv(tmp_path / "levels.csv", per="level")
    assert read_sweep_csv(tmp_path / "levels.csv").levels[1].workflow_p95_s is not None
