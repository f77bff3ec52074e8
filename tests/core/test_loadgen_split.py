"""A level split over several generators: the exact merge, the shares, the common start, lateness per generator,
and one small real run with generator processes against a loopback agent."""

from __future__ import annotations

import asyncio
import functools
import json
import random
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from fastapi import FastAPI, Request

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.scaling.inputs import DEFAULT_INPUTS
from agent_flywheel.scaling.loadgen.generator import GeneratorSetup, run_share, wait_until
from agent_flywheel.scaling.loadgen.histogram import LatencyHistogram
from agent_flywheel.scaling.loadgen.processes import GeneratorError, GeneratorProcesses, start_time
from agent_flywheel.scaling.loadgen.requests import RequestResult, make_client, template_sender
from agent_flywheel.scaling.loadgen.runs import (
    LevelRun,
    RequestRecord,
    latency_histogram,
    poisson_schedule,
    run_closed_level,
    run_open_level,
)
from agent_flywheel.scaling.loadgen.shares import SEED_STRIDE, GeneratorShare, apportion, split_level
from agent_flywheel.scaling.loadgen.summaries import summarize_level
from agent_flywheel.scaling.loadgen.sweep import SweepResult, run_split_sweep
from agent_flywheel.scaling.loadgen.template import build_template
from agent_flywheel.scaling.loadgen.tracecontext import new_trace_context
from agent_flywheel.scaling.sweep_run import run_generators
from simulators.threaded import ThreadedServer

# --------------------------------------------------------------------------------------------------
# The exact merge
# --------------------------------------------------------------------------------------------------


def _as_json(h: LatencyHistogram) -> str:
    return json.dumps(h.to_dict(), sort_keys=True)


def test_merging_the_histograms_of_split_samples_is_bit_for_bit_the_histogram_of_all_samples() -> None:
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.lognormal(np.log(0.9), 0.5, 40_000), rng.uniform(0, 1e-4, 300), [0.0, 37.25]])
    rng.shuffle(values)
    whole = LatencyHistogram().record_many(values)
    # uneven parts, each shipped as JSON (as a generator process sends it), merged in two different orders
    cuts = sorted(rng.choice(np.arange(1, len(values)), size=6, replace=False))
    shipped = [
        json.loads(json.dumps(LatencyHistogram().record_many(part).to_dict())) for part in np.split(values, cuts)
    ]
    forward = LatencyHistogram.merged(LatencyHistogram.from_dict(d) for d in shipped)
    backward = LatencyHistogram.merged(LatencyHistogram.from_dict(d) for d in reversed(shipped))
    assert _as_json(forward) == _as_json(backward) == _as_json(whole)
    assert forward.count == len(values) and forward.mean_s == whole.mean_s
    for q in (0, 50, 90, 95, 99, 99.9, 100):
        assert forward.percentile(q) == whole.percentile(q)


def test_averaging_percentiles_is_not_what_the_merge_does() -> None:
    """Why the merge adds buckets: the mean of two generators' p95 is not the p95 of their requests."""
    fast = LatencyHistogram().record_many([0.1] * 95 + [0.2] * 5)
    slow = LatencyHistogram().record_many([1.0] * 100)
    merged = LatencyHistogram.merged([fast, slow])
    assert merged.percentile(95) == pytest.approx(1.0, rel=0.01)
    assert ((fast.percentile(95) or 0) + (slow.percentile(95) or 0)) / 2 == pytest.approx(0.55, rel=0.01)


# --------------------------------------------------------------------------------------------------
# The shares
# --------------------------------------------------------------------------------------------------


def test_apportion_adds_up_exactly_and_stays_within_one_of_the_exact_share() -> None:
    rnd = random.Random(3)
    for _ in range(500):
        weights = [rnd.choice([0.0, 1.0, 2.0, 3.5]) for _ in range(rnd.randint(1, 7))]
        if sum(weights) == 0:
            continue
        total = rnd.randint(0, 10_000)
        counts = apportion(total, weights)
        assert sum(counts) == total
        for count, w in zip(counts, weights, strict=True):
            assert abs(count - total * w / sum(weights)) < 1
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]  # ties go to the earlier weight


def test_a_closed_loop_level_is_split_by_users_and_its_requests_in_proportion() -> None:
    shares = split_level("closed", 10, 64, 4, 3, level=2, pass_index=1, start_at=1234.5)
    assert [s.users for s in shares] == [4, 3, 3]
    assert sum(s.requests for s in shares) == 64 and sum(s.warmup_requests for s in shares) == 4
    assert [s.requests for s in shares] == [26, 19, 19]  # one each, the other 61 in proportion 4:3:3
    assert {(s.concurrency, s.rate_rps, s.level, s.pass_index, s.generators) for s in shares} == {(10, None, 2, 1, 3)}
    assert [s.generator for s in shares] == [0, 1, 2] and [s.share for s in shares] == [4.0, 3.0, 3.0]
    # fewer users (or measured requests) than generators: the surplus generators are left out
    assert [s.users for s in split_level("closed", 2, 64, 0, 4, level=0, pass_index=0, start_at=0.0)] == [1, 1]
    assert len(split_level("closed", 8, 3, 0, 4, level=0, pass_index=0, start_at=0.0)) == 3
    with pytest.raises(ValueError):
        split_level("closed", 2.5, 10, 0, 2, level=0, pass_index=0, start_at=0.0)


