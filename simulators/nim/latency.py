"""Latency model of the NIM simulator: a continuous-batching server per model, and its exact capacity.

The model (all times in *simulated* seconds; the server multiplies every sleep by ``time_scale``):

* A model has ``replicas`` replicas; each decodes at most ``max_batch`` requests together. A request
  that finds every replica full waits in one FIFO queue per model.
* A new request goes to the replica with the fewest admitted requests; ties go to the replica that freed
  a slot most recently (so a closed loop of clients keeps a fixed spread over the replicas), then to the
  lowest index.
* Once admitted, a request holds its slot for ``overhead_s + prefill_s_per_token * input_tokens``
  (prefill does not depend on the batch) and then decodes ``output_tokens`` tokens. Each token takes
  ``decode_s_per_token + decode_s_per_token_per_request * b`` where ``b`` is the number of requests
  admitted on that replica *at that moment* (itself included): decoding is a fluid process whose speed
  changes whenever a request joins or leaves the replica.

Hence the service time of a request on a replica whose batch stays at ``b``::

    S(b) = o + a * I + O * (d0 + d1 * b)

Truth for a closed loop of ``N`` clients that send identical requests back to back (no think time),
``R`` replicas and ``B = max_batch``:

* ``N <= R * B`` (no queue): ``k = N // R`` and ``m = N % R``; ``m`` replicas hold ``k + 1`` requests and
  ``R - m`` hold ``k``, for ever (the tie rule keeps a client on its replica). Every request on a replica
  with ``n`` requests takes exactly ``S(n)``. Throughput ``X = sum_r n_r / S(n_r)``; the mean latency is
  ``N / X`` (Little's law); a quantile is ``S(k + 1)`` when more than ``1 - q`` of the completions come
  from the fuller replicas, else ``S(k)``.
* ``N > R * B`` (saturated): every replica always runs ``B`` requests, so ``X = R * B / S(B)`` exactly
  and the mean latency is ``N * S(B) / (R * B)`` (Little's law); the mean queue wait is that minus
  ``S(B)``. Once the clients' phases have spread out (the steady state of any real run) every request
  waits the same time, so every quantile equals the mean. (Clients that all start at the same instant
  stay in lock-step instead; their latencies alternate between the two multiples of ``S(B)`` around the
  mean: :func:`saturated_latency_bounds_s`.)

A workflow that makes several calls in a row (``calls = [(I1, O1), (I2, O2), ...]``) behaves the same
with ``S`` replaced by the sum of the calls' service times, because every client is always inside
exactly one call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import deque
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from simulators.nim.settings import LatencyDefaults, LatencyOverride, LatencySettings


@dataclass(frozen=True)
class LatencyParams:
    """The parameters of one model's server (simulated seconds)."""

    overhead_s: float = 0.01
    prefill_s_per_token: float = 0.0002
    decode_s_per_token: float = 0.0035
    decode_s_per_token_per_request: float = 0.0014
    max_batch: int = 16
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.replicas < 1:
            raise ValueError("max_batch and replicas must be >= 1")
        if min(self.overhead_s, self.prefill_s_per_token, self.decode_s_per_token) < 0:
            raise ValueError("latency parameters must be >= 0")
        if self.decode_s_per_token_per_request < 0:
            raise ValueError("latency parameters must be >= 0")


def params_for(settings: LatencySettings, model: str, *fallbacks: str) -> LatencyParams:
    """The latency parameters of ``model``: defaults, then the first override among the model and its fallbacks.

    A LoRA adapter passes its root as a fallback, so it runs on the same server as its base model.
    """
    base: LatencyDefaults = settings.default
    override: LatencyOverride | None = None
    for name in (model, *fallbacks):
        if name and name in settings.models:
            override = settings.models[name]
            break
    values = base.model_dump()
    if override is not None:
        values.update({k: v for k, v in override.model_dump().items() if v is not None})
    return LatencyParams(**values)


def per_token_decode_s(params: LatencyParams, batch: int) -> float:
    """Seconds per decoded token for one request while ``batch`` requests share the replica."""
    return params.decode_s_per_token + params.decode_s_per_token_per_request * batch


def prefill_s(params: LatencyParams, input_tokens: int) -> float:
    """Time from admission to the first decoded token (fixed overhead plus prefill)."""
    return params.overhead_s + params.prefill_s_per_token * input_tokens


