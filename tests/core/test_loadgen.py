"""Load generation: HDR histogram maths, closed and open loop against a fake agent on loopback, error kinds, self-checks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from agent_flywheel.config import LoadSweepConfig
from agent_flywheel.scaling.inputs import DEFAULT_INPUTS
from agent_flywheel.scaling.loadgen.histogram import LatencyHistogram
from agent_flywheel.scaling.loadgen.requests import (
    LlmCallTiming,
    RequestResult,
    SendFn,
    error_kind_of,
    make_client,
    template_sender,
)
from agent_flywheel.scaling.loadgen.runs import LevelRun, poisson_schedule, run_closed_level, run_open_level
from agent_flywheel.scaling.loadgen.spans import attach_llm_calls
from agent_flywheel.scaling.loadgen.summaries import summarize_level
from agent_flywheel.scaling.loadgen.sweep import SweepResult, run_sweep
from agent_flywheel.scaling.loadgen.template import build_template
from agent_flywheel.scaling.otlp.store import TraceStore
from agent_flywheel.scaling.sizing.sweeps import SweepData, read_sweep_csv
from simulators.threaded import free_port

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
# A fake agent: `servers` parallel slots, `service_s` per request, errors and hangs on chosen requests,
# served by aiohttp on a free loopback port. It continues the caller's trace: for every request it puts
# an OTLP document into `spans` (its entry span, and two LLM calls of 0.4 and 0.5 service times, models
# "m" and "n"), as an instrumented agent's exporter would; its answers say nothing about LLM calls.
# --------------------------------------------------------------------------------------------------


def _span(trace_id: str, span_id: str, parent: str, start_ns: int, end_ns: int, model: str | None) -> dict[str, Any]:
    attrs = [{"key": "openinference.span.kind", "value": {"stringValue": "LLM" if model else "AGENT"}}]
    if model:
        attrs += [
            {"key": "llm.model_name", "value": {"stringValue": model}},
            {"key": "llm.token_count.prompt", "value": {"intValue": "11"}},
            {"key": "llm.token_count.completion", "value": {"intValue": "4"}},
        ]
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": model or "agent",
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": attrs,
    }


class FakeAgent:
    def __init__(self, servers: int = 2, service_s: float = 0.01, fail_every: int = 0, hang: set[int] | None = None):
        self.slots = asyncio.Semaphore(servers)
        self.servers = servers
        self.service_s = service_s
        self.fail_every = fail_every
        self.hang = hang or set()
        self.seen = 0
        self.headers: list[str | None] = []
        self.traceparents: list[str] = []
        self.spans = TraceStore()

    async def __call__(self, request: web.Request) -> web.Response:
        body = await request.json()
        i = int(body["user_id"].rsplit("-", 1)[1])
        self.seen += 1
        self.headers.append(request.headers.get("Authorization"))
        self.traceparents.append(request.headers["traceparent"])
        if i in self.hang:
            await asyncio.sleep(5)
        if self.fail_every and i % self.fail_every == 0:
            return web.json_response({"detail": "boom"}, status=500)
        async with self.slots:
            await asyncio.sleep(self.service_s)
        _, trace_id, caller, _ = request.headers["traceparent"].split("-")
        t0, service_ns = time.time_ns(), round(self.service_s * 1e9)
        spans = [
            _span(trace_id, f"{i + 1:016x}", caller, t0, t0 + service_ns, None),
            _span(trace_id, f"{i + 1:08x}00000001", f"{i + 1:016x}", t0, t0 + service_ns * 4 // 10, "m"),
            _span(trace_id, f"{i + 1:08x}00000002", f"{i + 1:016x}", t0 + service_ns // 2, t0 + service_ns, "n"),
        ]
        self.spans.add({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
        return web.json_response({"reply": "ok"})


def demo_sender(headers: dict[str, str] | None = None) -> SendFn:
    """The demo agent's request (``{"message", "user_id"}``, answer in ``reply``) with the built-in inputs."""
    return template_sender(build_template("demo"), DEFAULT_INPUTS, headers=headers)


