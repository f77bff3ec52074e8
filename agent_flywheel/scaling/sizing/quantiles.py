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
