"""The time window a rollout check judges: durations (``90``, ``30s``, ``10m``, ``1h``, ``1d``) and instants
(epoch seconds or ISO 8601) as people and rollout engines write them."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from agent_flywheel.scaling.profiling.spans import Trace
from agent_flywheel.scaling.rollout.observed import time_range

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number of seconds or a number with ``s``, ``m``/``min``, ``h`` or ``d``."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (write e.g. 600, 30s, 10m, 1h)")
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if seconds <= 0:
        raise ValueError(f"a window must be longer than 0 s, got {text!r}")
    return seconds


def parse_instant(text: str) -> float:
    """Epoch seconds of ``text``: a number (epoch seconds) or an ISO 8601 time (UTC when it names no zone)."""
    value = str(text).strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"not a time: {text!r}")
        return number
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (write epoch seconds or ISO 8601, e.g. 2025-06-01T12:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def resolve_window(
    traces: Sequence[Trace], window_s: float | None, until_s: float | None, now_s: float
) -> tuple[float, float]:
    """``[start, end)`` in epoch seconds: ``window_s`` ending at ``until_s`` (default: now); with no window, every
    trace (from the earliest request to just after the latest); with neither window nor trace, an empty instant
    before now (the check then holds for want of traffic)."""
    if window_s is not None:
        end = now_s if until_s is None else until_s
        return end - window_s, end
    span = time_range(traces)
    if span is None:
        end = now_s if until_s is None else until_s
        return end - 1.0, end
    start, end = span
    if until_s is not None:
        end = min(end, until_s)
        if end <= start:
            start = end - 1.0
    return start, end