@contextlib.asynccontextmanager
async def _serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], prefix: str = "", **client: Any
) -> AsyncIterator[aiohttp.ClientSession]:
    """The handler at ``<prefix>/v1/chat`` on loopback, and a generator client whose base URL ends in the prefix."""

    async def route(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    app = web.Application()
    app.router.add_post(f"{prefix}/v1/chat", route)
    async with TestServer(app) as server, make_client(str(server.make_url(prefix)), **client) as session:
        yield session


@pytest.mark.integration
async def test_closed_loop_queues_beyond_capacity() -> None:
    agent = InFlight(servers=2, service_s=0.01)
    send = demo_sender()
    async with _serve(agent) as client:
        one = await run_closed_level(send, client, 1, 20, warmup_requests=2)
        alone = agent.take_counts()
        eight = await run_closed_level(send, client, 8, 40, warmup_requests=4)
        crowd = agent.take_counts()
    match = attach_llm_calls(SweepResult([one, eight]), agent.spans.spans_of)
    assert (match.requests, match.with_spans, match.llm_calls) == (60, 60, 120)
    s1, s8 = summarize_level([one]), summarize_level([eight])
    assert s1.requests == 20 and s8.requests == 40 and s1.error_rate == 0
    assert all(r.index >= 2 for r in one.records)  # warm-up excluded
    p1, p8 = s1.workflow.percentile(50), s8.workflow.percentile(50)
    assert p1 is not None and p8 is not None
    # Counted by the agent, not timed: one user never overlaps itself; 8 users keep up to 8 requests in
    # flight (never more) on the 2 slots, so requests arrive to find both slots taken and wait.
    assert alone == {"peak": 1, "waited": 0, "served_at_once": 1}
    assert 2 < crowd["peak"] <= 8 and crowd["waited"] > 0 and crowd["served_at_once"] == 2
    assert s8.llm.count == 80  # two LLM calls per request (from the spans), 0.004 s and 0.005 s
    assert s8.llm.percentile(50) == pytest.approx(0.004, rel=0.01)
    assert s8.llm.percentile(95) == pytest.approx(0.005, rel=0.01)
    assert {m: h.count for m, h in s8.llm_by_model.items()} == {"m": 40, "n": 40}
    assert s8.llm_by_model["n"].percentile(95) == pytest.approx(0.005, rel=0.01)
    assert all(r.result.status_code == 200 and r.result.input_tokens == 22 for r in eight.records)
    # every request started a trace of its own, sampled, and its spans were found by that trace id
    trace_ids = [tp.split("-")[1] for tp in agent.traceparents]
    assert len(set(trace_ids)) == len(trace_ids) and all(tp.endswith("-01") for tp in agent.traceparents)
    assert {r.result.trace.trace_id for r in eight.records if r.result.trace} <= set(trace_ids)


@pytest.mark.integration
async def test_errors_and_timeouts_are_counted_and_never_stop_the_run() -> None:
    agent = FakeAgent(servers=4, service_s=0.005, fail_every=5, hang={7, 13})
    async with _serve(agent) as client:
        run = await run_closed_level(demo_sender(), client, 4, 30, warmup_requests=0, timeout_s=0.2)
    s = summarize_level([run])
    assert s.requests == 30
    assert s.error_kinds == {"http_500": 6, "timeout": 2}  # 0,5,...,25 fail; 7 and 13 hang past the timeout
    assert s.error_rate == pytest.approx(8 / 30)
    timeouts = [r for r in run.records if r.result.error_kind == "timeout"]
    assert all(r.latency_s >= 0.2 - 1e-3 for r in timeouts)  # never before the timeout
    assert {r.result.status_code for r in run.records if r.result.error_kind == "http_500"} == {500}


@pytest.mark.integration
async def test_the_client_keeps_the_base_path_sends_headers_and_does_not_queue_below_its_pool_size() -> None:
    # 150 users (more than aiohttp's default pool of 100) must all be in flight at once: the handler holds
    # every request until 150 are in, so a client that queues internally would fail them all with http_500.
    wanted = 150
    in_flight = 0
    everyone = asyncio.Event()
    agent = FakeAgent(servers=wanted, service_s=0.0)

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight
        in_flight += 1
        if in_flight >= wanted:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), timeout=60)
        except TimeoutError:
            return web.json_response({"in_flight": in_flight}, status=500)
        return await agent(request)

    send = demo_sender(headers={"Authorization": "Bearer load"})
    async with _serve(handler, prefix="/agents/support", max_connections=2 * wanted) as client:
        run = await run_closed_level(send, client, wanted, wanted, timeout_s=120)
    s = summarize_level([run])
    assert s.requests == wanted and s.error_kinds == {}, s.error_kinds
    assert agent.headers == ["Bearer load"] * wanted


