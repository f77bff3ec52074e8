"""One generator driving its share of a level: wait for the common start time, run the share, report it.

Used the same way by a generator process (:mod:`.processes`) and by a Prefect worker's task: both are handed a
:class:`GeneratorSetup` (how to build the request function and the HTTP client, picklable, so it can cross
into another process) and a :class:`~.shares.GeneratorShare`, and send back the run's JSON form.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from agent_flywheel.scaling.blocking import run_coroutine
from agent_flywheel.scaling.loadgen.requests import SendFn, make_client
from agent_flywheel.scaling.loadgen.runs import (
    DEFAULT_LATE_THRESHOLD_S,
    Hold,
    LevelRun,
    run_closed_level,
    run_open_level,
)
from agent_flywheel.scaling.loadgen.shares import GeneratorShare

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class GeneratorSetup:
    """How a generator builds its request function and its HTTP client.

    ``make_send`` must be picklable (a module-level function, or ``functools.partial`` of one, such as
    ``partial(template_sender, template, inputs)``): it is called once in each generator process.
    ``headers`` go with every request (an agent's credentials: passed to the processes, never logged).
    """

    make_send: Callable[[], SendFn]
    base_url: str
    timeout_s: float = 30.0
    max_connections: int = 256
    headers: Mapping[str, str] | None = None
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S
    max_in_flight: int | None = None  # open loop: a cap on each generator's requests in flight

    def client(self, concurrency: int) -> aiohttp.ClientSession:
        """The generator's HTTP session, its pool large enough for ``concurrency`` requests in flight."""
        return make_client(
            self.base_url,
            max_connections=max(self.max_connections, 2 * concurrency),
            timeout_s=self.timeout_s,
            headers=self.headers,
        )


async def wait_until(start_at: float, clock: Clock = time.time, sleep: Sleep = asyncio.sleep) -> float:
    """Sleep until ``start_at`` (epoch seconds by ``clock``); returns how late it woke (0 when on time).

    Why a wall clock: the generators of a level may be on different machines; their clocks agree (NTP) to
    about a millisecond, far below a level's length.
    """
    while (delay := start_at - clock()) > 0:  # the event loop's clock is not this one: sleep until this one agrees
        await sleep(delay)
    return clock() - start_at


async def run_share(
    send: SendFn,
    client: aiohttp.ClientSession,
    share: GeneratorShare,
    *,
    timeout_s: float,
    late_threshold_s: float = DEFAULT_LATE_THRESHOLD_S,
    max_in_flight: int | None = None,
    hold: Hold | None = None,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
) -> LevelRun:
    """Wait for the share's start time, drive it (closed or open loop), and label the run with the share.

    ``hold`` keeps the load on after this generator's measured requests until the others' are done too
    (:mod:`.processes` has a channel for it; Prefect workers do not, and stop at their own last request).
    """
    start_late = await wait_until(share.start_at, clock, sleep)
    if share.mode == "closed":
        assert share.users is not None
        run = await run_closed_level(
            send,
            client,
            share.users,
            share.requests,
            warmup_requests=share.warmup_requests,
            timeout_s=timeout_s,
            level=share.level,
            pass_index=share.pass_index,
            late_threshold_s=late_threshold_s,
            hold=hold,
        )
    else:
        assert share.share_rate_rps is not None
        run = await run_open_level(
            send,
            client,
            share.share_rate_rps,
            share.requests,
            warmup_requests=share.warmup_requests,
            timeout_s=timeout_s,
            level=share.level,
            pass_index=share.pass_index,
            late_threshold_s=late_threshold_s,
            seed=share.seed,
            max_in_flight=max_in_flight,
            hold=hold,
        )
    return dataclasses.replace(
        run,
        concurrency=share.concurrency,
        rate_rps=share.rate_rps,
        generator=share.generator,
        generators=share.generators,
        share=share.share,
        start_late_s=start_late,
    )


def drive_share(setup: GeneratorSetup, share: GeneratorShare) -> LevelRun:
    """One share with a fresh event loop and client (a Prefect worker's task); blocking."""

    async def main() -> LevelRun:
        async with setup.client(share.users or 1) as client:
            return await run_share(
                setup.make_send(),
                client,
                share,
                timeout_s=setup.timeout_s,
                late_threshold_s=setup.late_threshold_s,
                max_in_flight=setup.max_in_flight,
            )

    return run_coroutine(main())
