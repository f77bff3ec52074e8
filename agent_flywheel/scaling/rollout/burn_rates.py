"""Multi-window burn rates of one SLI over a stage, evaluated every half short window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_flywheel.config import RolloutSLO
from agent_flywheel.scaling.rollout.policy import HOUR_S, RolloutPolicy


@dataclass
class BurnRateResult:
    """One burn rule on one SLI over the stage."""

    sli: str
    rule: str
    threshold: float
    long_window_s: float
    short_window_s: float
    max_burn: float | None  # the largest min(long, short) burn at any evaluation time with enough requests
    fired: bool
    first_fired_at_s: float | None
    long_burn_when_fired: float | None
    short_burn_when_fired: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


def burn_rates(
    times: np.ndarray,
    bad: np.ndarray,
    budget: float,
    sli: str,
    start_s: float,
    end_s: float,
    scale: float,
    slo: RolloutSLO,
    policy: RolloutPolicy,
) -> list[BurnRateResult]:
    """Each rule of ``policy`` on the bad events ``bad`` at ``times``: its threshold, its highest burn, whether it fired."""
    order = np.argsort(times, kind="stable")
    t, b = times[order], bad[order].astype(float)
    cum = np.concatenate([[0.0], np.cumsum(b)])
    results = []
    shortest = min(r.short_window_s for r in policy.rules) * scale
    step = max(shortest / 2.0, 1e-3)
    evals = np.arange(start_s + shortest, end_s + step / 2, step)
    if len(evals) == 0:
        evals = np.array([end_s])
    for rule in policy.rules:
        long_w, short_w = rule.long_window_s * scale, rule.short_window_s * scale
        threshold = rule.threshold(slo.slo_period_s)

        def window(width: float) -> tuple[np.ndarray, np.ndarray]:
            lo = np.searchsorted(t, np.maximum(evals - width, start_s), side="left")
            hi = np.searchsorted(t, evals, side="right")
            return (hi - lo).astype(float), cum[hi] - cum[lo]

        n_long, bad_long = window(long_w)
        n_short, bad_short = window(short_w)
        with np.errstate(divide="ignore", invalid="ignore"):
            burn_long = np.where(n_long > 0, bad_long / n_long / budget, 0.0)
            burn_short = np.where(n_short > 0, bad_short / n_short / budget, 0.0)
        enough = (n_long >= policy.min_window_requests) & (n_short >= policy.min_short_window_requests)
        both = np.minimum(burn_long, burn_short)
        fire = enough & (burn_long > threshold) & (burn_short > threshold)
        first = int(np.argmax(fire)) if fire.any() else None
        results.append(
            BurnRateResult(
                sli=sli,
                rule=rule.name,
                threshold=threshold,
                long_window_s=long_w,
                short_window_s=short_w,
                max_burn=float(both[enough].max()) if enough.any() else None,
                fired=first is not None,
                first_fired_at_s=float(evals[first]) if first is not None else None,
                long_burn_when_fired=float(burn_long[first]) if first is not None else None,
                short_burn_when_fired=float(burn_short[first]) if first is not None else None,
            )
        )
    return results


def format_window(seconds: float) -> str:
    """A window length as people say it: ``1 h``, ``5 min``, ``2.5 min``, ``30 s``."""
    if seconds >= HOUR_S and abs(seconds / HOUR_S - round(seconds / HOUR_S)) < 1e-6:
        return f"{seconds / HOUR_S:.0f} h"
    if seconds >= 60:
        return (
            f"{seconds / 60:.0f} min" if abs(seconds / 60 - round(seconds / 60)) < 1e-6 else f"{seconds / 60:.1f} min"
        )
    return f"{seconds:.0f} s"
