"""Quantiles of latencies where ``inf`` marks a failed request."""

from __future__ import annotations

import math

import numpy as np


def quantile_with_failures(values: np.ndarray, q: float, axis: int = -1) -> np.ndarray:
    """Linear-interpolated quantile (numpy's default method) where ``inf`` marks a failed request.

    Why: numpy's interpolation between a finite value and ``inf`` can give NaN; here any interpolation that
    touches a failure is a failure (``inf``), so "more than 5 % failed" means "p95 not met".
    """
    arr = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = arr.shape[axis]
    if n == 0:
        return np.full(np.delete(arr.shape, axis), np.nan) if arr.ndim > 1 else np.array(np.nan)
    h = (n - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    a = np.take(arr, lo, axis=axis)
    b = np.take(arr, hi, axis=axis)
    with np.errstate(invalid="ignore"):
        lerp = a + (b - a) * frac
    if frac == 0:
        return np.asarray(a)
    return np.where(np.isinf(b) | np.isinf(a), np.inf, lerp)


def min_requests_for_upper_bound(q: float, confidence: float) -> int:
    """The fewest requests whose slowest one bounds the ``q`` quantile from above at ``confidence`` (two-sided).

    Why: the true p95 lies above the slowest of ``n`` requests with probability ``0.95**n``; below
    ``ceil(log(alpha/2) / log(q))`` requests (59 for a p95 at 90 %) nothing in the data bounds it from above.
    """
    alpha = (1.0 - confidence) / 2.0
    return math.ceil(math.log(alpha) / math.log(q) - 1e-9)


def order_statistic_bounds(values: np.ndarray, q: float, confidence: float) -> tuple[float, float]:
    """Distribution-free bounds on the ``q`` quantile from ``n`` independent requests: two order statistics.

    The number of requests at or below the true quantile is Binomial(n, q). The upper bound is the ``u``-th
    smallest request, ``u`` the smallest rank with ``P(B <= u - 1) >= 1 - alpha/2``; the lower bound the ``l``-th,
    ``l`` the largest rank with ``P(B >= l) >= 1 - alpha/2``. With too few requests for an upper bound it is
    ``inf`` (see :func:`min_requests_for_upper_bound`); failures (``inf``) are simply the slowest requests.
    Why: exact for any latency distribution, and a platform engineer can check it by counting requests.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    k = np.arange(n + 1, dtype=float)
    log_pmf = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(v + 1) + math.lgamma(n - v + 1) for v in k])
        + k * math.log(q)
        + (n - k) * math.log1p(-q)
    )
    cdf = np.cumsum(np.exp(log_pmf))  # cdf[j] = P(B <= j)
    above = np.flatnonzero(cdf[:n] >= 1.0 - alpha - 1e-12)  # rank u = j + 1
    upper = float(x[above[0]]) if len(above) else math.inf
    below = np.flatnonzero(cdf[:n] <= alpha + 1e-12)  # rank l = j + 1
    lower = float(x[below[-1]]) if len(below) else 0.0
    return lower, upper