def test_an_open_loop_level_is_split_by_rate_with_a_seed_per_generator() -> None:
    shares = split_level("open", 90.0, 100, 5, 4, level=0, pass_index=0, start_at=7.0, seed=11)
    assert [s.share_rate_rps for s in shares] == [22.5] * 4 and sum(s.share for s in shares) == 90.0
    assert [s.requests for s in shares] == [25] * 4 and sum(s.warmup_requests for s in shares) == 5
    assert [s.seed for s in shares] == [11 + g * SEED_STRIDE for g in range(4)]  # generator 0 keeps the seed
    assert all(s.users is None and s.rate_rps == 90.0 for s in shares)
    # superposition: the generators' schedules together arrive at the level's rate
    together = np.sort(np.concatenate([poisson_schedule(s.share, 20_000, s.seed) for s in shares]))
    horizon = min(poisson_schedule(s.share, 20_000, s.seed)[-1] for s in shares)
    assert np.sum(together <= horizon) / horizon == pytest.approx(90.0, rel=0.02)


def test_a_share_survives_the_trip_to_a_generator() -> None:
    share = split_level("open", 30.0, 10, 2, 2, level=3, pass_index=2, start_at=99.25, seed=4)[1]
    assert GeneratorShare.from_dict(json.loads(json.dumps(share.to_dict()))) == share


# --------------------------------------------------------------------------------------------------
# The common start
# --------------------------------------------------------------------------------------------------


