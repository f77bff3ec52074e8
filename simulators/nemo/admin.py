"""Simulator-only endpoints: health, fault injection and the job clock (never called by production code).

``POST /admin/clock {"advance_s": 60}`` moves every job a minute forward at once, which is how tests
finish a fine-tune without waiting; ``POST /admin/faults`` changes the injected faults at run time.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulators.common import SIMULATOR_LABEL
from simulators.nemo import customization_jobs, deployments
from simulators.nemo.context import NemoSim
from simulators.nemo.crud import validate_body
from simulators.nemo.settings import Faults


class ClockBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speed: float | None = Field(default=None, gt=0)
    advance_s: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _something(self) -> ClockBody:
        if self.speed is None and self.advance_s is None:
            raise ValueError("give speed and/or advance_s")
        return self


async def advance_side_effects(sim: NemoSim) -> None:
    """Let jobs and deployments that have just ended (or become ready) act on it right away."""
    await customization_jobs.advance_all(sim)
    await deployments.advance_all(sim)


def build_router(sim: NemoSim) -> APIRouter:
    """``/health`` and ``/admin/...``."""
    router = APIRouter(tags=["Simulator"])

    def clock_state() -> dict[str, float]:
        return {"speed": sim.clock.speed, "now_s": round(sim.clock.now(), 3)}

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness for ``flywheel stack`` and the tests."""
        return {"status": "ok", "service": "nemo", "simulator": SIMULATOR_LABEL, "clock": clock_state()}

    @router.get("/admin/clock")
    async def get_clock() -> dict[str, float]:
        """Speed and reading of the job clock."""
        return clock_state()

    @router.post("/admin/clock")
    async def set_clock(payload: Any = Body(...)) -> dict[str, float]:
        """Change the clock's speed and/or jump it forward, then let ended jobs act."""
        body = validate_body(ClockBody, payload)
        if body.get("speed") is not None:
            sim.clock.set_speed(float(body["speed"]))
        if body.get("advance_s"):
            sim.clock.advance(float(body["advance_s"]))
        await advance_side_effects(sim)
        return clock_state()

    @router.get("/admin/faults")
    async def get_faults() -> dict[str, Any]:
        """The faults in force."""
        return sim.faults.current.model_dump()

    @router.post("/admin/faults")
    async def set_faults(payload: Any = Body(...)) -> dict[str, Any]:
        """Merge the given fault settings into the current ones (unknown keys: 422)."""
        if not isinstance(payload, dict):
            validate_body(Faults, payload)
        try:
            return sim.faults.update(payload).model_dump()
        except ValidationError:
            validate_body(Faults, {**sim.faults.current.model_dump(), **payload})
            raise

    @router.delete("/admin/faults")
    async def reset_faults() -> dict[str, Any]:
        """Back to the configured faults (by default none)."""
        return sim.faults.reset().model_dump()

    return router
