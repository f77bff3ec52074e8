"""One pass of one load level: closed loop (virtual users without think time) or open loop (Poisson arrivals).

Each run measures itself beside the server: when every request was meant to go and when it went (lateness),
the client's CPU time and the event loop's lag, so a summary can tell when the client was the bottleneck.
A run is also what one generator of a level split over several (:mod:`.shares`) sends back: ``to_dict`` is
its JSON form, with the histogram of its latencies, so whoever merges adds bucket counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import numpy as np

from agent_flywheel.scaling.loadgen.histogram import LatencyHistogram
from agent_flywheel.scaling.loadgen.requests import RequestResult, SendFn, answered_status, error_kind_of
from agent_flywheel.scaling.loadgen.tracecontext import TraceContext

Mode = Literal["closed", "open"]
Hold = Callable[[], Awaitable[None]]

DEFAULT_LATE_THRESHOLD_S = 0.02


@dataclass
class RequestRecord:
    """One measured request: when it was meant to go, when it went, and what came back."""

    index: int
    intended_s: float
    sent_s: float
    latency_s: float
    result: RequestResult

    @property
    def lateness_s(self) -> float:
        """How long after its intended time the request actually went out."""
        return max(0.0, self.sent_s - self.intended_s)

    def to_row(self) -> list[Any]:
        """Compact JSON form (what a generator ships; the LLM calls are found from the spans by whoever merges)."""
        r = self.result
        trace = [r.trace.trace_id, r.trace.span_id] if r.trace else [None, None]
        return [self.index, self.intended_s, self.sent_s, self.latency_s, r.ok, r.error_kind, r.status_code, *trace]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RequestRecord:
        """Inverse of :meth:`to_row`."""
        index, intended, sent, latency, ok, error_kind, status, trace_id, span_id = row
        trace = TraceContext(trace_id, span_id) if trace_id else None
        result = RequestResult(bool(ok), latency, error_kind, status_code=status, trace=trace)
        return cls(int(index), float(intended), float(sent), float(latency), result)


def latency_histogram(records: Sequence[RequestRecord]) -> LatencyHistogram:
    """The histogram of the successful requests' latencies (failures are counted by kind, not timed)."""
    return LatencyHistogram().record_many(r.latency_s for r in records if r.result.ok)


