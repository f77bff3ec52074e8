"""Sweeps for the sizing tests: the NeMo Agent Toolkit documentation's sample, and sweeps from a known latency curve.

``NAT_DOC_SAMPLE`` is the per-concurrency table of the toolkit's sizing guide (``docs/source/improve-workflows/
sizing-calc.md``, "Sample Output": ``--concurrencies 1,2,4,8,16,32 --num_passes 2``), sized there for 100 users
under a 10 s workflow p95 on 8 test GPUs; its straight line gives 75.4 GPUs.

:class:`LatencyCurve` draws per-request latencies whose true p95 at every concurrency is known: lognormal around
a median that depends on the load, times a per-pass factor (drift between passes). The true C* is where the
true p95 crosses the target, so each test knows the right answer without measuring anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agent_flywheel.scaling.sizing.sweeps import LevelData, SweepData

NAT_DOC_SAMPLE = pd.DataFrame(
    {
        "concurrency": [1, 2, 4, 8, 16, 32],
        "llm_p95_s": [1.14981, 1.3591, 1.50682, 2.10668, 3.30196, 6.57847],
        "workflow_p95_s": [4.03488, 4.71197, 5.67581, 7.90895, 12.677, 24.5307],
        "total_runtime_s": [8.06977, 9.32298, 11.1683, 15.6193, 25.3173, 43.9806],
    }
)
NAT_DOC_TARGETS = {"target_workflow_p95_s": 10.0, "target_users": 100, "test_gpus": 8}
NAT_DOC_LINEAR_GPUS = 75.35  # the guide prints 75.4

Z95 = 1.6448536269514722  # the standard normal's 95th percentile


@dataclass(frozen=True)
class LatencyCurve:
    """Per-request latency ``p95(c) × exp(σ·(Z - z95)) × pass factor``: a known true p95 at every concurrency.

    ``p95_at`` maps concurrency (a real number) to the true p95 of a request; within a pass every request is
    multiplied by the pass's factor ``exp(N(0, pass_sigma²))``, so the level's true p95 is ``p95_at(c)`` scaled by
    the marginal spread (computed exactly: the log-latency is normal with variance ``σ² + pass_sigma²``).
    """

    p95_at: Callable[[float], float]
    sigma: float = 0.25
    pass_sigma: float = 0.05

    def true_p95(self, c: float) -> float:
        """The true p95 of a request at concurrency ``c``, over passes."""
        spread = math.sqrt(self.sigma**2 + self.pass_sigma**2)
        return self.p95_at(c) * math.exp(Z95 * (spread - self.sigma))

    def true_c_star(self, target_s: float, high: float = 1e4) -> float:
        """The concurrency where the true p95 reaches ``target_s`` (bisection; the curve never falls)."""
        lo, hi = 1e-9, high
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.true_p95(mid) <= target_s else (lo, mid)
        return lo

    def sweep(
        self,
        seed: int,
        passes: int,
        requests_per_pass: int | Callable[[int], int],
        levels: Sequence[int] = (1, 2, 4, 8),
    ) -> SweepData:
        """A sweep drawn with numpy's seeded generator: ``passes`` passes per level."""
        rng = np.random.default_rng(seed)
        data = []
        for c in levels:
            n = requests_per_pass(c) if callable(requests_per_pass) else requests_per_pass
            median = self.p95_at(c) / math.exp(Z95 * self.sigma)
            runs = [
                median * math.exp(rng.normal(0.0, self.pass_sigma)) * np.exp(rng.normal(0.0, self.sigma, n))
                for _ in range(passes)
            ]
            data.append(LevelData(float(c), workflow=runs))
        return SweepData(data)


def hinge(floor_s: float, knee: float, slope_s: float) -> Callable[[float], float]:
    """``floor + slope × max(0, c - knee)``: flat below the knee, linear past it (a closed system's p95)."""
    return lambda c: floor_s + slope_s * max(0.0, c - knee)


def through_points(xs: Sequence[float], ys: Sequence[float]) -> Callable[[float], float]:
    """Straight segments through measured points (extended flat below the first and linearly past the last)."""

    def p95(c: float) -> float:
        if c >= xs[-1]:
            return ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (c - xs[-1])
        return float(np.interp(c, xs, ys))

    return p95


def nat_doc_curve() -> LatencyCurve:
    """A latency curve whose true p95 passes through the documentation's sample, with no drift between passes."""
    return LatencyCurve(
        through_points(NAT_DOC_SAMPLE["concurrency"].tolist(), NAT_DOC_SAMPLE["workflow_p95_s"].tolist()),
        sigma=0.2,
        pass_sigma=0.0,
    )
