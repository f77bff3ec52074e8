"""What the simulators' fault injection shares: the switches in force, their dice, and the faulted answer.

Each simulator that injects faults (the log server, NeMo) has its own switches (a pydantic model with a
``seed``) and its own middleware; :class:`FaultSwitches` keeps the switches in force and the configured ones
to reset to, rolls the seeded dice and counts what was injected, and :func:`send_fault_answer` writes an
injected error answer, labelled simulated and faulted.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from starlette.types import Send

from simulators.common import SIMULATED_HEADER

Switches = TypeVar("Switches", bound=BaseModel)


class FaultSwitches(Generic[Switches]):
    """The faults in force, the configured ones to reset to, the dice (seeded by the switches' ``seed``) and
    counters of what was injected; thread-safe, since handlers run in several threads."""

    def __init__(self, configured: Switches, log: logging.Logger, label: str = "fault injection") -> None:
        self.configured = configured
        self.current = configured.model_copy(deep=True)
        self.counts: Counter[str] = Counter()
        self._log, self._label = log, label
        self._rng = random.Random(_seed(configured))
        self._lock = threading.Lock()

    def update(self, patch: dict[str, Any]) -> Switches:
        """Merge ``patch`` into the current faults; a bad value raises ``ValidationError`` and changes nothing."""
        merged = type(self.current).model_validate({**self.current.model_dump(), **patch})
        with self._lock:
            self.current = merged
            if "seed" in patch:
                self._rng = random.Random(_seed(merged))
        self._log.warning("%s now: %s", self._label, merged.model_dump(exclude_defaults=True) or "off")
        return merged

    def reset(self) -> Switches:
        """Back to the configured faults, with fresh counters."""
        with self._lock:
            self.current = self.configured.model_copy(deep=True)
            self._rng = random.Random(_seed(self.configured))
            self.counts.clear()
        return self.current

    def roll(self, probability: float) -> bool:
        """True with ``probability``."""
        if probability <= 0:
            return False
        with self._lock:
            return self._rng.random() < probability

    def count(self, what: str) -> None:
        """Count one injected fault (e.g. ``error``, ``refused``, ``delayed``)."""
        with self._lock:
            self.counts[what] += 1

    def snapshot(self) -> dict[str, Any]:
        """The switches in force and, under ``injected``, the counters."""
        with self._lock:
            return {**self.current.model_dump(), "injected": dict(self.counts)}


def _seed(switches: BaseModel) -> int | None:
    seed = getattr(switches, "seed", None)
    return None if seed is None else int(seed)


async def send_fault_answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer an ASGI request with an injected error: ``body`` (JSON), the service's own ``headers``, and the
    simulated and ``x-flywheel-fault: error`` labels."""
    labels = [(SIMULATED_HEADER.lower().encode(), b"true"), (b"x-flywheel-fault", b"error")]
    framing = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": framing + headers + labels})
    await send({"type": "http.response.body", "body": body})
