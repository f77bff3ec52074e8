"""What one request seen during a rollout says: when, which arm, whether it succeeded, how long, how good."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

Variant = Literal["baseline", "canary"]


@dataclass(frozen=True)
class Observation:
    """One request seen during the rollout."""

    t_s: float
    variant: Variant
    ok: bool
    latency_s: float
    quality: float | None = None

    @classmethod
    def of(cls, item: Observation | Sequence[Any]) -> Observation:
        """Accept an Observation or a ``(t_s, variant, ok, latency_s[, quality])`` tuple."""
        if isinstance(item, Observation):
            return item
        t, variant, ok, latency = item[0], item[1], item[2], item[3]
        quality = item[4] if len(item) > 4 else None
        if variant not in ("baseline", "canary"):
            raise ValueError(f"variant must be 'baseline' or 'canary', got {variant!r}")
        return cls(float(t), variant, bool(ok), float(latency), None if quality is None else float(quality))