class FakeClock:
    """Epoch seconds that move only when the code under test sleeps (or the test says so)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_a_generator_waits_for_the_common_start_and_says_how_late_it_was() -> None:
    early = FakeClock(1000.0)
    assert await wait_until(1002.5, early, early.sleep) == 0.0
    assert early.slept == [2.5] and early.now == 1002.5
    late = FakeClock(1003.0)
    assert await wait_until(1002.5, late, late.sleep) == 0.5
    assert late.slept == []


async def test_run_share_starts_at_the_share_start_time_and_labels_the_run() -> None:
    sent: list[int] = []

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        sent.append(i)
        return RequestResult(ok=True, latency_s=0.001)

    clock = FakeClock(500.0)
    share = split_level("closed", 5, 9, 1, 2, level=1, pass_index=0, start_at=503.0)[1]
    async with make_client("http://agent.test") as client:
        run = await run_share(send, client, share, timeout_s=5.0, clock=clock, sleep=clock.sleep)
    assert clock.slept == [3.0] and run.start_late_s == 0.0
    assert (run.concurrency, run.generator, run.generators, run.share) == (5, 1, 2, 2.0)
    assert len(run.records) == share.requests == 4 and min(r.index for r in run.records) == share.warmup_requests


def test_every_generator_of_a_level_pass_gets_the_same_start_time() -> None:
    handed: list[list[GeneratorShare]] = []
    starts = iter([100.0, 200.0, 300.0, 400.0])

    def drive(shares: list[GeneratorShare]) -> list[LevelRun]:
        handed.append(list(shares))
        return [_run(s.generator, s.pass_index, [0.0] * s.requests, share=s) for s in shares]

    cfg = LoadSweepConfig(concurrencies=[2, 6], arrival_rates=[], num_passes=2, requests_per_level=12)
    result = run_split_sweep(drive, cfg, 3, lambda: next(starts))
    assert [[s.start_at for s in level] for level in handed] == [[100.0] * 2, [200.0] * 3, [300.0] * 2, [400.0] * 3]
    assert [(lv[0].concurrency, lv[0].pass_index) for lv in handed] == [(2, 0), (6, 0), (2, 1), (6, 1)]
    assert [s.requests for s in result.summaries()] == [24, 24]


# --------------------------------------------------------------------------------------------------
# Lateness, overhead and windows, per generator and in total
# --------------------------------------------------------------------------------------------------


def _run(
    generator: int,
    pass_index: int,
    lateness: list[float],
    *,
    share: GeneratorShare | None = None,
    started_at: float = 0.0,
    cpu_s: float = 0.1,
    wall_s: float = 1.0,
    lags: list[float] | None = None,
) -> LevelRun:
    """A closed-loop run of generator ``generator`` whose requests went ``lateness`` seconds late, 0.5 s each."""
    records = [
        RequestRecord(i, 0.1 * i, 0.1 * i + late, 0.5, RequestResult(ok=True, trace=new_trace_context()))
        for i, late in enumerate(lateness)
    ]
    return LevelRun(
        "closed",
        share.level if share else 0,
        pass_index,
        share.concurrency if share else 8,
        None,
        records,
        wall_s,
        cpu_s,
        lags or [0.001],
        0.02,
        started_at=started_at,
        generator=generator,
        generators=share.generators if share else 2,
        share=share.share if share else 4.0,
        workflow=latency_histogram(records),
    )


def test_lateness_is_added_up_over_generators_and_passes_and_named_per_generator() -> None:
    runs = [
        _run(0, 0, [0.0] * 50, started_at=10.0),
        _run(1, 0, [0.0] * 30 + [0.05] * 20, started_at=10.2, cpu_s=0.95, lags=[0.08] * 10),
        _run(0, 1, [0.0] * 50, started_at=50.0),
        _run(1, 1, [0.0] * 40 + [0.05] * 10, started_at=50.0, cpu_s=0.95, lags=[0.08] * 10),
    ]
    s = summarize_level(runs)
    assert s.requests == 200 and s.passes == 2 and s.late_share == 30 / 200
    g0, g1 = s.generators
    assert (g0.requests, g0.late_share, g1.requests, g1.late_share) == (100, 0.0, 100, 0.3)
    assert g1.cpu_per_request_s == pytest.approx(1.9 / 100) and g1.cpu_share == pytest.approx(0.95)
    assert s.client_cpu_per_request_s == pytest.approx(2.1 / 200)
    # the warning names generator 1, why it and not the server set the pace, and leaves generator 0 alone
    named = [w for w in s.warnings if "generator 1 of 2" in w]
    assert len(named) == 1 and "30.0% of its requests sent late" in named[0] and "80 ms" in named[0]
    assert "95% of a CPU core" in named[0] and not any("generator 0" in w for w in s.warnings)
    # throughput: per pass, the generators' windows on their common clock (the union, not the sum)
    first_pass = 10.2 + 4.9 + 0.05 + 0.5 - 10.0  # generator 1 started later and ended last
    second_pass = 4.9 + 0.05 + 0.5
    assert s.throughput_rps == pytest.approx(200 / (first_pass + second_pass))
    row = s.to_row()
    assert row["generators"] == 2 and row["late_share_by_generator"] == "0=0.000000;1=0.300000"
    assert [g["late_share"] for g in s.to_dict()["generators"]] == [0.0, 0.3]


def test_a_generator_that_started_late_is_named() -> None:
    on_time = _run(0, 0, [0.0] * 5)
    late = _run(1, 0, [0.0] * 5)
    late.start_late_s = 2.5
    warnings = summarize_level([on_time, late]).warnings
    assert any("generator 1 of 2 started 2.5 s after the common start time" in w for w in warnings)


def test_a_generators_run_survives_the_trip_back_and_merges_as_its_records_would() -> None:
    runs = [
        _run(0, 0, [0.0, 0.03, 0.0], started_at=5.0),
        _run(1, 0, [0.0, 0.0, 0.0, 0.07], started_at=5.1),
    ]
    runs[1].records[2].result = RequestResult(ok=False, error_kind="http_503", status_code=503)
    runs[1].workflow = latency_histogram(runs[1].records)
    back = [LevelRun.from_dict(json.loads(json.dumps(r.to_dict()))) for r in runs]
    for before, after in zip(runs, back, strict=True):
        assert after.workflow == before.workflow
        assert [r.to_row() for r in after.records] == [r.to_row() for r in before.records]
        assert (after.started_at, after.generator, after.share) == (before.started_at, before.generator, before.share)
    merged, direct = summarize_level(back), summarize_level(runs)
    assert merged.to_row() == direct.to_row()
    assert merged.workflow == LatencyHistogram().record_many(
        r.latency_s for run in runs for r in run.records if r.result.ok
    )
    assert merged.error_kinds == {"http_503": 1}
    frame = SweepResult(back).requests_frame()
    assert frame["sent_s"].min() == 0.0 and frame["sent_s"].max() == pytest.approx(0.1 + 0.3 + 0.07)
    assert frame.groupby("generator").size().to_dict() == {0: 3, 1: 4}


# --------------------------------------------------------------------------------------------------
# Holding the load until every generator is done
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["closed", "open"])
async def test_a_held_generator_keeps_its_load_on_until_released(loop: str) -> None:
    sent: list[int] = []
    measured_done = asyncio.Event()

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        sent.append(i)
        await asyncio.sleep(0)
        return RequestResult(ok=True, latency_s=0.001)

    async def hold() -> None:
        measured_done.set()
        during_hold = len(sent)
        # the other generators are still measuring, for longer than any precomputed schedule lasts (a generous
        # bound fails the test instead of hanging it when the load stops)
        async with asyncio.timeout(300):
            while len(sent) < during_hold + 100:
                await asyncio.sleep(0.001)

    async with make_client("http://agent.test") as client:
        if loop == "closed":
            run = await run_closed_level(send, client, 3, 10, warmup_requests=2, hold=hold)
        else:
            run = await run_open_level(send, client, 2000.0, 10, warmup_requests=2, seed=1, hold=hold)
    assert measured_done.is_set()
    assert [r.index for r in run.records] == list(range(2, 12))
    assert run.excluded_requests >= 2 + 100  # the warm-up, and what was sent while held
    assert len(sent) == len(run.records) + run.excluded_requests


# --------------------------------------------------------------------------------------------------
# A real run: generator processes against a loopback agent
# --------------------------------------------------------------------------------------------------


class StubAgent:
    """The demo agent's request shape on loopback: answers at once, remembers every traceparent it saw."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        self.app = FastAPI()
        self.app.add_api_route("/v1/chat", self.chat, methods=["POST"])

    async def chat(self, request: Request) -> dict[str, str]:
        self.traceparents.append(request.headers["traceparent"])
        return {"reply": "ok"}


