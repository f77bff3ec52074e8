"""Synthetic rollout traffic: closed-loop users through the agent's router, each answer an observation.

Each simulated user keeps its arm across stages (the agent routes by user id), and a monitor judges the stage
as it runs, cutting it short at the first rollback, as a real rollout controller aborts at its first alarm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import httpx

from agent_flywheel.config import RolloutConfig, RolloutStage
from agent_flywheel.scaling.inputs import request_body
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.stages import analyze_stage

ROLLOUT_USERS = 1000  # simulated users of a rollout check; each keeps its arm across stages (routing by user id)
ObservationRow = tuple[float, str, bool, float, None]


def observation_of(
    t_s: float, status: int | None, body: Any, latency_s: float, canary_model: str
) -> tuple[float, Literal["baseline", "canary"], bool, float, None]:
    """One rollout observation ``(t_s, variant, ok, latency_s, quality)`` from the agent's answer.

    The variant is the answer's ``route`` (``baseline``/``canary``), else its ``model`` compared with the
    canary. A failure that names no model (a timeout, a connection error) cannot be attributed and counts
    against the canary: a rollout check must not look better because its failures are anonymous. Quality
    is not measured by the traffic driver (None).
    """
    data = body if isinstance(body, Mapping) else {}
    ok = status is not None and 200 <= status < 300
    route = data.get("route")
    variant: Literal["baseline", "canary"]
    if route in ("baseline", "canary"):
        variant = "canary" if route == "canary" else "baseline"
    elif isinstance(data.get("model"), str):
        variant = "canary" if data["model"] == canary_model else "baseline"
    else:
        variant = "canary"
    return (t_s, variant, ok, latency_s, None)


async def drive_stage(
    client: httpx.AsyncClient,
    chat_path: str,
    inputs: Sequence[str | Mapping[str, Any]],
    stage: RolloutStage,
    start_s: float,
    config: RolloutConfig,
    canary_model: str,
    concurrency: int,
    policy: RolloutPolicy,
    observations: list[ObservationRow],
    counter: Iterator[int],
    check_interval_s: float,
) -> float | None:
    """Closed-loop traffic for one stage; returns the (rollout) time it was cut short by a rollback, if it was."""
    origin = time.perf_counter()
    stop = asyncio.Event()
    cut_at: list[float] = []

    async def user() -> None:
        while not stop.is_set():
            sent = time.perf_counter() - origin
            if sent >= stage.duration_s:
                return
            i = next(counter)
            body = request_body(inputs, i, "rollout")
            if "message" in body:
                body["user_id"] = f"rollout-user-{i % ROLLOUT_USERS}"
            t0 = time.perf_counter()
            status: int | None = None
            data: Any = None
            try:
                answer = await client.post(chat_path, json=body)
                status = answer.status_code
                try:
                    data = answer.json()
                except ValueError:
                    data = None
            except httpx.HTTPError:
                pass
            observations.append(observation_of(start_s + sent, status, data, time.perf_counter() - t0, canary_model))

    async def monitor() -> None:
        # A real controller aborts at the first alarm: judge the stage so far, roll back early if it must.
        while not stop.is_set():
            await asyncio.sleep(check_interval_s)
            now = start_s + time.perf_counter() - origin
            report = analyze_stage(observations, stage, config.slo, start_s=start_s, now_s=now, policy=policy)
            if report.decision == "rollback":
                cut_at.append(now)
                stop.set()

    watcher = asyncio.create_task(monitor())
    await asyncio.gather(*(user() for _ in range(concurrency)))
    stop.set()
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return cut_at[0] if cut_at else None
