"""What every service of the NeMo simulator shares: settings, the simulated clock, the store, the clients.

One :class:`NemoSim` per app; the routers are built from it, so two apps in one process (tests start
several) never share state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from simulators.common import SimClock
from simulators.fault_switches import FaultSwitches
from simulators.nemo.settings import Faults, NemoSimSettings
from simulators.nemo.state import Store
from simulators.nemo.upstream import DataStoreClient, HttpPool, NimClient
from simulators.settings import LocalStackConfig

log = logging.getLogger("nemo-sim")


@dataclass
class NemoSim:
    """The simulator's shared state and neighbours."""

    cfg: LocalStackConfig
    settings: NemoSimSettings
    clock: SimClock
    store: Store
    faults: FaultSwitches[Faults]
    http: HttpPool
    datastore: DataStoreClient
    nim: NimClient
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # side effects in flight (not persisted)

    def now(self) -> float:
        """Simulated seconds on the job clock."""
        return self.clock.now()

    def save(self) -> None:
        """Snapshot the store when persistence is on (called after every change worth keeping)."""
        self.store.save()

    def spawn(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        """Run background work for a job, keeping a handle so it can be cancelled and is not garbage-collected."""
        task = asyncio.get_running_loop().create_task(work, name=f"nemo-sim:{key}")
        self.tasks[key] = task

        def _done(finished: asyncio.Task[None]) -> None:
            if self.tasks.get(key) is finished:
                del self.tasks[key]
            if not finished.cancelled() and finished.exception() is not None:
                log.error("background work %s failed", key, exc_info=finished.exception())

        task.add_done_callback(_done)

    def cancel_task(self, key: str) -> bool:
        """Cancel a job's background work; False when none was running."""
        task = self.tasks.pop(key, None)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def wait_until(self, sim_time: float) -> None:
        """Sleep until the simulated clock reads ``sim_time`` (follows speed changes and ``advance_s`` jumps)."""
        while True:
            remaining = sim_time - self.clock.now()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining / self.clock.speed, 0.05))
