"""After a restart, the NIM is told again what it must serve: finished adapters and ready deployments.

The NeMo simulator keeps its jobs across restarts (``<state_dir>/nemo``); a job it reports ``completed``
promises an adapter the NIM serves, a deployment it reports ``ready`` a model the NIM serves. On start-up
it registers all of them again (registration is idempotent) and retries until the NIM accepts, so the two
agree whichever of them lost its state or came up later.
"""

from __future__ import annotations

import asyncio
import logging

from simulators.nemo import customization_jobs, deployments
from simulators.nemo.context import NemoSim
from simulators.nemo.upstream import UpstreamError

log = logging.getLogger("nemo-sim")


async def register_served_models(sim: NemoSim) -> int:
    """Register every model the simulator's state says is served; returns how many (UpstreamError on failure)."""
    count = 0
    for adapter, base, lora in customization_jobs.served_adapters(sim):
        await sim.nim.register_model(adapter, root=base, parent=base, lora=lora)
        count += 1
    for model in deployments.served_models(sim):
        await sim.nim.register_model(model, root=model, parent=None, lora=None)
        count += 1
    return count


async def resync_nim(sim: NemoSim, retry_s: float = 0.5) -> None:
    """Register the served models, retrying (real seconds, doubling up to 10 s) until the NIM accepts them all."""
    delay = retry_s
    while True:
        try:
            count = await register_served_models(sim)
        except UpstreamError as exc:
            log.warning("could not re-register served models with the NIM yet (retrying): %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        if count:
            log.info("re-registered %d served model(s) with the NIM", count)
        return