def test_error_kind_of_gives_aiohttp_failures_stable_names() -> None:
    info = aiohttp.RequestInfo(URL("http://agent.test/v1/chat"), "POST", CIMultiDictProxy(CIMultiDict()))
    assert error_kind_of(TimeoutError()) == "timeout"
    assert error_kind_of(aiohttp.ServerTimeoutError("read")) == "timeout"
    assert error_kind_of(aiohttp.ConnectionTimeoutError("connect")) == "timeout"
    assert error_kind_of(aiohttp.ClientResponseError(info, (), status=503)) == "http_503"
    assert error_kind_of(aiohttp.ContentTypeError(info, (), status=200)) == "bad_response"
    assert error_kind_of(aiohttp.ServerDisconnectedError()) == "transport_error"
    assert error_kind_of(aiohttp.ClientPayloadError("truncated")) == "transport_error"
    assert error_kind_of(aiohttp.ClientOSError(104, "reset")) == "transport_error"
    assert error_kind_of(RuntimeError("bug in the adapter")) == "RuntimeError"


async def _raw_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A bare HTTP/1.1 server on loopback that misbehaves on purpose, by path."""
    head = await reader.readuntil(b"\r\n\r\n")
    path = head.split(b" ", 2)[1]
    if path == b"/slow":
        await reader.read()  # until the client gives up and closes the connection
    elif path == b"/status/503":
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    elif path == b"/garbage":
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    elif path == b"/ok":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    # /hangup: close without an answer
    await writer.drain()
    writer.close()


@pytest.mark.integration
async def test_failures_over_real_connections_get_stable_error_kinds() -> None:
    paths = ["/ok", "/hangup", "/slow", "/status/503", "/garbage"]

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        async with client.get(paths[i % len(paths)]) as response:
            response.raise_for_status()
            await response.read()
            return RequestResult(ok=True, status_code=response.status)

    server = await asyncio.start_server(_raw_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # the client's own per-request timeout (0.2 s) fires well before the level's (5 s)
        async with make_client(f"http://127.0.0.1:{port}", timeout_s=0.2) as client:
            run = await run_closed_level(send, client, 2, 10, timeout_s=5)
    finally:
        server.close()
        await server.wait_closed()
    s = summarize_level([run])
    assert s.ok == 2 and s.error_kinds == {"transport_error": 4, "timeout": 2, "http_503": 2}  # hang-up, garbage
    assert {r.index % 5: r.result.status_code for r in run.records} == {0: 200, 1: None, 2: None, 3: 503, 4: None}
    # the client's timeout, not the level's: it ended them before the level's 5 s could
    assert all(0.2 - 1e-3 <= r.latency_s < 5.0 for r in run.records if r.result.error_kind == "timeout")
    async with make_client(f"http://127.0.0.1:{free_port()}") as nobody:  # nothing listens there
        refused = await run_closed_level(demo_sender(), nobody, 1, 3)
    assert summarize_level([refused]).error_kinds == {"connect_error": 3}


async def test_send_function_exceptions_become_error_kinds() -> None:
    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        if i % 2:
            raise aiohttp.ServerDisconnectedError()
        if i % 3 == 0:
            raise RuntimeError("bug in the adapter")
        return RequestResult(ok=True, latency_s=0.001, llm_calls=[LlmCallTiming("m", 0.0005)])

    async with make_client("http://agent.test") as client:
        run = await run_closed_level(send, client, 2, 12)
    s = summarize_level([run])
    assert s.error_kinds == {"transport_error": 6, "RuntimeError": 2}
    assert s.workflow.count == 4 and s.workflow.percentile(50) == pytest.approx(0.001, rel=0.01)


@pytest.mark.integration
async def test_open_loop_follows_the_schedule_and_reports_lateness() -> None:
    agent = FakeAgent(servers=8, service_s=0.005)
    async with _serve(agent) as client:
        run = await run_open_level(demo_sender(), client, 100.0, 40, warmup_requests=5, seed=3)
    assert len(run.records) == 40 and min(r.index for r in run.records) == 5
    intended = poisson_schedule(100.0, 90, seed=3)
    assert [r.intended_s for r in run.records] == pytest.approx(intended[5:45].tolist())
    assert all(r.sent_s >= r.intended_s - 1e-3 for r in run.records)  # never sent before its time
    assert summarize_level([run]).error_rate == 0


class CountingSlots(asyncio.Semaphore):
    """A semaphore that remembers the most holders it had at once."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.held = self.most = 0

    async def __aenter__(self) -> None:
        await self.acquire()
        self.held += 1
        self.most = max(self.most, self.held)

    async def __aexit__(self, *exc: object) -> None:
        self.held -= 1
        self.release()


