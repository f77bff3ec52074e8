"""The capacity model of a closed system, ``R(N) = max(D, N/X - Z)``, and its fit to measured p95 latency."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CapacityFit:
    """``R(N) = max(D, N/X - Z)`` fitted to p95 latency, as the hinge ``D + s·max(0, N - K)``."""

    d_s: float  # latency floor (p95 at low load)
    slope_s: float  # s = 1/X: seconds of p95 per extra concurrent workflow past the knee
    knee: float  # K: the concurrency where queueing starts
    r_squared: float  # on relative (log-like) scale
    saturated: bool  # True when the knee lies inside the measured range

    @property
    def x_max_rps(self) -> float | None:
        """Bottleneck throughput implied by the slope (workflows/s), None when no saturation was measured."""
        return 1.0 / self.slope_s if self.slope_s > 0 else None

    @property
    def z_s(self) -> float | None:
        """The model's ``Z`` (think-time-like offset): ``s·K - D``."""
        return self.slope_s * self.knee - self.d_s if self.slope_s > 0 else None

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        """Model p95 at concurrency ``n``."""
        arr = np.asarray(n, dtype=float)
        return self.d_s + self.slope_s * np.maximum(0.0, arr - self.knee)

    def inverse(self, target_s: float) -> float | None:
        """Concurrency at which the model reaches ``target_s`` (None if flat or below the floor)."""
        if target_s < self.d_s or self.slope_s <= 0:
            return None
        return self.knee + (target_s - self.d_s) / self.slope_s

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "model": "R(N) = max(D, N/X - Z)",
            "d_s": self.d_s,
            "x_max_rps": self.x_max_rps,
            "z_s": self.z_s,
            "knee": self.knee,
            "slope_s": self.slope_s,
            "r_squared": self.r_squared,
            "saturated": self.saturated,
        }


def fit_capacity(concurrency: Sequence[float] | np.ndarray, p95_s: Sequence[float] | np.ndarray) -> CapacityFit | None:
    """Fit the hinge model by weighted least squares on relative error, grid-searching the knee.

    Why: latency against concurrency is flat, then linear with slope 1/X_max past saturation (operational laws
    of a closed system); a straight line through both regimes misplaces C*. Weights ``1/p95²`` make the fit
    care about relative error, so the low-latency points are not drowned by the large ones. Failed levels
    (infinite p95) are left out of the fit, never out of the bracketing.
    """
    x = np.asarray(concurrency, dtype=float)
    y = np.asarray(p95_s, dtype=float)
    keep = np.isfinite(y) & (y > 0)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return None
    w = 1.0 / y**2
    grid = np.unique(np.concatenate([x, np.geomspace(x.min(), x.max(), 64)]))
    h = np.maximum(0.0, x[None, :] - grid[:, None])  # (G, L)
    sw, sy = w.sum(), (w * y).sum()
    sh, shh, shy = (w * h).sum(1), (w * h * h).sum(1), (w * h * y).sum(1)
    det = sw * shh - sh**2
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(det > 1e-12, (sw * shy - sh * sy) / det, 0.0)
    s = np.maximum(s, 0.0)
    d = (sy - s * sh) / sw
    sse = (w * (y[None, :] - d[:, None] - s[:, None] * h) ** 2).sum(1)
    best = int(np.argmin(sse + 1e-12 * grid))  # ties: the smaller knee
    d_b, s_b, k_b = float(d[best]), float(s[best]), float(grid[best])
    mean_w = sy / sw
    sst = float((w * (y - mean_w) ** 2).sum())
    r2 = 1.0 - float(sse[best]) / sst if sst > 0 else 1.0
    saturated = s_b > 0 and k_b < x.max() and (x > k_b).sum() >= 1
    return CapacityFit(d_b, s_b, k_b, r2, bool(saturated))