def service_time_s(params: LatencyParams, batch: int, input_tokens: int, output_tokens: int) -> float:
    """``S(b)``: how long one request holds its slot when its replica's batch stays at ``batch``."""
    return prefill_s(params, input_tokens) + output_tokens * per_token_decode_s(params, batch)


Call = tuple[int, int]
"""One LLM call of a workflow: (input tokens, output tokens)."""


def _cycle_time_s(params: LatencyParams, batch: int, calls: Sequence[Call]) -> float:
    if not calls:
        raise ValueError("a workflow needs at least one call")
    return sum(service_time_s(params, batch, i, o) for i, o in calls)


@dataclass(frozen=True)
class ClosedLoop:
    """Steady state of ``concurrency`` clients that each repeat ``calls`` back to back."""

    concurrency: int
    saturated: bool
    batch_per_replica: tuple[int, ...]
    throughput_per_s: float
    latency_mean_s: float
    queue_wait_mean_s: float
    latency_levels: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    """(latency, share of completions) pairs, ascending by latency."""

    def quantile_s(self, q: float) -> float:
        """The ``q`` quantile of a workflow's latency (the smallest level covering a share ``q``)."""
        if not 0 < q <= 1:
            raise ValueError("q must be in (0, 1]")
        covered = 0.0
        for latency, share in self.latency_levels:
            covered += share
            if covered >= q - 1e-12:
                return latency
        return self.latency_levels[-1][0]


def closed_loop(params: LatencyParams, concurrency: int, calls: Sequence[Call]) -> ClosedLoop:
    """The exact steady state of a closed loop (see the module docstring for the maths)."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    replicas, max_batch = params.replicas, params.max_batch
    if concurrency > replicas * max_batch:
        cycle = _cycle_time_s(params, max_batch, calls)
        throughput = replicas * max_batch / cycle
        mean = concurrency / throughput
        return ClosedLoop(
            concurrency=concurrency,
            saturated=True,
            batch_per_replica=(max_batch,) * replicas,
            throughput_per_s=throughput,
            latency_mean_s=mean,
            queue_wait_mean_s=mean - cycle,
            latency_levels=((mean, 1.0),),
        )
    k, m = divmod(concurrency, replicas)
    batches = tuple([k + 1] * m + [k] * (replicas - m))
    rates: dict[float, float] = {}
    throughput = 0.0
    for n in batches:
        if n == 0:
            continue
        cycle = _cycle_time_s(params, n, calls)
        rates[cycle] = rates.get(cycle, 0.0) + n / cycle
        throughput += n / cycle
    levels = tuple((latency, rate / throughput) for latency, rate in sorted(rates.items()))
    return ClosedLoop(
        concurrency=concurrency,
        saturated=False,
        batch_per_replica=batches,
        throughput_per_s=throughput,
        latency_mean_s=concurrency / throughput,
        queue_wait_mean_s=0.0,
        latency_levels=levels,
    )


def expected_latency_s(params: LatencyParams, concurrency: int, input_tokens: int, output_tokens: int) -> float:
    """True mean latency of one request with ``concurrency`` clients sending identical requests back to back."""
    return closed_loop(params, concurrency, [(input_tokens, output_tokens)]).latency_mean_s


def latency_quantile_s(
    params: LatencyParams, concurrency: int, input_tokens: int, output_tokens: int, q: float = 0.95
) -> float:
    """True ``q`` quantile of one request's latency in the same closed loop (e.g. the p95)."""
    return closed_loop(params, concurrency, [(input_tokens, output_tokens)]).quantile_s(q)


def throughput_per_s(params: LatencyParams, concurrency: int, input_tokens: int, output_tokens: int) -> float:
    """True completed requests per second in the same closed loop."""
    return closed_loop(params, concurrency, [(input_tokens, output_tokens)]).throughput_per_s


def max_throughput_per_s(params: LatencyParams, calls: Sequence[Call]) -> float:
    """The capacity of all replicas: workflows per second once every slot is always busy."""
    return params.replicas * params.max_batch / _cycle_time_s(params, params.max_batch, calls)


