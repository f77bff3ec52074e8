"""The tests a stage check needs (no SciPy: they are short): Wilson bounds, Fisher's exact test, Mann-Whitney U."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

_NORMAL = NormalDist()


def wilson_bounds(bad: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (lower, upper) for a proportion, each at level ``1 - alpha``."""
    if n == 0:
        return 0.0, 1.0
    z = _NORMAL.inv_cdf(1 - alpha)
    p = bad / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher_greater(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided Fisher exact p-value that group A's bad ratio is higher than group B's."""
    total_bad, total = bad_a + bad_b, n_a + n_b
    if total_bad == 0 or n_a == 0 or n_b == 0:
        return 1.0

    def log_pmf(k: int) -> float:
        return (
            math.lgamma(total_bad + 1)
            - math.lgamma(k + 1)
            - math.lgamma(total_bad - k + 1)
            + math.lgamma(total - total_bad + 1)
            - math.lgamma(n_a - k + 1)
            - math.lgamma(total - total_bad - n_a + k + 1)
            - (math.lgamma(total + 1) - math.lgamma(n_a + 1) - math.lgamma(total - n_a + 1))
        )

    hi = min(total_bad, n_a)
    lo_k = max(bad_a, total_bad - (total - n_a))
    return float(min(1.0, sum(math.exp(log_pmf(k)) for k in range(lo_k, hi + 1))))


def mann_whitney_greater(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U test that ``a`` tends to be larger than ``b``: (P(a > b) + ½P(a = b), one-sided p).

    Normal approximation with tie correction and continuity correction; fine from about 10 per group.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.5, 1.0
    both = np.concatenate([x, y])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    effect = u1 / (n1 * n2)
    if var <= 0:
        return effect, 1.0
    z = (u1 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return effect, 1.0 - _NORMAL.cdf(z)