@pytest.fixture()
def stub_agent() -> Iterator[tuple[StubAgent, str]]:
    agent = StubAgent()
    server = ThreadedServer(agent.app).start(timeout_s=60.0)
    try:
        yield agent, server.url
    finally:
        server.stop()


def _setup(url: str) -> GeneratorSetup:
    return GeneratorSetup(functools.partial(template_sender, build_template("demo"), DEFAULT_INPUTS), url, 10.0)


@pytest.mark.integration
def test_generator_processes_split_every_level_and_their_runs_merge_exactly(
    stub_agent: tuple[StubAgent, str],
) -> None:
    agent, url = stub_agent
    cfg = LoadSweepConfig(
        concurrencies=[3], arrival_rates=[40.0], num_passes=2, requests_per_level=12, warmup_requests=2
    )
    starts: list[float] = []

    def start() -> float:
        starts.append(start_time())
        return starts[-1]

    with GeneratorProcesses(_setup(url), 2, biggest_share=2) as pool:
        result = run_split_sweep(pool.drive, cfg, 2, start)
    assert len(result.runs) == 8 and len(starts) == 4  # 2 levels x 2 passes, 2 generators each
    for run in result.runs:  # each generator waited for its level-pass's start time, handed to both
        assert run.generators == 2 and run.started_at >= starts[2 * run.pass_index + (run.mode == "open")]
    closed = [r for r in result.runs if r.mode == "closed"]
    assert sorted((r.pass_index, r.generator, r.share, len(r.records)) for r in closed) == [
        (0, 0, 2.0, 8),
        (0, 1, 1.0, 4),
        (1, 0, 2.0, 8),
        (1, 1, 1.0, 4),
    ]
    summaries = {s.mode: s for s in result.summaries()}
    for s in summaries.values():
        assert s.requests == 24 and s.ok == 24 and s.passes == 2 and len(s.generators) == 2
        runs = [r for r in result.runs if r.mode == s.mode]
        assert s.workflow == LatencyHistogram().record_many(rec.latency_s for r in runs for rec in r.records)
    assert [g.share for g in summaries["open"].generators] == [20.0, 20.0]
    # every measured request's trace id reached the agent, once; the parent holds all of them for the spans
    seen = {tp.split("-")[1] for tp in agent.traceparents}
    measured = [rec.result.trace.trace_id for r in result.runs for rec in r.records if rec.result.trace]
    assert len(measured) == len(set(measured)) == 48 and set(measured) <= seen
    assert len(agent.traceparents) >= 48 + 2 * 2 * 2  # plus warm-up and cool-down requests


@pytest.mark.integration
def test_run_generators_splits_over_the_configured_processes(stub_agent: tuple[StubAgent, str]) -> None:
    _, url = stub_agent
    cfg = LoadSweepConfig(concurrencies=[4], num_passes=1, requests_per_level=8, warmup_requests=0, processes=2)
    result = run_generators(_setup(url), cfg)
    assert sorted((r.generator, r.share, len(r.records)) for r in result.runs) == [(0, 2.0, 4), (1, 2.0, 4)]


def test_a_generator_process_that_fails_is_named() -> None:
    broken = GeneratorSetup(functools.partial(template_sender, build_template("demo"), []), "http://127.0.0.1:9", 1.0)
    pool = GeneratorProcesses(broken, 2)
    with pytest.raises(GeneratorError, match="generator 0 failed: ValueError: inputs must not be empty"):
        pool.__enter__()
    assert pool._workers == []  # both processes stopped