def workflow_latency_s(params: LatencyParams, concurrency: int, calls: Sequence[Call], q: float | None = None) -> float:
    """True latency of a workflow of ``calls`` made one after another, ``concurrency`` workflows in flight.

    ``q=None`` gives the mean, otherwise the ``q`` quantile.
    """
    loop = closed_loop(params, concurrency, calls)
    return loop.latency_mean_s if q is None else loop.quantile_s(q)


def saturated_latency_bounds_s(params: LatencyParams, concurrency: int, calls: Sequence[Call]) -> tuple[float, float]:
    """The two latencies between which lock-stepped clients alternate in the saturated regime.

    Outside the saturated regime both bounds equal the lowest and highest steady-state latency.
    """
    loop = closed_loop(params, concurrency, calls)
    if not loop.saturated:
        return loop.latency_levels[0][0], loop.latency_levels[-1][0]
    cycle = _cycle_time_s(params, params.max_batch, calls)
    slots = params.replicas * params.max_batch
    waiting = concurrency - slots
    return cycle * (1 + waiting // slots), cycle * (1 + math.ceil(waiting / slots))


def max_concurrency_under(
    params: LatencyParams,
    latency_target_s: float,
    input_tokens: int = 0,
    output_tokens: int = 0,
    q: float = 0.95,
    calls: Sequence[Call] | None = None,
    limit: int = 1_000_000,
) -> int:
    """The most concurrent clients whose ``q``-quantile latency stays within ``latency_target_s`` (0: none).

    Pass ``calls`` for a multi-call workflow, or ``input_tokens``/``output_tokens`` for single requests.
    Latency never decreases with concurrency, so this is a binary search over the exact closed loop.
    """
    workload = list(calls) if calls is not None else [(input_tokens, output_tokens)]

    def ok(n: int) -> bool:
        return closed_loop(params, n, workload).quantile_s(q) <= latency_target_s + 1e-12

    if not ok(1):
        return 0
    low, high = 1, 2
    while high <= limit and ok(high):
        low, high = high, high * 2
    if high > limit:
        return limit if ok(limit) else _search(ok, low, limit)
    return _search(ok, low, high)


def _search(ok: Callable[[int], bool], low: int, high: int) -> int:
    """Largest n in [low, high) with ok(n), given ok(low) and not ok(high)."""
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            low = mid
        else:
            high = mid
    return low


def replicas_needed(
    params: LatencyParams, users: int, latency_target_s: float, calls: Sequence[Call], q: float = 0.95
) -> int | None:
    """The fewest replicas (each like ``params`` describes) that serve ``users`` concurrent workflows on target.

    ``None`` when even one workflow alone misses the target.
    """
    one = dataclasses.replace(params, replicas=1)
    per_replica = max_concurrency_under(one, latency_target_s, q=q, calls=calls)
    if per_replica == 0:
        return None
    replicas = max(1, math.ceil(users / per_replica))
    # With an uneven spread the fuller replicas set the quantile: grow until the exact model agrees.
    while (
        max_concurrency_under(
            dataclasses.replace(params, replicas=replicas), latency_target_s, q=q, calls=calls, limit=users
        )
        < users
    ):
        replicas += 1
    return replicas


# --------------------------------------------------------------------------- the server's scheduler


@dataclass(frozen=True)
class Timing:
    """What one request spent where (simulated seconds); returned in the response's ``nvext``."""

    queue_s: float
    prefill_s: float
    decode_s: float
    batch_at_admission: int
    replica: int

    @property
    def total_s(self) -> float:
        """Queue plus prefill plus decode."""
        return self.queue_s + self.prefill_s + self.decode_s

    def as_dict(self) -> dict[str, float | int]:
        """The JSON form."""
        return {
            "queue_s": round(self.queue_s, 6),
            "prefill_s": round(self.prefill_s, 6),
            "decode_s": round(self.decode_s, 6),
            "total_s": round(self.total_s, 6),
            "batch_at_admission": self.batch_at_admission,
            "replica": self.replica,
        }


class _Replica:
    def __init__(self) -> None:
        self.running = 0
        self.released_seq = 0
        self.changed = asyncio.Event()

    def notify(self) -> None:
        old, self.changed = self.changed, asyncio.Event()
        old.set()


class _Pool:
    """One model's replicas and its FIFO queue."""

    def __init__(self, params: LatencyParams) -> None:
        self.params = params
        self.replicas = [_Replica() for _ in range(params.replicas)]
        self.queue: deque[asyncio.Future[int]] = deque()
        self._seq = 0

    def _pick(self) -> int | None:
        best: int | None = None
        for index, replica in enumerate(self.replicas):
            if replica.running >= self.params.max_batch:
                continue
            if best is None:
                best = index
                continue
            current = self.replicas[best]
            if (replica.running, -replica.released_seq) < (current.running, -current.released_seq):
                best = index
        return best

    def _occupy(self, index: int) -> None:
        self.replicas[index].running += 1
        self.replicas[index].notify()

    async def acquire(self) -> int:
        if not self.queue:
            index = self._pick()
            if index is not None:
                self._occupy(index)
                return index
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.queue.append(future)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            else:
                self.queue.remove(future)
            raise

    def release(self, index: int) -> None:
        replica = self.replicas[index]
        replica.running -= 1
        self._seq += 1
        replica.released_seq = self._seq
        replica.notify()
        while self.queue:
            target = self._pick()
            if target is None:
                return
            future = self.queue.popleft()
            if future.done():
                continue
            self._occupy(target)
            future.set_result(target)


class BatchScheduler:
    """Paces requests by the model above, in real time scaled by ``time_scale`` (0: no sleeping at all)."""

    def __init__(self, time_scale: float, params_of: Callable[[str], LatencyParams]) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.time_scale = time_scale
        self._params_of = params_of
        self._pools: dict[str, _Pool] = {}

    def _pool(self, server: str) -> _Pool:
        pool = self._pools.get(server)
        if pool is None:
            pool = self._pools[server] = _Pool(self._params_of(server))
        return pool

    def load(self, server: str) -> dict[str, object]:
        """Running and queued requests of one server right now (for ``GET /admin/models``)."""
        pool = self._pools.get(server)
        if pool is None:
            return {"running": [], "queued": 0}
        return {"running": [r.running for r in pool.replicas], "queued": len(pool.queue)}

    async def run(
        self, server: str, input_tokens: int, output_tokens: int, step_tokens: int | None = None
    ) -> AsyncGenerator[tuple[int, Timing | None]]:
        """Serve one request on ``server``; yields (tokens decoded so far, None) and finally (output, Timing).

        With ``step_tokens`` it also wakes every ``step_tokens`` tokens, so a stream can emit as it goes.
        The slot is released however the iteration ends (also when a client goes away).
        """
        params = self._params_of(server)
        if self.time_scale == 0:
            yield (
                output_tokens,
                Timing(0.0, prefill_s(params, input_tokens), output_tokens * per_token_decode_s(params, 1), 1, 0),
            )
            return
        pool = self._pool(server)
        loop = asyncio.get_running_loop()
        scale = self.time_scale
        start = loop.time()
        index = await pool.acquire()
        try:
            admitted = loop.time()
            replica = pool.replicas[index]
            batch_at_admission = replica.running
            await asyncio.sleep(prefill_s(pool.params, input_tokens) * scale)
            decode_start = loop.time()
            yield 0, None
            remaining = float(output_tokens)
            while remaining > 1e-9:
                seconds_per_token = per_token_decode_s(pool.params, replica.running) * scale
                chunk = remaining if step_tokens is None else min(remaining, float(step_tokens))
                event = replica.changed
                began = loop.time()
                try:
                    async with asyncio.timeout(chunk * seconds_per_token):
                        await event.wait()
                    done = (loop.time() - began) / seconds_per_token if seconds_per_token > 0 else chunk
                except TimeoutError:
                    done = chunk
                remaining = max(0.0, remaining - min(done, chunk))
                if remaining > 1e-9:
                    yield int(output_tokens - remaining), None
            finished = loop.time()
            yield (
                output_tokens,
                Timing(
                    queue_s=(admitted - start) / scale,
                    prefill_s=(decode_start - admitted) / scale,
                    decode_s=(finished - decode_start) / scale,
                    batch_at_admission=batch_at_admission,
                    replica=index,
                ),
            )
        finally:
            pool.release(index)

    async def serve(self, server: str, input_tokens: int, output_tokens: int) -> Timing:
        """Serve one request without streaming; returns where its time went."""
        final: Timing | None = None
        async for _, timing in self.run(server, input_tokens, output_tokens):
            final = timing or final
        assert final is not None
        return final
