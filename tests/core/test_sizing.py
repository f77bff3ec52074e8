"""Sizing against a queueing model whose true answer is computable.

The system under test is a closed M/M/m system: N users with no think time, m servers, exponential service
with rate mu, FCFS. A returning user always finds the other N-1 in the system, so for N > m it waits for
N-m departures at rate m*mu: response time R = Erlang(N-m, m*mu) + Exp(mu), and R = Exp(mu) for N <= m.
Its CDF has a closed form (below), so the true p95 at every N, and hence the true C* (the concurrency where
p95 crosses the target, interpolated between integers), is computed exactly, with no simulation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.sizing.capacity import fit_capacity
from agent_flywheel.scaling.sizing.nat_linear import nat_linear_estimate
from agent_flywheel.scaling.sizing.plots import latency_vs_concurrency_png, sizing_png
from agent_flywheel.scaling.sizing.quantiles import quantile_with_failures
from agent_flywheel.scaling.sizing.result import users_per_replica
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import LevelData, SweepData, SweepFormatError, read_sweep_csv


def _erlang_cdf(k: int, rate: float, t: float) -> float:
    x, term, total = rate * t, 1.0, 1.0
    for j in range(1, k):
        term *= x / j
        total += term
    return 1.0 - math.exp(-x) * total


def response_cdf(n: int, m: int, mu: float, t: float) -> float:
    """P(R <= t) in the closed M/M/m system with n users (hypoexponential: Erlang wait + exponential service)."""
    if n <= m:
        return 1.0 - math.exp(-mu * t)
    k, a = n - m, m * mu
    return _erlang_cdf(k, a, t) - math.exp(-mu * t) * (a / (a - mu)) ** k * _erlang_cdf(k, a - mu, t)


def true_p95(n: int, m: int, mu: float) -> float:
    lo, hi = 0.0, 1.0
    while response_cdf(n, m, mu, hi) < 0.95:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if response_cdf(n, m, mu, mid) < 0.95 else (lo, mid)
    return hi


def true_c_star(m: int, mu: float, target: float) -> float:
    n = 1
    while true_p95(n + 1, m, mu) <= target:
        n += 1
    p_n, p_next = true_p95(n, m, mu), true_p95(n + 1, m, mu)
    return n + (target - p_n) / (p_next - p_n)


def sample_latencies(n: int, m: int, mu: float, size_: int, rng: np.random.Generator) -> np.ndarray:
    service = rng.exponential(1 / mu, size_)
    return service if n <= m else service + rng.gamma(n - m, 1 / (m * mu), size_)


def synthetic_sweep(
    seed: int, m: int = 8, mu: float = 1.0, levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
) -> SweepData:
    rng = np.random.default_rng(seed)
    return SweepData(
        [LevelData(float(c), workflow=[sample_latencies(c, m, mu, 64, rng) for _ in range(3)]) for c in levels]
    )


def targets(**kw: float | int | None) -> SizingTargets:
    base: dict = {"target_users": 200, "target_workflow_p95_s": 6.0, "test_gpus": 2, "bootstrap_samples": 400}
    base.update(kw)
    return SizingTargets(**base)


def test_the_closed_form_truth_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    for n in (4, 20, 40):
        simulated = np.percentile(sample_latencies(n, 8, 1.0, 200_000, rng), 95)
        assert true_p95(n, 8, 1.0) == pytest.approx(simulated, rel=0.01)


def test_c_star_within_15_percent_and_interval_covers_the_truth() -> None:
    truth = true_c_star(8, 1.0, 6.0)  # 30.5 users
    covered = 0
    for seed in range(8):
        result = size(synthetic_sweep(seed), targets(), seed=seed)
        assert result.reachable and result.bracket in ((16.0, 32.0), (32.0, 64.0))  # truth 30.5 is near 32
        assert result.slo_concurrency is not None
        assert abs(result.slo_concurrency - truth) / truth < 0.15, (seed, result.slo_concurrency, truth)
        assert result.gpus == math.ceil(200 / math.floor(result.slo_concurrency)) * 2
        assert result.gpus_low is not None and result.gpus_high is not None
        assert result.gpus_low <= result.gpus <= result.gpus_high
        assert result.slo_concurrency_low is not None and result.slo_concurrency_high is not None
        covered += result.slo_concurrency_low <= truth <= result.slo_concurrency_high
    assert covered >= 6  # a 90 % interval covers the truth in 7 of these 8 fixed-seed sweeps
    first = size(synthetic_sweep(0), targets(), seed=0)
    true_gpus = math.ceil(200 / math.floor(truth)) * 2
    assert first.gpus_low is not None and first.gpus_high is not None
    assert first.gpus_low <= true_gpus <= first.gpus_high


def test_the_knee_is_kept_where_the_straight_line_drops_it() -> None:
    levels = [1, 2, 4, 8, 16, 24, 32, 48]
    p95 = [true_p95(n, 16, 1.0) for n in levels]
    frame = pd.DataFrame({"concurrency": levels, "workflow_p95_s": p95})
    truth = true_c_star(16, 1.0, 4.5)  # 39.3, between the last two levels
    result = size(SweepData.from_levels_frame(frame), targets(target_workflow_p95_s=4.5, target_users=1000))
    assert [lv["concurrency"] for lv in result.levels] == levels  # nothing dropped
    assert result.bracket == (32.0, 48.0)
    assert result.slo_concurrency == pytest.approx(truth, rel=0.05)
    assert result.fit is not None and result.fit.knee == pytest.approx(16, rel=0.25)
    nat = nat_linear_estimate(levels, p95, 4.5, 1000, 2)
    assert 48.0 in nat.outliers_removed  # the toolkit's IQR pass deletes the knee...
    assert nat.slo_concurrency is not None and nat.slo_concurrency > 1.3 * truth  # ...and promises too much
    assert result.nat_linear is not None and result.nat_linear.outliers_removed == nat.outliers_removed


def test_unreachable_target_is_an_answer() -> None:
    result = size(synthetic_sweep(1), targets(target_workflow_p95_s=1.0))
    assert result.reachable is False
    assert result.reason.startswith("not reachable: workflow p95 at concurrency 1 is already")
    assert result.gpus is None and result.slo_concurrency is None
    d = result.to_dict()
    assert d["reachable"] is False and d["gpus"] is None and "not reachable" in d["reason"]
    frame = pd.DataFrame({"concurrency": [4, 8], "workflow_p95_s": [3.0, 5.0]})
    r2 = size(SweepData.from_levels_frame(frame), targets(target_workflow_p95_s=2.0))
    assert not r2.reachable and "concurrency 4 is already 3.00 s" in r2.reason and "lower concurrency" in r2.reason


def test_target_met_everywhere_gives_a_flagged_lower_bound() -> None:
    result = size(synthetic_sweep(2), targets(target_workflow_p95_s=60.0))
    assert result.reachable and result.slo_concurrency_is_lower_bound
    assert result.slo_concurrency == 64.0
    assert result.gpus == math.ceil(200 / 64) * 2
    assert "C* ≥ 64" in result.reason and "upper bound" in result.reason
    assert result.extrapolated_slo_concurrency is not None and result.extrapolated_slo_concurrency > 64
    assert "extrapolates" in result.reason


def test_failed_requests_count_against_the_p95() -> None:
    rng = np.random.default_rng(4)
    ok = rng.uniform(0.5, 1.0, 90)
    with_failures = np.concatenate([ok, np.full(10, np.inf)])  # 10 % failed: p95 cannot be met
    assert math.isinf(float(quantile_with_failures(with_failures, 0.95)))
    assert float(quantile_with_failures(ok, 0.95)) == pytest.approx(np.percentile(ok, 95))
    data = SweepData([LevelData(1.0, workflow=[ok]), LevelData(2.0, workflow=[with_failures])])
    result = size(data, targets(target_workflow_p95_s=2.0))
    assert result.bracket == (1.0, 2.0) and result.levels[1]["meets_target"] is False
    assert result.slo_concurrency == 1.0  # cannot interpolate towards a level that is mostly failures


def test_llm_target_can_bind_and_cost_is_reported() -> None:
    frame = pd.DataFrame(
        {
            "concurrency": [1, 2, 4, 8, 16],
            "workflow_p95_s": [1.0, 1.0, 1.1, 1.6, 3.0],
            "llm_p95_s": [0.3, 0.3, 0.5, 0.9, 1.8],
            "throughput_rps": [1.0, 2.0, 3.8, 5.5, 6.0],
        }
    )
    result = size(SweepData.from_levels_frame(frame), targets(target_workflow_p95_s=2.0, target_llm_p95_s=0.6))
    assert result.binding_metric == "llm" and result.bracket == (4.0, 8.0)
    assert result.slo_concurrency is not None and 4 <= result.slo_concurrency <= 8
    assert result.gpus_low == result.gpus == result.gpus_high  # per-level input: no interval
    priced = size(SweepData.from_levels_frame(frame), targets(target_workflow_p95_s=2.0, gpu_price_per_hour=3.0))
    assert priced.throughput_at_slo_rps is not None and priced.cost_per_1k_workflows is not None
    expected = 3.0 * 2 / (priced.throughput_at_slo_rps * 3600) * 1000
    assert priced.cost_per_1k_workflows == pytest.approx(expected)
    d = priced.to_dict()
    for key in ("slo_concurrency", "gpus", "gpus_low", "gpus_high", "reachable", "reason", "throughput_at_slo_rps"):
        assert key in d
    assert isinstance(d["gpus"], int) and "cost_per_1k_workflows" in d


def test_nat_linear_estimate_follows_the_reference_formula() -> None:
    xs = [1, 2, 4, 8]
    ys = [1.0 + 0.5 * x for x in xs]
    est = nat_linear_estimate(xs, ys, 5.0, 100, 8)
    assert est.slope == pytest.approx(0.5) and est.intercept == pytest.approx(1.0) and est.r_squared == 1.0
    assert est.slo_concurrency == pytest.approx(8.0) and est.gpus == pytest.approx(100 / 8 * 8)
    below = nat_linear_estimate(xs, ys, 0.9, 100, 8)
    assert below.gpus is None and below.error is not None and "greater than the intercept" in below.error
    noisy = nat_linear_estimate([1, 2, 3, 4], [1.0, 3.0, 1.0, 3.0], 5.0, 100, 8)
    assert noisy.error is not None and "Poor linear fit" in noisy.error


def test_capacity_fit_recovers_a_hinge() -> None:
    x = np.array([1, 2, 4, 8, 16, 32, 64], dtype=float)
    y = 2.0 + 0.25 * np.maximum(0, x - 8)
    fit = fit_capacity(x, y)
    assert fit is not None and fit.saturated
    assert fit.d_s == pytest.approx(2.0) and fit.x_max_rps == pytest.approx(4.0) and fit.knee == pytest.approx(8)
    assert fit.inverse(6.0) == pytest.approx(24.0)
    assert fit_capacity([1, 2], [np.inf, np.inf]) is None


def test_csv_inputs_and_their_errors(tmp_path: Path) -> None:
    per_request = tmp_path / "req.csv"
    rows = ["concurrency,workflow_latency_s,llm_latency_s"]
    rng = np.random.default_rng(5)
    for c in (1, 2, 4):
        rows += [f"{c},{v:.4f},{v / 2:.4f}" for v in rng.uniform(0.5, 0.5 + 0.3 * c, 40)]
    per_request.write_text("\n".join(rows) + "\n", encoding="utf-8")
    data = read_sweep_csv(per_request)
    assert data.has_samples and data.has_llm and [lv.concurrency for lv in data.levels] == [1, 2, 4]
    bad = tmp_path / "bad.csv"
    bad.write_text("concurrency,latency\n1,2\n", encoding="utf-8")
    with pytest.raises(SweepFormatError, match="workflow_latency_s"):
        read_sweep_csv(bad)
    text = tmp_path / "text.csv"
    text.write_text("concurrency,workflow_p95_s\n1,fast\n", encoding="utf-8")
    with pytest.raises(SweepFormatError, match="'fast' is not a number"):
        read_sweep_csv(text)
    with pytest.raises(SweepFormatError, match="no such file"):
        read_sweep_csv(tmp_path / "missing.csv")


def test_plots_are_written(tmp_path: Path) -> None:
    result = size(synthetic_sweep(3), targets())
    p1 = latency_vs_concurrency_png(
        result.levels_frame(), result.fit, 6.0, tmp_path / "lat.png", slo_concurrency=result.slo_concurrency
    )
    p2 = sizing_png(result, tmp_path / "gpus.png")
    p3 = sizing_png(size(synthetic_sweep(3), targets(target_workflow_p95_s=0.5)), tmp_path / "none.png")
    for p in (p1, p2, p3):
        assert p.read_bytes()[:4] == b"\x89PNG"
    assert "C\\*" in result.to_markdown()


@pytest.mark.parametrize(("c_star", "users"), [(10.6, 10), (8.0, 8), (8.0 - 1e-12, 8), (1.0, 1), (0.5, 0.5)])
def test_a_replica_serves_whole_users(c_star: float, users: float) -> None:
    assert users_per_replica(c_star) == users


def test_the_answer_says_how_many_users_a_replica_serves() -> None:
    result = size(synthetic_sweep(0), targets(), seed=0)
    assert result.slo_concurrency is not None and result.gpus is not None
    whole = math.floor(result.slo_concurrency)
    assert f"{whole} users per replica: **{result.gpus} GPUs**" in result.to_markdown()
    assert result.gpus == math.ceil(200 / whole) * 2
