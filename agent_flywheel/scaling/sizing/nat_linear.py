"""The NeMo Agent Toolkit's straight-line sizing method, re-implemented for comparison with ours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NatLinearEstimate:
    """What ``nat sizing calc`` would answer: C* and (fractional) GPUs from a straight line, or its error."""

    slope: float | None
    intercept: float | None
    r_squared: float | None
    outliers_removed: list[float]
    slo_concurrency: float | None
    gpus: float | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "r_squared": self.r_squared,
            "outliers_removed": self.outliers_removed,
            "slo_concurrency": self.slo_concurrency,
            "gpus": self.gpus,
            "error": self.error,
        }


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    n = len(x)
    sx, sy, sxy, sxx = x.sum(), y.sum(), (x * y).sum(), (x * x).sum()
    slope = (n * sxy - sx * sy) / (n * sxx - sx**2)
    return float(slope), float((sy - slope * sx) / n)


def nat_linear_estimate(
    concurrencies: Sequence[float],
    p95_s: Sequence[float],
    target_s: float,
    target_users: int,
    test_gpus: int,
    *,
    remove_outliers: bool = True,
    small_range_threshold: int = 8,
    extreme_iqr: float = 2.0,
    residual_iqr: float = 1.5,
    min_r_squared: float = 0.7,
) -> NatLinearEstimate:
    """The toolkit's estimate, re-implemented from its documented maths, for benchmarks against ours.

    With more than 4 points: if at most 8, drop points whose raw p95 is outside ``[Q1 - 2·IQR, Q3 + 2·IQR]``;
    then always drop points whose OLS residual is outside ``[Q1 - 1.5·IQR, Q3 + 1.5·IQR]`` (quartiles by linear
    interpolation). Closed-form OLS; R² < 0.7 means no estimate. ``C* = (T - intercept) / slope`` (error if
    ``T <= intercept`` or ``C* <= 0``) and ``GPUs = target_users / C* × test_gpus``, unrounded. Where the
    toolkit raises, this returns the message in ``error``.
    """
    x = np.asarray(concurrencies, dtype=float)
    y = np.asarray(p95_s, dtype=float)
    if len(x) != len(y) or len(x) < 2:
        return NatLinearEstimate(None, None, None, [], None, None, "need at least 2 points of equal length")
    removed: list[float] = []
    if remove_outliers and len(x) > 4:
        if len(x) <= small_range_threshold:
            q1, q3 = np.percentile(y, 25), np.percentile(y, 75)
            iqr = q3 - q1
            keep = (y >= q1 - extreme_iqr * iqr) & (y <= q3 + extreme_iqr * iqr)
            removed += x[~keep].tolist()
            x, y = x[keep], y[keep]
        if len(x) == 0:
            return NatLinearEstimate(None, None, None, removed, None, None, "no points left after outlier removal")
        slope, intercept = _ols(x, y)
        resid = y - (slope * x + intercept)
        q1, q3 = np.percentile(resid, 25), np.percentile(resid, 75)
        iqr = q3 - q1
        keep = (resid >= q1 - residual_iqr * iqr) & (resid <= q3 + residual_iqr * iqr)
        removed += x[~keep].tolist()
        x, y = x[keep], y[keep]
    if len(x) < 2 or len(np.unique(x)) < 2:
        return NatLinearEstimate(None, None, None, removed, None, None, "fewer than 2 distinct points to fit")
    slope, intercept = _ols(x, y)
    pred = slope * x + intercept
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    r2 = 1 - ss_res / ss_tot if ss_tot != 0 else 0.0
    if r2 < min_r_squared:
        return NatLinearEstimate(
            slope, intercept, r2, removed, None, None, f"Poor linear fit detected (R² = {r2:.3f} < {min_r_squared})"
        )
    if target_s <= intercept:
        return NatLinearEstimate(
            slope,
            intercept,
            r2,
            removed,
            None,
            None,
            f"Target time metric ({target_s}) must be greater than the intercept ({intercept})",
        )
    c = (target_s - intercept) / slope
    if c <= 0:
        return NatLinearEstimate(
            slope, intercept, r2, removed, None, None, f"Calculated target concurrency ({c}) is not positive"
        )
    return NatLinearEstimate(slope, intercept, r2, removed, float(c), target_users / c * test_gpus, None)
