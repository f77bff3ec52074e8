"""A load level split over several generators: who drives which share, and when they all start.

Why: one Python process holds about a thousand agent-shaped users before its own event loop, not the server,
sets the pace (``docs/benchmarks.md``). A level is therefore split over ``n`` generators (processes on one
machine, or Prefect workers), each driving its share from a common start time:

- **closed loop**: the level's users are split as evenly as whole users allow (``c = 10`` over 3: 4, 3, 3), and
  the measured requests in proportion to them, so every generator measures for about as long;
- **open loop**: the rate is split evenly; independent Poisson processes at ``λ/n`` add up to one Poisson
  process at ``λ`` (superposition), so the offered load is the same as from one generator. Each generator has
  a seed of its own, or they would all send at the same instants.

Counts are apportioned by largest remainder, so the shares always add up to the level exactly; a generator
that would get no user or no measured request is left out. Whoever merges the generators' runs adds their
histograms' bucket counts (exact) and their counters; see :func:`~.summaries.summarize_level`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agent_flywheel.scaling.loadgen.runs import Mode

SEED_STRIDE = 1_000_003  # generator g of a level uses seed + g * SEED_STRIDE; generator 0 keeps the level's seed


@dataclass(frozen=True)
class GeneratorShare:
    """What one generator drives in one pass of one level, and when it starts (``start_at``, epoch seconds).

    ``concurrency`` / ``rate_rps`` are the level's; ``users`` (closed loop) or ``share_rate_rps`` (open loop)
    this generator's part of it.
    """

    mode: Mode
    level: int
    pass_index: int
    concurrency: int | None
    rate_rps: float | None
    generator: int
    generators: int
    users: int | None
    share_rate_rps: float | None
    requests: int
    warmup_requests: int
    seed: int | None
    start_at: float

    @property
    def share(self) -> float:
        """Users (closed loop) or requests per second (open loop) this generator drives."""
        value = self.users if self.mode == "closed" else self.share_rate_rps
        assert value is not None  # split_level sets the one that belongs to the mode
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, sent to a generator process or worker."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratorShare:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` as whole numbers that add up to ``total`` (largest remainder).

    Ties go to the earlier weight, so the split is deterministic.
    """
    if total < 0 or not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("apportion needs total >= 0 and non-negative weights with a positive sum")
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_level(
    mode: Mode,
    value: float,
    requests: int,
    warmup_requests: int,
    generators: int,
    *,
    level: int,
    pass_index: int,
    start_at: float,
    seed: int | None = None,
) -> list[GeneratorShare]:
    """The shares of one pass of one level over at most ``generators`` generators, all starting at ``start_at``.

    ``value`` is the level's concurrency (closed loop) or rate (open loop); ``requests`` and ``warmup_requests``
    the level's measured and warm-up requests, split in proportion to each generator's users (or evenly).
    """
    if generators < 1:
        raise ValueError("generators must be >= 1")
    if requests < 1:
        raise ValueError("requests must be >= 1")
    if mode == "closed":
        concurrency = int(value)
        if concurrency != value or concurrency < 1:
            raise ValueError(f"concurrency must be a whole number >= 1, got {value}")
        users = [u for u in apportion(concurrency, [1.0] * min(generators, concurrency, requests)) if u]
        weights = [float(u) for u in users]
    elif mode == "open":
        if not value > 0:
            raise ValueError(f"rate must be > 0, got {value}")
        weights = [1.0] * min(generators, requests)
    else:
        raise ValueError(f"mode must be closed or open, got {mode!r}")
    # One measured request each first (no generator idles), the rest in proportion.
    measured = [1 + extra for extra in apportion(requests - len(weights), weights)]
    warmup = apportion(warmup_requests, weights)
    n = len(weights)
    return [
        GeneratorShare(
            mode=mode,
            level=level,
            pass_index=pass_index,
            concurrency=int(value) if mode == "closed" else None,
            rate_rps=float(value) if mode == "open" else None,
            generator=g,
            generators=n,
            users=users[g] if mode == "closed" else None,
            share_rate_rps=float(value) / n if mode == "open" else None,
            requests=measured[g],
            warmup_requests=warmup[g],
            seed=None if seed is None else seed + g * SEED_STRIDE,
            start_at=start_at,
        )
        for g in range(n)
    ]
