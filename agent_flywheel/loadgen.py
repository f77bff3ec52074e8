"""Load generation for an agent: closed loop over concurrencies, open loop over Poisson arrival rates.

- **Closed loop** (``concurrency = c``): c virtual users, each sending its next request as soon as the previous
  one returns (no think time) — what the NeMo Agent Toolkit's sizing sweep does. The load stays at exactly
  c in flight until the last *measured* request returns: requests issued after the measured ones are
  cool-down traffic, excluded, so the last measured requests do not enjoy a draining system. Then nothing
  more is sent and the cool-down requests in flight are awaited (up to the request timeout), so the next
  level starts on an idle server: a request the client abandons keeps its slot on the server until it
  completes, and would slow the next level's first measured requests.
- **Open loop** (``rate = λ``): arrivals of a Poisson process with rate λ; all intended send times are
  precomputed from a seeded generator (no drift from accumulated sleeps); a request sent more than
  ``late_threshold_s`` after its intended time counts as *late*.

Every level runs ``num_passes`` times; passes are interleaved across levels (pass 0 of every level, then
pass 1, ...) so slow drift of the system under test does not masquerade as a concurrency effect. The first
``warmup_requests`` of each level and pass are excluded. Failed requests and timeouts are counted with their
kind and never abort the sweep.

The generator checks itself, as perf_analyzer does: the share of requests sent late, the client's CPU time per
request (time spent in our code rather than waiting), and event-loop lag measured by a ticker task. It warns
when the client, not the server, is likely the bottleneck.

Latencies go into :class:`LatencyHistogram`, an HDR-style log-linear histogram whose buckets merge exactly
across passes and across workers; percentiles come from the merged histogram. Raw per-request rows are kept
too (for the bootstrap in :mod:`agent_flywheel.sizing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import numpy as np
import pandas as pd
from aiohttp.http_exceptions import HttpProcessingError

from agent_flywheel.config import LoadSweepConfig

Mode = Literal["closed", "open"]

DEFAULT_LATE_THRESHOLD_S = 0.02
LATE_SHARE_WARNING = 0.01
LOOP_LAG_WARNING_S = 0.05
CPU_SHARE_WARNING = 0.9


# --------------------------------------------------------------------------------------------------
# HDR-style histogram
# --------------------------------------------------------------------------------------------------


class LatencyHistogram:
    """Log-linear latency histogram (the HdrHistogram layout) whose merge is exact.

    Values are counted in integer ``unit_s`` steps (1 µs by default). Below ``2**sub_bucket_bits`` units every
    unit has its own bucket; above, each power-of-two range is split into ``2**(sub_bucket_bits-1)`` equal
    buckets, so a bucket is never wider than ``2 / 2**sub_bucket_bits`` of its value (0.78 % with the default
    8 bits) and a percentile read at the bucket's midpoint is within half that. Buckets are stored sparsely,
    so there is no upper limit. Two histograms with the same layout merge by adding counts, which is exact:
    merging the histograms of two workers gives the histogram of all their requests, unlike averaging
    percentiles.
    """

    def __init__(self, sub_bucket_bits: int = 8, unit_s: float = 1e-6) -> None:
        if not 2 <= sub_bucket_bits <= 20:
            raise ValueError("sub_bucket_bits must be in 2..20")
        if unit_s <= 0:
            raise ValueError("unit_s must be > 0")
        self.sub_bucket_bits = sub_bucket_bits
        self.unit_s = unit_s
        self._sub = 1 << sub_bucket_bits
        self._half = self._sub >> 1
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = -math.inf

    # layout ---------------------------------------------------------------------------------------
    def _index(self, units: int) -> int:
        if units < self._sub:
            return units
        shift = units.bit_length() - self.sub_bucket_bits
        return shift * self._half + (units >> shift)

    def bucket_bounds_s(self, index: int) -> tuple[float, float]:
        """The value range ``[low, high)`` in seconds that bucket ``index`` counts."""
        if index < self._sub:
            lo, hi = index, index + 1
        else:
            shift = index // self._half - 1
            sub = index - shift * self._half
            lo, hi = sub << shift, (sub + 1) << shift
        return lo * self.unit_s, hi * self.unit_s

    # recording ------------------------------------------------------------------------------------
    def record(self, value_s: float, count: int = 1) -> None:
        """Count one latency (seconds); NaN, infinite and negative values are refused."""
        if not math.isfinite(value_s) or value_s < 0:
            raise ValueError(f"latency must be finite and >= 0, got {value_s}")
        if count < 1:
            raise ValueError("count must be >= 1")
        index = self._index(int(value_s / self.unit_s))
        self.counts[index] = self.counts.get(index, 0) + count
        self.count += count
        self.total_s += value_s * count
        self.min_s = min(self.min_s, value_s)
        self.max_s = max(self.max_s, value_s)

    def record_many(self, values_s: Iterable[float]) -> LatencyHistogram:
        """Record every value; returns self for chaining."""
        for v in values_s:
            self.record(v)
        return self

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        """Add another histogram's counts into this one (exact); returns self."""
        if (other.sub_bucket_bits, other.unit_s) != (self.sub_bucket_bits, self.unit_s):
            raise ValueError("cannot merge histograms with different layouts")
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total_s += other.total_s
        self.min_s = min(self.min_s, other.min_s)
        self.max_s = max(self.max_s, other.max_s)
        return self

    @classmethod
    def merged(cls, histograms: Iterable[LatencyHistogram], sub_bucket_bits: int = 8) -> LatencyHistogram:
        """A new histogram holding the sum of the given ones."""
        out: LatencyHistogram | None = None
        for h in histograms:
            if out is None:
                out = cls(h.sub_bucket_bits, h.unit_s)
            out.merge(h)
        return out if out is not None else cls(sub_bucket_bits)

    # reading --------------------------------------------------------------------------------------
    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (0..100) by nearest rank, read at its bucket's midpoint; None when empty."""
        if not 0 <= q <= 100:
            raise ValueError("q must be in [0, 100]")
        if self.count == 0:
            return None
        if q == 0:
            return self.min_s
        if q == 100:
            return self.max_s
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                lo, hi = self.bucket_bounds_s(index)
                return min(max((lo + hi) / 2, self.min_s), self.max_s)
        return self.max_s

    @property
    def mean_s(self) -> float | None:
        """Mean of the recorded values (exact: the sum is kept beside the buckets)."""
        return self.total_s / self.count if self.count else None

    def summary(self) -> dict[str, float | int | None]:
        """count, min, max, mean and p50/p90/p95/p99 in seconds."""
        return {
            "count": self.count,
            "min_s": self.min_s if self.count else None,
            "max_s": self.max_s if self.count else None,
            "mean_s": self.mean_s,
            "p50_s": self.percentile(50),
            "p90_s": self.percentile(90),
            "p95_s": self.percentile(95),
            "p99_s": self.percentile(99),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, to ship a worker's histogram to whoever merges."""
        return {
            "sub_bucket_bits": self.sub_bucket_bits,
            "unit_s": self.unit_s,
            "counts": {str(k): v for k, v in sorted(self.counts.items())},
            "count": self.count,
            "total_s": self.total_s,
            "min_s": self.min_s if self.count else None,
            "max_s": self.max_s if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyHistogram:
        """Inverse of :meth:`to_dict`."""
        h = cls(int(data["sub_bucket_bits"]), float(data["unit_s"]))
        h.counts = {int(k): int(v) for k, v in data["counts"].items()}
        h.count = int(data["count"])
        h.total_s = float(data["total_s"])
        h.min_s = math.inf if data.get("min_s") is None else float(data["min_s"])
        h.max_s = -math.inf if data.get("max_s") is None else float(data["max_s"])
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencyHistogram):
            return NotImplemented
        return (
            (self.sub_bucket_bits, self.unit_s, self.counts, self.count)
            == (other.sub_bucket_bits, other.unit_s, other.counts, other.count)
            and (self.min_s, self.max_s) == (other.min_s, other.max_s)
            and math.isclose(self.total_s, other.total_s, rel_tol=1e-12, abs_tol=1e-12)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


@dataclass
class RequestResult:
    """What one request returned. ``latency_s=None`` lets the generator use its own wall-clock measurement."""

    ok: bool
    latency_s: float | None = None
    error_kind: str | None = None
    llm_latencies: list[float] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    status_code: int | None = None


SendFn = Callable[[aiohttp.ClientSession, int], Awaitable[RequestResult]]


def _answered_status(exc: BaseException) -> int | None:
    """The HTTP status behind an aiohttp error, if the server sent one (a malformed answer also raises
    ``ClientResponseError``, with a made-up 400, from an ``HttpProcessingError``)."""
    if isinstance(exc, aiohttp.ClientResponseError) and not isinstance(exc.__cause__, HttpProcessingError):
        return exc.status
    return None


def error_kind_of(exc: BaseException) -> str:
    """A short, stable name for a failure, used to count error kinds per level.

    Why: error counts are compared across levels, passes and runs, so the names must not depend on
    exception messages: ``timeout``, ``http_<status>`` (``raise_for_status``), ``connect_error`` (no
    connection could be made), ``transport_error`` (the connection broke or the answer was not valid HTTP),
    ``bad_response`` (a JSON body of the wrong content type), else the exception's class name.
    """
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError and ConnectionTimeoutError included
        return "timeout"
    if isinstance(exc, aiohttp.ContentTypeError):
        return "bad_response"
    status = _answered_status(exc)
    if status is not None:
        return f"http_{status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(exc, aiohttp.ClientError):
        return "transport_error"
    return type(exc).__name__


DEFAULT_CHAT_MESSAGES: tuple[str, ...] = (
    "Where is my order ORD-1001?",
    "Can I return the headphones from order ORD-1002?",
    "Do you have a waterproof hiking jacket?",
    "What is the status of my refund for ORD-1003?",
    "Hi! How are you today?",
)


def chat_sender(
    messages: Sequence[str] = DEFAULT_CHAT_MESSAGES,
    path: str = "/v1/chat",
    body: Callable[[int], dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> SendFn:
    """A request function for the demo agent's ``POST /v1/chat``.

    Why: the generator is agent-agnostic; this adapter knows the demo agent's contract. Request ``i`` sends
    ``body(i)`` (default ``{"message": messages[i % len], "user_id": "load-user-<i>", "session_id": "load-<i>"}``:
    one user per request, so a canary router spreads load tests over both variants); the JSON answer's
    ``llm_calls: [{model, latency_s, input_tokens, output_tokens}]`` gives the per-call LLM latencies and tokens.
    An HTTP status >= 400 is an error of kind ``http_<status>``; an unparseable answer is ``bad_response``.
    """
    if body is None and not messages:
        raise ValueError("messages must not be empty")
    extra_headers = dict(headers) if headers else None
    relative = path.lstrip("/")  # joined onto the client's base URL, so a base URL's path prefix is kept

    def make_body(i: int) -> dict[str, Any]:
        if body is not None:
            return body(i)
        return {"message": messages[i % len(messages)], "user_id": f"load-user-{i}", "session_id": f"load-{i}"}

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        async with client.post(relative, json=make_body(i), headers=extra_headers, allow_redirects=False) as response:
            status = response.status
            raw = await response.read()
        if status >= 400:
            return RequestResult(ok=False, error_kind=f"http_{status}", status_code=status)
        try:
            data = json.loads(raw)
            calls = data.get("llm_calls") or []
            latencies = [float(c["latency_s"]) for c in calls if c.get("latency_s") is not None]
            tokens_in = sum(int(c.get("input_tokens") or 0) for c in calls)
            tokens_out = sum(int(c.get("output_tokens") or 0) for c in calls)
        except (ValueError, TypeError, KeyError, AttributeError):
            return RequestResult(ok=False, error_kind="bad_response", status_code=status)
        return RequestResult(
            ok=True,
            llm_latencies=latencies,
            input_tokens=tokens_in if calls else None,
            output_tokens=tokens_out if calls else None,
            status_code=status,
        )

    return send


def make_client(base_url: str, max_connections: int = 256, timeout_s: float = 60.0) -> aiohttp.ClientSession:
    """An aiohttp session for the generator, its pool large enough for the sweep; use it as ``async with``.

    Why aiohttp: the client's CPU per request is the ceiling of one generator process (``bench/``
    measured ~1 ms per request and a collapse past ~500/s with httpx, a tenth of that with aiohttp).
    Why the pool size: a closed loop at concurrency 128 on a smaller pool (aiohttp allows 100 by default)
    would queue inside the client, and that queueing would be measured as server latency. ``timeout_s`` is
    each request's total timeout. Relative paths (``v1/chat``) are joined onto ``base_url`` keeping its
    path; a path with a leading ``/`` replaces it. Proxy settings from the environment are not used.
    """
    connector = aiohttp.TCPConnector(limit=max_connections)
    return aiohttp.ClientSession(
        base_url=base_url.rstrip("/") + "/",
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


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


@dataclass
class LevelRun:
    """One pass of one load level: the measured requests and the generator's self-measurement."""

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

    @property
    def window_s(self) -> float:
        """From the first measured send to the last measured completion: the throughput denominator."""
        if not self.records:
            return 0.0
        return max(r.sent_s + r.latency_s for r in self.records) - min(r.sent_s for r in self.records)


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
        kind, status = error_kind_of(exc), _answered_status(exc)
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
) -> LevelRun:
    """Closed loop: ``concurrency`` users, each sending the next request when the previous one returns.

    Requests ``0..warmup-1`` are warm-up, the next ``num_requests`` are measured, later ones keep the load at
    ``concurrency`` until the last measured request returns; those are then awaited, not sent again. A request's intended send
    time is its user's previous completion (no think time), so lateness here is pure client delay: the time
    the event loop took to come back to this user.
    """
    if concurrency < 1 or num_requests < 1:
        raise ValueError("concurrency and num_requests must be >= 1")
    lo, hi = warmup_requests, warmup_requests + num_requests
    next_index = 0
    remaining = num_requests
    done = asyncio.Event()
    records: list[RequestRecord] = []
    excluded = 0
    origin = time.perf_counter()

    async def user() -> None:
        nonlocal next_index, remaining, excluded
        intended = time.perf_counter() - origin
        while not done.is_set():
            await asyncio.sleep(0)  # yield once: a busy event loop now shows up as lateness
            if done.is_set():
                break
            i = next_index
            next_index += 1
            sent = time.perf_counter() - origin
            result, latency = await _call(send, client, i, timeout_s)
            if lo <= i < hi:
                records.append(RequestRecord(i, intended, sent, latency, result))
                remaining -= 1
                if remaining == 0:
                    done.set()
            else:
                excluded += 1
            intended = time.perf_counter() - origin

    lags: list[float] = []
    stop = asyncio.Event()
    with _frozen_heap():
        ticker = asyncio.create_task(_loop_lag_ticker(lags, stop, lag_interval_s))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        users = [asyncio.create_task(user()) for _ in range(concurrency)]
        try:
            await done.wait()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            await _drain(users, timeout_s)  # each user ends after its request in flight
        finally:
            for task in users:
                task.cancel()
            await asyncio.gather(*users, return_exceptions=True)
        stop.set()
        await ticker
    records.sort(key=lambda r: r.index)
    return LevelRun(
        "closed", level, pass_index, concurrency, None, records, wall, cpu, lags, late_threshold_s, excluded
    )


def poisson_schedule(rate_rps: float, count: int, seed: int | None = None) -> np.ndarray:
    """Intended send times (seconds from the start) of ``count`` Poisson arrivals; the first at 0.

    Precomputed so that a slow client cannot stretch the schedule: it can only be late against it.
    """
    if rate_rps <= 0:
        raise ValueError("rate must be > 0")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate_rps, size=count)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if count else np.zeros(0)


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
) -> LevelRun:
    """Open loop: Poisson arrivals at ``rate_rps`` on a precomputed schedule, whatever the responses do.

    The arrival process continues past the measured requests until the last of them returns (those trailing
    requests are excluded, then awaited up to ``timeout_s``), so the measured tail sees the same offered load. ``max_in_flight``
    optionally caps outstanding requests; requests held back by the cap are sent late and counted so.
    """
    if num_requests < 1:
        raise ValueError("num_requests must be >= 1")
    lo, hi = warmup_requests, warmup_requests + num_requests
    schedule = poisson_schedule(rate_rps, hi + num_requests, seed)
    remaining = num_requests
    done = asyncio.Event()
    records: list[RequestRecord] = []
    excluded = 0
    cap = asyncio.Semaphore(max_in_flight) if max_in_flight else None

    async def one(i: int, intended: float, origin: float) -> None:
        nonlocal remaining, excluded
        sent = time.perf_counter() - origin
        try:
            result, latency = await _call(send, client, i, timeout_s)
        finally:
            if cap is not None:
                cap.release()
        if lo <= i < hi:
            records.append(RequestRecord(i, intended, sent, latency, result))
            remaining -= 1
            if remaining == 0:
                done.set()
        else:
            excluded += 1

    lags: list[float] = []
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def issue(origin: float) -> None:
        # One plain sleep per arrival; this task is cancelled once every measured request has returned.
        for i, intended in enumerate(schedule.tolist()):
            delay = origin + intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if cap is not None:
                await cap.acquire()
            tasks.append(asyncio.create_task(one(i, intended, origin)))

    with _frozen_heap():
        ticker = asyncio.create_task(_loop_lag_ticker(lags, stop, lag_interval_s))
        cpu0 = time.process_time()
        origin = time.perf_counter()
        issuer = asyncio.create_task(issue(origin))
        try:
            await done.wait()
            issuer.cancel()
            wall, cpu = time.perf_counter() - origin, time.process_time() - cpu0
            await _drain(tasks, timeout_s)
        finally:
            issuer.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(issuer, *tasks, return_exceptions=True)
        stop.set()
        await ticker
    records.sort(key=lambda r: r.index)
    return LevelRun("open", level, pass_index, None, rate_rps, records, wall, cpu, lags, late_threshold_s, excluded)


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------


@dataclass
class LevelSummary:
    """All passes of one level together: latency percentiles from merged histograms, errors, self-check."""

    mode: Mode
    level: int
    concurrency: int | None
    rate_rps: float | None
    passes: int
    requests: int
    ok: int
    error_rate: float
    error_kinds: dict[str, int]
    throughput_rps: float
    workflow: LatencyHistogram
    llm: LatencyHistogram
    late_share: float
    client_cpu_per_request_s: float
    client_cpu_share: float
    loop_lag_p99_s: float
    loop_lag_max_s: float
    warnings: list[str]

    def to_row(self) -> dict[str, Any]:
        """One flat row for the per-level table."""
        w, m = self.workflow.summary(), self.llm.summary()
        return {
            "mode": self.mode,
            "level": self.level,
            "concurrency": self.concurrency,
            "rate_rps": self.rate_rps,
            "passes": self.passes,
            "requests": self.requests,
            "ok": self.ok,
            "error_rate": self.error_rate,
            "error_kinds": ";".join(f"{k}={v}" for k, v in sorted(self.error_kinds.items())),
            "throughput_rps": self.throughput_rps,
            **{f"workflow_{k}": v for k, v in w.items() if k != "count"},
            "llm_calls": m["count"],
            **{f"llm_{k}": v for k, v in m.items() if k != "count"},
            "late_share": self.late_share,
            "client_cpu_per_request_s": self.client_cpu_per_request_s,
            "client_cpu_share": self.client_cpu_share,
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "loop_lag_max_s": self.loop_lag_max_s,
            "warnings": " | ".join(self.warnings),
        }


def summarize_level(runs: Sequence[LevelRun]) -> LevelSummary:
    """Merge the passes of one level (histograms exactly) and judge whether the generator kept up."""
    if not runs:
        raise ValueError("no runs to summarise")
    first = runs[0]
    workflow_hists, llm_hists = [], []
    errors: Counter[str] = Counter()
    requests = ok = late = 0
    window = cpu = wall = 0.0
    lags: list[float] = []
    for run in runs:
        wh, lh = LatencyHistogram(), LatencyHistogram()
        for rec in run.records:
            requests += 1
            if rec.result.ok:
                ok += 1
                wh.record(rec.latency_s)
            else:
                errors[rec.result.error_kind or "error"] += 1
            for v in rec.result.llm_latencies:
                if math.isfinite(v) and v >= 0:
                    lh.record(v)
            late += rec.lateness_s > run.late_threshold_s
        workflow_hists.append(wh)
        llm_hists.append(lh)
        window += run.window_s
        cpu += run.cpu_s
        wall += run.wall_s
        lags.extend(run.loop_lags_s)
    late_share = late / requests if requests else 0.0
    cpu_share = cpu / wall if wall > 0 else 0.0
    lag_p99 = float(np.percentile(lags, 99)) if lags else 0.0
    warnings: list[str] = []
    label = f"concurrency {first.concurrency}" if first.mode == "closed" else f"rate {first.rate_rps:g}/s"
    if late_share > LATE_SHARE_WARNING:
        warnings.append(
            f"{label}: {late_share:.1%} of requests were sent more than {first.late_threshold_s * 1000:.0f} ms late; "
            "the load generator could not keep up, so the offered load was lower than intended"
        )
    if lag_p99 > LOOP_LAG_WARNING_S:
        warnings.append(
            f"{label}: event-loop lag p99 {lag_p99 * 1000:.0f} ms; client-side delay is inflating measured latency"
        )
    if cpu_share > CPU_SHARE_WARNING:
        warnings.append(
            f"{label}: the client process used {cpu_share:.0%} of a CPU core; the generator may be the bottleneck"
        )
    return LevelSummary(
        mode=first.mode,
        level=first.level,
        concurrency=first.concurrency,
        rate_rps=first.rate_rps,
        passes=len(runs),
        requests=requests,
        ok=ok,
        error_rate=(requests - ok) / requests if requests else 0.0,
        error_kinds=dict(errors),
        throughput_rps=ok / window if window > 0 else 0.0,
        workflow=LatencyHistogram.merged(workflow_hists),
        llm=LatencyHistogram.merged(llm_hists),
        late_share=late_share,
        client_cpu_per_request_s=cpu / requests if requests else 0.0,
        client_cpu_share=cpu_share,
        loop_lag_p99_s=lag_p99,
        loop_lag_max_s=max(lags) if lags else 0.0,
        warnings=warnings,
    )


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
                calls = rec.result.llm_latencies
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
                    }
                )
        return pd.DataFrame(rows, columns=REQUEST_COLUMNS)

    def llm_calls_frame(self) -> pd.DataFrame:
        """One row per LLM call: level, pass, request, latency_s."""
        rows = [
            {
                "mode": run.mode,
                "concurrency": run.concurrency,
                "rate_rps": run.rate_rps,
                "pass": run.pass_index,
                "request": rec.index,
                "latency_s": v,
            }
            for run in self.runs
            for rec in run.records
            for v in rec.result.llm_latencies
        ]
        return pd.DataFrame(rows, columns=["mode", "concurrency", "rate_rps", "pass", "request", "latency_s"])

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
    send: SendFn | None = None,
    *,
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
    seed: int = 0,
) -> SweepResult:
    """Synchronous entry point (for a Prefect task): own event loop and a pool sized to the largest level."""
    sender = send or chat_sender()
    biggest = max([*config.concurrencies, 1])

    async def main() -> SweepResult:
        async with make_client(base_url, max_connections=max(256, 2 * biggest)) as client:
            return await run_sweep(sender, client, config, late_threshold_s=late_threshold_s, seed=seed)

    return asyncio.run(main())