@dataclass
class LevelRun:
    """One pass of one load level, or one generator's share of it: the measured requests and the self-measurement.

    ``concurrency`` and ``rate_rps`` are the level's; when the level was split over ``generators`` generators,
    this is generator ``generator``'s run and ``share`` its part (users, or requests per second). Request times
    are seconds from the run's start, which was ``started_at`` (epoch seconds), ``start_late_s`` after the
    start time the generators were given. ``workflow`` is the histogram of the successful requests' latencies.
    """

    mode: Mode
    level: int
    pass_index: int
    concurrency: int | None
    rate_rps: float | None
    records: list[RequestRecord]
    wall_s: float
    cpu_s: float
    loop_lags_s: list[float]
    late_threshold_s: float
    excluded_requests: int = 0
    started_at: float = 0.0
    generator: int = 0
    generators: int = 1
    share: float | None = None
    start_late_s: float = 0.0
    workflow: LatencyHistogram = field(kw_only=True)

    @property
    def window_s(self) -> float:
        """From the first measured send to the last measured completion: the throughput denominator."""
        span = self.span_s
        return span[1] - span[0] if span else 0.0

    @property
    def span_s(self) -> tuple[float, float] | None:
        """The first measured send and the last measured completion, in epoch seconds; None without records."""
        if not self.records:
            return None
        first = min(r.sent_s for r in self.records)
        last = max(r.sent_s + r.latency_s for r in self.records)
        return self.started_at + first, self.started_at + last

    def to_dict(self) -> dict[str, Any]:
        """JSON form: what a generator process or worker sends back to be merged."""
        return {
            "mode": self.mode,
            "level": self.level,
            "pass": self.pass_index,
            "concurrency": self.concurrency,
            "rate_rps": self.rate_rps,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "loop_lags_s": list(self.loop_lags_s),
            "late_threshold_s": self.late_threshold_s,
            "excluded_requests": self.excluded_requests,
            "started_at": self.started_at,
            "generator": self.generator,
            "generators": self.generators,
            "share": self.share,
            "start_late_s": self.start_late_s,
            "workflow": self.workflow.to_dict(),
            "records": [r.to_row() for r in self.records],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LevelRun:
        """Inverse of :meth:`to_dict`; the generator's histogram is kept as it sent it."""
        mode = data["mode"]
        if mode not in ("closed", "open"):
            raise ValueError(f"a generator's run: mode must be closed or open, got {mode!r}")
        return cls(
            mode=mode,
            level=int(data["level"]),
            pass_index=int(data["pass"]),
            concurrency=data["concurrency"],
            rate_rps=data["rate_rps"],
            records=[RequestRecord.from_row(row) for row in data["records"]],
            wall_s=float(data["wall_s"]),
            cpu_s=float(data["cpu_s"]),
            loop_lags_s=[float(v) for v in data["loop_lags_s"]],
            late_threshold_s=float(data["late_threshold_s"]),
            excluded_requests=int(data["excluded_requests"]),
            started_at=float(data["started_at"]),
            generator=int(data["generator"]),
            generators=int(data["generators"]),
            share=data["share"],
            start_late_s=float(data["start_late_s"]),
            workflow=LatencyHistogram.from_dict(data["workflow"]),
        )


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the objects that exist before a level out of the garbage collector's passes during it.

    Why: the first full collection in a fresh process walks every object the imports made (numpy, pandas,
    pydantic, aiohttp) and stops the event loop for 30-50 ms, which shows up as late sends and as latency
    (``bench/loadgen_bench.py``: 2-18 % late at 2,400-3,200/s from that one pause, none without it).
    Garbage is collected first; objects made during the level are still collected; the frozen ones go
    back to the oldest generation afterwards. Left alone when the collector is off or something else
    has frozen objects.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _loop_lag_ticker(lags: list[float], stop: asyncio.Event, interval_s: float) -> None:
    """Sleep ``interval_s`` in a loop and record how late each wake-up was: the event loop's lag."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(interval_s)
        lags.append(max(0.0, loop.time() - before - interval_s))


@contextlib.asynccontextmanager
async def _loop_lags(interval_s: float) -> AsyncIterator[list[float]]:
    """The event loop's lags while a level runs (a ticker every ``interval_s``), the heap frozen meanwhile."""
    lags: list[float] = []
    stop = asyncio.Event()
    with _frozen_heap():
        ticker = asyncio.create_task(_loop_lag_ticker(lags, stop, interval_s))
        try:
            yield lags
        finally:
            stop.set()
            await ticker


class _Measured:
    """The measured requests of a level, ``warmup_requests`` to ``warmup_requests + num_requests - 1``: recorded,
    the others (warm-up, cool-down) only counted; ``done`` is set when the last measured one returns."""

    def __init__(self, warmup_requests: int, num_requests: int) -> None:
        self.lo, self.hi = warmup_requests, warmup_requests + num_requests
        self.remaining = num_requests
        self.done = asyncio.Event()
        self.records: list[RequestRecord] = []
        self.excluded = 0

    def add(self, i: int, intended: float, sent: float, latency: float, result: RequestResult) -> None:
        """Record request ``i`` if it is a measured one, else count it as excluded."""
        if self.lo <= i < self.hi:
            self.records.append(RequestRecord(i, intended, sent, latency, result))
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()
        else:
            self.excluded += 1

    def level_run(
        self,
        mode: Mode,
        level: int,
        pass_index: int,
        concurrency: int | None,
        rate_rps: float | None,
        wall_s: float,
        cpu_s: float,
        lags: list[float],
        late_threshold_s: float,
        started_at: float,
    ) -> LevelRun:
        """The run (arguments in :class:`LevelRun`'s order), its records in request order."""
        self.records.sort(key=lambda r: r.index)
        return LevelRun(
            mode,
            level,
            pass_index,
            concurrency,
            rate_rps,
            self.records,
            wall_s,
            cpu_s,
            lags,
            late_threshold_s,
            self.excluded,
            started_at,
            workflow=latency_histogram(self.records),
        )


async def _call(send: SendFn, client: aiohttp.ClientSession, i: int, timeout_s: float) -> tuple[RequestResult, float]:
    """Run one request with a timeout; every failure becomes a result, never an exception."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):  # no extra task per request, unlike wait_for on 3.11
            result = await send(client, i)
    except TimeoutError:
        elapsed = time.perf_counter() - started
        return RequestResult(ok=False, latency_s=elapsed, error_kind="timeout"), elapsed
    except Exception as exc:  # a failed request is data, not a reason to stop the sweep
        elapsed = time.perf_counter() - started
        kind, status = error_kind_of(exc), answered_status(exc)
        return RequestResult(ok=False, latency_s=elapsed, error_kind=kind, status_code=status), elapsed
    elapsed = time.perf_counter() - started
    if result.ok is False and not result.error_kind:
        result.error_kind = "error"
    return result, (result.latency_s if result.latency_s is not None else elapsed)


async def _drain(tasks: Sequence[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the cool-down requests still in flight (see the module docstring)."""
    pending = [task for task in tasks if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


async def run_closed_level(
    send: SendFn,
    client: aiohttp.ClientSession,
    concurrency: int,
    num_requests: int,
    *,
    warmup_requests: int = 0,
    timeout_s: float = 30.0,
    level: int = 0,
    pass_index: int = 0,
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
    lag_interval_s: float = 0.01,
    hold: Hold | None = None,
) -> LevelRun:
    """Closed loop: ``concurrency`` users, each sending the next request when the previous one returns.

    Requests ``0..warmup-1`` are warm-up, the next ``num_requests`` are measured, later ones keep the load at
    ``concurrency`` until the last measured request returns; those are then awaited, not sent again. A request's intended send
    time is its user's previous completion (no think time), so lateness here is pure client delay: the time
    the event loop took to come back to this user. With ``hold`` (one generator of several), the load is kept
    on after the measured requests until ``hold()`` returns: until every generator's measured requests are done.
    """
    if concurrency < 1 or num_requests < 1:
        raise ValueError("concurrency and num_requests must be >= 1")
    next_index = 0
    measured = _Measured(warmup_requests, num_requests)
    released = measured.done if hold is None else asyncio.Event()  # no more requests
    started_at, origin = time.time(), time.perf_counter()

    async def user() -> None:
        nonlocal next_index
        intended = time.perf_counter() - origin
        while not released.is_set():
            await asyncio.sleep(0)  # yield once: a busy event loop now shows up as lateness
            if released.is_set():
                break
            i = next_index
            next_index += 1
            sent = time.perf_counter() - origin
            result, latency = await _call(send, client, i, timeout_s)
            measured.add(i, intended, sent, latency, result)
            intended = time.perf_counter() - origin

    async with _loop_lags(lag_interval_s) as lags:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        users = [asyncio.create_task(user()) for _ in range(concurrency)]
        try:
            await measured.done.wait()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if hold is not None:
                await hold()
                released.set()
            await _drain(users, timeout_s)  # each user ends after its request in flight
        finally:
            for task in users:
                task.cancel()
            await asyncio.gather(*users, return_exceptions=True)
    return measured.level_run(
        "closed", level, pass_index, concurrency, None, wall, cpu, lags, late_threshold_s, started_at
    )


def poisson_schedule(rate_rps: float, count: int, seed: int | None = None) -> np.ndarray:
    """Intended send times (seconds from the start) of ``count`` Poisson arrivals; the first at 0.

    Precomputed so that a slow client cannot stretch the schedule: it can only be late against it.
    """
    if rate_rps <= 0:
        raise ValueError("rate must be > 0")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_rps, size=count)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if count else np.zeros(0)


def _arrivals(schedule: np.ndarray, rate_rps: float, seed: int | None, *, endless: bool) -> Iterator[float]:
    """The precomputed schedule, then, for a held generator (``endless``), more Poisson arrivals at the same rate
    for as long as the hold lasts: a held generator keeps its load on however long the others take."""
    yield from schedule.tolist()
    if not endless:
        return
    rng = np.random.default_rng(None if seed is None else [seed, 1])  # a stream apart from every share's own seed
    last = float(schedule[-1]) if len(schedule) else 0.0
    while True:
        for gap in rng.exponential(1.0 / rate_rps, size=1024).tolist():
            last += gap
            yield last


async def run_open_level(
    send: SendFn,
    client: aiohttp.ClientSession,
    rate_rps: float,
    num_requests: int,
    *,
    warmup_requests: int = 0,
    timeout_s: float = 30.0,
    level: int = 0,
    pass_index: int = 0,
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
    seed: int | None = None,
    max_in_flight: int | None = None,
    lag_interval_s: float = 0.01,
    hold: Hold | None = None,
) -> LevelRun:
    """Open loop: Poisson arrivals at ``rate_rps`` on a precomputed schedule, whatever the responses do.

    The arrival process continues past the measured requests until the last of them returns (those trailing
    requests are excluded, then awaited up to ``timeout_s``), so the measured tail sees the same offered load. ``max_in_flight``
    optionally caps outstanding requests; requests held back by the cap are sent late and counted so. With
    ``hold`` (one generator of several), arrivals go on until ``hold()`` returns, as in :func:`run_closed_level`.
    """
    if num_requests < 1:
        raise ValueError("num_requests must be >= 1")
    measured = _Measured(warmup_requests, num_requests)
    # Arrivals past the measured ones: as many again; while held for the other generators, as many as it takes.
    schedule = poisson_schedule(rate_rps, measured.hi + num_requests, seed)
    cap = asyncio.Semaphore(max_in_flight) if max_in_flight else None

    async def one(i: int, intended: float, origin: float) -> None:
        sent = time.perf_counter() - origin
        try:
            result, latency = await _call(send, client, i, timeout_s)
        finally:
            if cap is not None:
                cap.release()
        measured.add(i, intended, sent, latency, result)

    tasks: list[asyncio.Task[None]] = []

    async def issue(origin: float) -> None:
        # One plain sleep per arrival; this task is cancelled once every measured request has returned (held:
        # once the hold ends).
        for i, intended in enumerate(_arrivals(schedule, rate_rps, seed, endless=hold is not None)):
            delay = origin + intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if cap is not None:
                await cap.acquire()
            tasks.append(asyncio.create_task(one(i, intended, origin)))

    async with _loop_lags(lag_interval_s) as lags:
        cpu0 = time.process_time()
        started_at, origin = time.time(), time.perf_counter()
        issuer = asyncio.create_task(issue(origin))
        try:
            await measured.done.wait()
            wall, cpu = time.perf_counter() - origin, time.process_time() - cpu0
            if hold is not None:
                await hold()
            issuer.cancel()
            await _drain(tasks, timeout_s)
        finally:
            issuer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(issuer, *tasks, return_exceptions=True)
    return measured.level_run("open", level, pass_index, None, rate_rps, wall, cpu, lags, late_threshold_s, started_at)
