"""Wait for a NeMo job (deployment, customization, evaluation, model sync) without guessing.

One poller for every kind of job, so they all behave the same:

- a **stall timeout** that restarts whenever the job shows progress (a higher percentage or a new
  status), as the blueprint does, so a long fine-tune that keeps moving is never killed, and a job
  stuck in ``pending`` for want of GPUs is;
- an optional **overall timeout**;
- a **progress callback** ``(status, percent, details)`` called on every change, so Prefect can show
  progress (a failing callback is logged, never fatal);
- a job that says it **cannot go on** (``blocked``: a fine-tune that reports ``NotEnoughResources``, a
  deployment whose image cannot be pulled) ends the wait at once with :class:`JobBlockedError`, rather
  than after the stall timeout: the job is still alive on the server, so the caller cancels it;
- transient errors while polling (no response, 5xx after the HTTP layer's retries) count as "no
  progress" rather than failing the wait;
- **cancellation-safe**: ``asyncio.CancelledError`` propagates untouched, after an optional
  ``on_cancel`` hook (e.g. cancel the remote job) ran shielded from the cancellation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from agent_flywheel.nemo.http import NemoAPIError, SleepFn
from agent_flywheel.nemo.status import Phase, classify
from agent_flywheel.transient import retryable_status

logger = logging.getLogger(__name__)

T = TypeVar("T")

ProgressCallback = Callable[[str, float | None, Mapping[str, Any]], Awaitable[None] | None]


@dataclass(frozen=True)
class Observation:
    """One poll's answer: the status, a percentage (0-100) when known, details for the callback.

    ``phase`` overrides the status's own classification (DMS: ``deployed: true`` means ready);
    ``reason`` explains a failure or a stall (e.g. the last status log); ``blocked`` says that the job,
    though not failed, cannot make progress by waiting (``reason`` says why).
    """

    status: str
    progress: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    phase: Phase | None = None
    reason: str | None = None
    blocked: bool = False

    @property
    def resolved_phase(self) -> Phase:
        """``phase`` when given, else what the status means."""
        return self.phase if self.phase is not None else classify(self.status)


@dataclass(frozen=True)
class PollSettings:
    """How often to poll and how long to wait: ``stall_timeout_s`` without progress, ``timeout_s`` in all."""

    interval_s: float = 5.0
    stall_timeout_s: float = 3600.0
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.stall_timeout_s <= 0 or (self.timeout_s is not None and self.timeout_s <= 0):
            raise ValueError("poll interval and timeouts must be positive")


class JobWaitError(Exception):
    """Waiting for a job ended without success; ``last`` is the last observation, if any."""

    def __init__(self, message: str, *, what: str = "", last: Observation | None = None) -> None:
        super().__init__(message)
        self.what = what
        self.last = last

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.args[0],), {"what": self.what, "last": self.last})


class JobFailedError(JobWaitError):
    """The job reached ``failed`` or ``cancelled``."""


class JobBlockedError(JobWaitError):
    """The job is alive but says it cannot go on (e.g. ``NotEnoughResources``): cancel it, do not wait."""


class JobStalledError(JobWaitError):
    """No progress for ``stall_timeout_s`` (e.g. pending for GPUs that never came)."""


class JobTimeoutError(JobWaitError):
    """The overall timeout passed although the job was still moving."""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, NemoAPIError):
        return exc.status is None or retryable_status(exc.status)
    return isinstance(exc, httpx.TransportError)


def _describe(obs: Observation | None) -> str:
    if obs is None:
        return "no successful poll"
    text = f"last status {obs.status!r}"
    if obs.progress is not None:
        text += f" at {obs.progress:.0f}%"
    if obs.reason:
        text += f"; {obs.reason}"
    return text


async def _notify(callback: ProgressCallback | None, obs: Observation, what: str) -> None:
    if callback is None:
        return
    try:
        result = callback(obs.status, obs.progress, obs.details)
        if inspect.isawaitable(result):
            await result
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("progress callback for %s failed (%s); waiting continues", what, type(exc).__name__)


async def wait_for(
    fetch: Callable[[], Awaitable[Observation]],
    *,
    what: str,
    settings: PollSettings | None = None,
    on_progress: ProgressCallback | None = None,
    on_cancel: Callable[[], Awaitable[Any]] | None = None,
    sleep: SleepFn | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Observation:
    """Poll ``fetch`` until the job succeeds (returned) or fails, stalls or times out (raised).

    ``sleep`` and ``clock`` are injectable so tests run a one-hour wait in microseconds.
    """
    settings = settings or PollSettings()
    do_sleep: SleepFn = sleep or asyncio.sleep
    started = clock()
    last_progress_at = started
    best_progress = -math.inf
    last: Observation | None = None
    last_reported: tuple[str, float | None] | None = None
    polls = 0
    try:
        while True:
            polls += 1
            try:
                obs: Observation | None = await fetch()
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                logger.warning("polling %s: transient error (%s); counted as no progress", what, type(exc).__name__)
                obs = None
            now = clock()
            if obs is not None:
                moved = last is None or obs.status != last.status
                if obs.progress is not None and obs.progress > best_progress:
                    moved = True
                    best_progress = obs.progress
                if moved:
                    last_progress_at = now
                if (obs.status, obs.progress) != last_reported:
                    last_reported = (obs.status, obs.progress)
                    await _notify(on_progress, obs, what)
                last = obs
                phase = obs.resolved_phase
                if phase is Phase.SUCCEEDED:
                    logger.info(
                        "%s finished with status %r after %d polls (%.0f s)", what, obs.status, polls, now - started
                    )
                    return obs
                if phase is Phase.FAILED:
                    raise JobFailedError(
                        f"{what} ended with status {obs.status!r}: {obs.reason or 'no reason given'}",
                        what=what,
                        last=obs,
                    )
                if obs.blocked:
                    raise JobBlockedError(
                        f"{what} cannot go on (status {obs.status!r}): {obs.reason or 'no reason given'}",
                        what=what,
                        last=obs,
                    )
            if settings.timeout_s is not None and now - started >= settings.timeout_s:
                raise JobTimeoutError(
                    f"{what} not finished after {settings.timeout_s:.0f} s ({_describe(last)})", what=what, last=last
                )
            if now - last_progress_at >= settings.stall_timeout_s:
                raise JobStalledError(
                    f"{what} made no progress for {settings.stall_timeout_s:.0f} s ({_describe(last)})",
                    what=what,
                    last=last,
                )
            await do_sleep(settings.interval_s)
    except asyncio.CancelledError:
        if on_cancel is not None:
            logger.info("waiting for %s was cancelled; running the cancel hook", what)
            try:
                await asyncio.shield(on_cancel())
            except Exception as exc:
                logger.warning("cancel hook for %s failed (%s)", what, type(exc).__name__)
        raise


async def wait_for_answer(
    get: Callable[[], Awaitable[T]],
    observe: Callable[[T], Observation],
    *,
    what: str,
    settings: PollSettings,
    on_progress: ProgressCallback | None = None,
    on_cancel: Callable[[], Awaitable[Any]] | None = None,
    sleep: SleepFn | None = None,
) -> T:
    """:func:`wait_for` over ``get``, each answer read by ``observe``; returns the last answer itself.

    Why: a caller wants the finished job (its id, its output model), not only the poll's observation of it.
    """
    latest: list[T] = []

    async def fetch() -> Observation:
        answer = await get()
        latest[:] = [answer]
        return observe(answer)

    await wait_for(fetch, what=what, settings=settings, on_progress=on_progress, on_cancel=on_cancel, sleep=sleep)
    return latest[0]
