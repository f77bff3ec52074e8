"""Where a measured p95 curve crosses its target: bracketed by two measured levels, interpolated between them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from agent_flywheel.scaling.sizing.capacity import CapacityFit


@dataclass(frozen=True)
class Crossing:
    """Where one metric's p95 curve crosses its target."""

    status: Literal["bracketed", "unreachable", "lower_bound"]
    concurrency: float  # 0 when unreachable, the highest level when lower_bound
    bracket: tuple[float, float] | None
    method: str
    extrapolated: float | None = None
    noisy_levels: tuple[float, ...] = ()


def find_crossing(x: np.ndarray, y: np.ndarray, target_s: float, fit: CapacityFit | None) -> Crossing:
    """The largest concurrency meeting ``target_s``, by bracketing on the measured points.

    The bracket is the first failing level and the level just below it; inside it we interpolate in the
    capacity model's shape anchored at both measured points (log-linear when the model is flat there).
    """
    meets = y <= target_s
    if not meets[0]:
        return Crossing("unreachable", 0.0, None, "none")
    failing = np.flatnonzero(~meets)
    if len(failing) == 0:
        extra = fit.inverse(target_s) if (fit is not None and fit.saturated) else None
        return Crossing(
            "lower_bound",
            float(x[-1]),
            None,
            "all levels meet the target",
            extrapolated=extra if extra is not None and extra > x[-1] else None,
        )
    f = int(failing[0])
    noisy = tuple(float(v) for v in x[f + 1 :][meets[f + 1 :]])
    x_lo, x_hi, y_lo, y_hi = float(x[f - 1]), float(x[f]), float(y[f - 1]), float(y[f])
    c: float | None = None
    method = "capacity-model shape"
    if fit is not None:
        m_lo, m_hi = float(fit.predict(x_lo)), float(fit.predict(x_hi))
        if m_hi > m_lo * (1 + 1e-9) and math.isfinite(y_hi):
            m_target = m_lo + (target_s - y_lo) / (y_hi - y_lo) * (m_hi - m_lo)
            inv = fit.inverse(m_target)
            if inv is not None:
                c = min(max(inv, x_lo), x_hi)
    if c is None:
        if math.isfinite(y_hi) and y_lo > 0:
            method = "log-linear"
            frac = (math.log(target_s) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo))
            c = x_lo + frac * (x_hi - x_lo)
        else:
            method = "lower bracket end (the failing level had too many failures to interpolate)"
            c = x_lo
    return Crossing("bracketed", float(c), (x_lo, x_hi), method, noisy_levels=noisy)
