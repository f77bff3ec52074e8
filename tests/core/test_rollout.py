"""Rollout check: clean canary promotes, an error spike rolls back on burn rate, too little data holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent_flywheel.config import RolloutConfig, RolloutSLO, RolloutStage
from agent_flywheel.scaling.rollout.observations import Observation
from agent_flywheel.scaling.rollout.policy import SRE_PAGE_RULES
from agent_flywheel.scaling.rollout.report import analyze_rollout
from agent_flywheel.scaling.rollout.stages import analyze_stage
from agent_flywheel.scaling.rollout.statistics import fisher_greater, mann_whitney_greater, wilson_bounds

STAGE = RolloutStage(name="canary-25", weight=0.25, duration_s=3600)
SLO = RolloutSLO(availability=0.99, p95_latency_s=2.0, min_quality=0.8)


def traffic(
    seed: int,
    *,
    start: float = 0.0,
    duration: float = 3600.0,
    rate: float = 4.0,
    weight: float = 0.25,
    canary_errors: float = 0.005,
    spike: tuple[float, float] | None = None,
    canary_latency_factor: float = 1.0,
    canary_quality: float = 0.9,
) -> list[tuple[float, str, bool, float, float | None]]:
    """Poisson traffic split by weight; latency lognormal around 0.6 s; 10 % of requests get a quality score."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(start, start + duration, rng.poisson(rate * duration)))
    out = []
    for t in times:
        variant = "canary" if rng.random() < weight else "baseline"
        error = canary_errors if variant == "canary" else 0.005
        if variant == "canary" and spike and spike[0] <= t < spike[1]:
            error = 0.5
        factor = canary_latency_factor if variant == "canary" else 1.0
        latency = float(rng.lognormal(math.log(0.6 * factor), 0.35))
        p_good = canary_quality if variant == "canary" else 0.9
        quality = float(rng.random() < p_good) if rng.random() < 0.1 else None
        out.append((float(t), variant, bool(rng.random() >= error), latency, quality))
    return out


def test_clean_canary_is_promoted() -> None:
    report = analyze_stage(traffic(0), STAGE, SLO)
    assert report.decision == "promote", report.reasons
    assert not any(b.fired for b in report.burn_rates)
    assert report.canary.requests > 500 and report.baseline.requests > 2000
    assert {c.name for c in report.checks} >= {"slo:errors", "slo:latency", "compare:errors", "compare:latency"}


def test_error_spike_rolls_back_with_the_burn_rate_reason() -> None:
    report = analyze_stage(traffic(1, spike=(1200.0, 1500.0)), STAGE, SLO)
    assert report.decision == "rollback"
    burn = [r for r in report.reasons if "burning too fast" in r]
    assert burn, report.reasons
    assert "14.4x" in burn[0] and "10 min" in burn[0] and "50 s" in burn[0]
    fired = next(b for b in report.burn_rates if b.fired)
    assert fired.first_fired_at_s is not None and 1200 <= fired.first_fired_at_s <= 1500


def test_too_little_data_holds() -> None:
    report = analyze_stage(traffic(2, rate=0.03), STAGE, SLO)  # about 27 canary requests
    assert report.decision == "hold"
    assert any("not enough data" in r for r in report.reasons)


def test_burn_thresholds_follow_the_workbook_and_windows_scale_to_the_stage() -> None:
    month = 30 * 24 * 3600
    assert [round(r.threshold(month), 6) for r in SRE_PAGE_RULES] == [14.4, 6.0]
    report = analyze_stage(traffic(0), STAGE, SLO)
    assert report.window_scale == pytest.approx(1 / 6)
    windows = {(b.rule, b.sli): (b.long_window_s, b.short_window_s) for b in report.burn_rates}
    assert windows[(SRE_PAGE_RULES[0].name, "errors")] == pytest.approx((600.0, 50.0))
    assert windows[(SRE_PAGE_RULES[1].name, "errors")] == pytest.approx((3600.0, 300.0))
    weekly = RolloutSLO(slo_period_s=7 * 24 * 3600)
    assert SRE_PAGE_RULES[0].threshold(weekly.slo_period_s) == pytest.approx(3.36)


def test_slower_or_worse_canary_within_slo_holds_for_a_human() -> None:
    slower = analyze_stage(traffic(3, canary_latency_factor=1.5), STAGE, SLO)
    assert slower.decision == "hold"
    assert any("canary slower" in r for r in slower.reasons)
    worse = analyze_stage(traffic(4, canary_quality=0.8, rate=12.0), STAGE, SLO.model_copy(update={"min_quality": 0.5}))
    assert worse.decision == "hold" and any("quality lower" in r for r in worse.reasons)


def test_slo_breach_beyond_doubt_rolls_back() -> None:
    slow = analyze_stage(traffic(5, canary_latency_factor=4.0), STAGE, SLO)
    assert slow.decision == "rollback"
    assert any("exceeds the 2 s SLO beyond doubt" in r for r in slow.reasons)


def test_rollout_walks_stages_and_stops_at_the_first_problem() -> None:
    cfg = RolloutConfig(
        stages=[
            RolloutStage(name="canary-25", weight=0.25, duration_s=3600),
            RolloutStage(name="canary-50", weight=0.5, duration_s=3600),
            RolloutStage(name="full", weight=1.0, duration_s=3600),
        ],
        slo=SLO,
    )
    obs = traffic(0) + traffic(7, start=3600, weight=0.5, spike=(5000.0, 5400.0))
    report = analyze_rollout(obs, cfg)
    assert report.decision == "rollback"
    assert [s.decision for s in report.stages] == ["promote", "rollback"]
    assert report.not_reached == ["full"]
    d = report.to_dict()
    assert d["decision"] == "rollback" and d["stages"][1]["stage"] == "canary-50"
    md = report.to_markdown()
    assert "canary-50" in md and "rollback" in md
    running = analyze_rollout(traffic(8, duration=1800), cfg, now_s=1800)
    assert running.decision == "hold" and any("still running" in r for r in running.stages[0].reasons)


def test_observation_tuples_are_validated() -> None:
    assert Observation.of((1, "canary", True, 0.5)).quality is None
    with pytest.raises(ValueError, match="variant"):
        Observation.of((1, "green", True, 0.5))


def test_statistics_helpers() -> None:
    # Fisher: table [[3, 0], [0, 3]] -> P(all 3 bad in group A) = 1 / C(6, 3)
    assert fisher_greater(3, 3, 0, 3) == pytest.approx(1 / 20)
    assert fisher_greater(0, 100, 5, 100) == pytest.approx(1.0)
    effect, p = mann_whitney_greater([10, 11, 12, 13, 14] * 4, [1, 2, 3, 4, 5] * 4)
    assert effect == 1.0 and p < 1e-6
    effect, p = mann_whitney_greater([1, 2, 3] * 10, [1, 2, 3] * 10)
    assert effect == pytest.approx(0.5) and 0.4 < p < 0.6
    lo, hi = wilson_bounds(5, 100, 0.05)
    assert lo < 0.05 < hi and lo == pytest.approx(0.0246, abs=1e-3)