class InFlight(FakeAgent):
    """The fake agent, counting the requests it is still working on (a client going away does not stop one);
    and since the last :meth:`take_counts`, the most it held at once, how many arrived to find every slot
    taken, and the most it served at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slots = CountingSlots(self.servers)
        self.in_flight = self.peak = self.waited = 0

    def take_counts(self) -> dict[str, int]:
        counts = {"peak": self.peak, "waited": self.waited, "served_at_once": self.slots.most}
        self.peak = self.waited = self.slots.most = 0
        return counts

    async def __call__(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.waited += self.in_flight > self.servers
        try:
            return await super().__call__(request)
        finally:
            self.in_flight -= 1


@pytest.mark.integration
@pytest.mark.parametrize("loop", ["closed", "open"])
async def test_a_level_ends_with_nothing_of_it_left_on_the_server(loop: str) -> None:
    """Cool-down requests still running would slow the next level's first measured requests."""
    agent = InFlight(servers=2, service_s=0.1)  # 4 users on 2 slots: two requests wait while two are served
    async with _serve(agent) as client:
        if loop == "closed":
            run = await run_closed_level(demo_sender(), client, 4, 6)
        else:
            run = await run_open_level(demo_sender(), client, 40.0, 6, seed=1)
        assert agent.in_flight == 0
    assert len(run.records) == 6 and run.excluded_requests > 0  # there were cool-down requests, and they finished


async def test_objects_from_before_a_level_are_frozen_out_of_the_garbage_collector_during_it() -> None:
    frozen: list[int] = []

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        frozen.append(gc.get_freeze_count())
        return RequestResult(ok=True)

    assert gc.get_freeze_count() == 0
    async with make_client("http://agent.test") as client:
        await run_closed_level(send, client, 2, 4)
        await run_open_level(send, client, 500.0, 4, seed=1)
        assert gc.get_freeze_count() == 0  # unfrozen after each level
        gc.disable()
        try:
            await run_closed_level(send, client, 1, 2)  # a collector someone turned off is left alone
        finally:
            gc.enable()
    assert len(frozen) >= 10 and min(frozen[:8]) > 0 and frozen[-2:] == [0, 0]


async def test_a_blocked_event_loop_is_reported_as_a_generator_bottleneck() -> None:
    async def blocking_send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        time.sleep(0.02)  # synchronous work in the client: it starves the event loop
        return RequestResult(ok=True)

    async with make_client("http://agent.test") as client:
        run = await run_open_level(blocking_send, client, 200.0, 12, seed=1, late_threshold_s=0.01)
    s = summarize_level([run])
    assert s.late_share > 0.5
    assert any("could not keep up" in w for w in s.warnings)


@pytest.mark.integration
async def test_sweep_table_summary_and_csv_round_trip(tmp_path: Path) -> None:
    agent = FakeAgent(servers=2, service_s=0.004)
    cfg = LoadSweepConfig(
        concurrencies=[1, 4], arrival_rates=[150.0], num_passes=2, requests_per_level=10, warmup_requests=2
    )
    seen: list[LevelRun] = []
    async with _serve(agent) as client:
        sweep = await run_sweep(demo_sender(), client, cfg, on_run=seen.append)
    attach_llm_calls(sweep, agent.spans.spans_of)
    assert len(seen) == 6 and [r.pass_index for r in seen] == [0, 0, 0, 1, 1, 1]  # passes interleaved
    df = sweep.requests_frame()
    assert len(df) == 60 and df["request"].min() == 2
    assert set(df["concurrency"].dropna()) == {1, 4} and set(df["rate_rps"].dropna()) == {150.0}
    assert np.allclose(df["llm_latency_s"], 0.002, rtol=1e-3)  # max of the two calls (span times: epoch ns)
    assert np.allclose(df["llm_latency_sum_s"], 0.0036, rtol=1e-3)
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
