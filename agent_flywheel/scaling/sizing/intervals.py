"""How far each level's measured p95 may be from the true one, from the requests actually measured.

Per level, the wider of two intervals:

* **resampled passes, then requests** (bootstrap): a resample draws the level's passes with replacement, then
  requests within each drawn pass, and takes the pooled p95. Between-pass variation (drift, a noisy
  neighbour during one pass) shows here; two identical passes and two different ones give different widths.
* **order statistics** (distribution-free): the p95 lies between two ranked requests, chosen from the
  binomial distribution (:func:`~agent_flywheel.scaling.sizing.quantiles.order_statistic_bounds`). This is
  what widens a level with few requests: resampling 8 requests never goes above the slowest of them, but the
  true p95 lies above the slowest of 8 with probability 0.95**8 = 66 %; below 59 requests (p95, 90 %) there is
  no upper bound at all.

p95 does not fall as load rises (a closed system), so a level's upper bound is at most any higher level's,
and its lower bound at least any lower level's: :func:`monotone_bounds` lets a well-measured level bound a
thin one. With per-level input (one p95 per level, no requests) nothing can be resampled and every bound
is unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent_flywheel.scaling.sizing.quantiles import (
    min_requests_for_upper_bound,
    order_statistic_bounds,
    quantile_with_failures,
)

P95 = 0.95


@dataclass(frozen=True)
class LevelBounds:
    """One level's p95 interval: ``low``/``high`` (``high`` may be ``inf``: not bounded by the data)."""

    requests: int
    passes: int
    low: float
    high: float

    @property
    def bounded(self) -> bool:
        """True when the data bound the p95 from above."""
        return math.isfinite(self.high)


def bootstrap_p95(passes: list[np.ndarray], rng: np.random.Generator, b: int) -> np.ndarray:
    """``b`` bootstrap replicates of the pooled p95: passes drawn with replacement, then requests within each."""
    passes = [p for p in passes if len(p)]
    if not passes:
        return np.full(b, np.nan)
    sizes = np.array([len(p) for p in passes])
    padded = np.full((len(passes), int(sizes.max())), np.nan)
    for i, p in enumerate(passes):
        padded[i, : len(p)] = p
    cols = []
    for n_slot in sizes:
        chosen = rng.integers(0, len(passes), size=b)
        idx = (rng.random((b, int(n_slot))) * sizes[chosen][:, None]).astype(int)
        cols.append(padded[chosen[:, None], idx])
    return quantile_with_failures(np.concatenate(cols, axis=1), P95, axis=1)


def level_bounds(passes: list[np.ndarray], rng: np.random.Generator, b: int, confidence: float) -> LevelBounds:
    """The wider of the bootstrap interval (passes, then requests) and the order-statistic interval."""
    pooled = np.concatenate([p for p in passes if len(p)]) if any(len(p) for p in passes) else np.array([])
    if len(pooled) == 0:
        return LevelBounds(0, 0, math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    boot = bootstrap_p95(passes, rng, b)
    with np.errstate(invalid="ignore"):
        b_low = float(np.quantile(boot, alpha, method="inverted_cdf"))
        b_high = float(np.quantile(boot, 1.0 - alpha, method="inverted_cdf"))
    o_low, o_high = order_statistic_bounds(pooled, P95, confidence)
    return LevelBounds(len(pooled), sum(1 for p in passes if len(p)), min(b_low, o_low), max(b_high, o_high))


def monotone_bounds(bounds: list[LevelBounds]) -> tuple[np.ndarray, np.ndarray]:
    """(lows, highs) per level, ascending concurrency, tightened by p95's monotonicity in load.

    A level's upper bound becomes the smallest upper bound at or above it; its lower bound the largest
    lower bound at or below it.
    """
    highs = np.minimum.accumulate(np.array([lb.high for lb in bounds], dtype=float)[::-1])[::-1]
    lows = np.maximum.accumulate(np.array([lb.low for lb in bounds], dtype=float))
    return lows, highs


def thin_level_warning(concurrency: float, requests: int, confidence: float) -> str | None:
    """A warning when a level had too few requests to bound its p95 from above, naming the count and the minimum."""
    need = min_requests_for_upper_bound(P95, confidence)
    if requests >= need:
        return None
    return (
        f"concurrency {concurrency:g}: {requests} requests, too few for a p95: bounding it from above at "
        f"{confidence:.0%} confidence takes at least {need}"
    )
