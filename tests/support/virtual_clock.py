"""An asyncio event loop on a simulated clock: sleeps and timeouts take no wall-clock time.

``loop.time()`` starts at 0 and moves only when nothing is ready to run: then it jumps to the next timer.
Code that measures with ``loop.time()`` and waits with ``asyncio.sleep`` / ``asyncio.timeout`` (the NIM
simulator's :class:`~simulators.nim.latency.BatchScheduler`) runs as it would in real time, as fast as the CPU
allows and with the same result on a busy machine as on an idle one. Nothing here may wait on real I/O.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _SimulatedSelector(selectors.DefaultSelector):
    """Polls without blocking; a wait for the next timer advances the loop's clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.clock: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events and timeout is not None and timeout > 0 and self.clock is not None:
            self.clock.now += timeout
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose ``time()`` is simulated (see the module docstring)."""

    def __init__(self) -> None:
        selector = _SimulatedSelector()
        super().__init__(selector)
        self.now = 0.0
        selector.clock = self

    def time(self) -> float:
        return self.now


def run_simulated(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualClockLoop`."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)
