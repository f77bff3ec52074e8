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
from agent_flywheel.scaling.sizing.confirm import ConfirmationPlan, judge_confirmation, plan_confirmation
from agent_flywheel.scaling.sizing.intervals import bootstrap_p95, level_bounds
from agent_flywheel.scaling.sizing.nat_linear import nat_linear_estimate
from agent_flywheel.scaling.sizing.plots import latency_vs_concurrency_png, sizing_png
from agent_flywheel.scaling.sizing.quantiles import (
    min_requests_for_upper_bound,
    order_statistic_bounds,
    quantile_with_failures,
)
from agent_flywheel.scaling.sizing.replicas import ReplicaModel
from agent_flywheel.scaling.sizing.result import SizingResult
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import LevelData, SweepData, SweepFormatError, read_sweep_csv
from tests.support.sizing_samples import (
    NAT_DOC_LINEAR_GPUS,
    NAT_DOC_SAMPLE,
    NAT_DOC_TARGETS,
    LatencyCurve,
    hinge,
    nat_doc_curve,
)


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


def targets(**kw: float | int | bool | None) -> SizingTargets:
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
        assert result.gpus == math.ceil(200 / result.slo_concurrency) * 2  # requests balanced over replicas
        assert result.gpus_low is not None and result.gpus_high is not None
        assert result.gpus_low <= result.gpus <= result.gpus_high
        assert result.slo_concurrency_low is not None and result.slo_concurrency_high is not None
        covered += result.slo_concurrency_low <= truth <= result.slo_concurrency_high
    assert covered >= 6  # a 90 % interval covers the truth in 7 of these 8 fixed-seed sweeps
    first = size(synthetic_sweep(0), targets(), seed=0)
    true_gpus = math.ceil(200 / truth) * 2
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
    # per-level input: the measured levels around C* (4 meets, 8 misses) bracket it, 200 users on 2 test GPUs
    assert (result.gpus_low, result.gpus_high) == (2 * math.ceil(200 / 8), 2 * math.ceil(200 / 4))
    assert result.interval_kind == "bracket" and result.gpus is not None
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
    assert "- C* = " in result.to_markdown() and "replicas × 2 GPU(s) = " in result.to_markdown()


# --------------------------------------------------------------------------------------------------
# What a replica is
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("test_gpus", "per_replica", "sticky", "c_star", "users", "replicas", "gpus"),
    [
        (8, None, False, 11.5, 100, 9, 72),  # the system under test is one replica; balanced: ceil(100 / 11.5)
        (8, None, True, 11.5, 100, 10, 80),  # pinned users: 11 whole users per replica
        (8, 1, False, 11.5, 100, 70, 70),  # 8 replicas in the test: 1.4375 per replica
        (8, 2, False, 11.5, 100, 35, 70),  # 4 replicas in the test: 2.875 per replica
        (8, 2, True, 11.5, 100, 50, 100),  # pinned: 2 whole users per replica
        (1, None, False, 2.75, 100, 37, 37),  # the agent: 100 / 2.75, not 100 / 2
        (1, None, True, 2.75, 100, 50, 50),
        (1, None, False, 8.0 - 1e-12, 8, 1, 1),  # a hair under a whole number is that number
    ],
)
def test_replicas_and_gpus_follow_the_replica_model(
    test_gpus: int, per_replica: int | None, sticky: bool, c_star: float, users: int, replicas: int, gpus: int
) -> None:
    model = ReplicaModel.from_targets(
        SizingTargets(test_gpus=test_gpus, gpus_per_replica=per_replica, sticky_sessions=sticky)
    )
    assert model.replicas_for(c_star, users) == replicas
    assert model.gpus_for(c_star, users) == gpus


def test_a_replica_must_be_whole_gpus_of_the_system_under_test() -> None:
    with pytest.raises(ValueError, match="test_gpus 8 is not a multiple of gpus_per_replica 3"):
        SizingTargets(test_gpus=8, gpus_per_replica=3)
    pinned = ReplicaModel(test_gpus=8, gpus_per_replica=1, sticky_sessions=True)
    assert pinned.replicas_for(6.0, 100) is None  # 0.75 users per replica: not even one pinned user fits


def test_the_answer_states_its_assumptions() -> None:
    result = size(synthetic_sweep(0), targets(gpus_per_replica=1), seed=0)
    assert result.slo_concurrency is not None and result.replicas is not None
    d = result.to_dict()
    assert d["assumptions"] == {
        "test_gpus": 2,
        "gpus_per_replica": 1,
        "replicas_in_test": 2,
        "traffic": "balanced",
        "sticky_sessions": False,
        "rule": "replicas = ceil(users / C* per replica) (requests balanced over the replicas)",
    }
    assert d["slo_concurrency_per_replica"] == pytest.approx(result.slo_concurrency / 2)
    assert result.replicas == math.ceil(200 / (result.slo_concurrency / 2))
    assert d["load_per_replica"] == pytest.approx(200 / result.replicas)
    text = result.to_markdown()
    assert "a replica has 1 GPU(s) (the system under test held 2 replicas); requests balanced per request" in text
    assert f"**{result.replicas} replicas × 1 GPU(s) = {result.gpus} GPUs**" in text


# --------------------------------------------------------------------------------------------------
# The NeMo Agent Toolkit documentation's sample sweep
# --------------------------------------------------------------------------------------------------


def test_the_documentation_sample_needs_9_replicas_of_8_gpus() -> None:
    data = SweepData.from_levels_frame(NAT_DOC_SAMPLE)
    result = size(data, SizingTargets(**NAT_DOC_TARGETS))
    assert result.slo_concurrency is not None and result.bracket == (8.0, 16.0)
    assert result.slo_concurrency == pytest.approx(11.5, abs=0.05)
    assert (result.replicas, result.gpus) == (math.ceil(100 / result.slo_concurrency), 72)
    assert result.nat_linear is not None and result.nat_linear.gpus == pytest.approx(NAT_DOC_LINEAR_GPUS, abs=0.01)
    pinned = size(data, SizingTargets(**NAT_DOC_TARGETS, sticky_sessions=True))
    assert (pinned.replicas, pinned.gpus) == (10, 80)  # 11 whole users per replica


def test_a_per_level_table_gives_a_measured_bracket_not_a_point_nor_a_confidence_interval() -> None:
    result = size(SweepData.from_levels_frame(NAT_DOC_SAMPLE), SizingTargets(**NAT_DOC_TARGETS))
    d = result.to_dict()
    assert d["interval_kind"] == "bracket"
    # C* ≈ 11.5 lies between the levels 8 (meets 10 s) and 16 (misses): ceil(100 / 16) and ceil(100 / 8) replicas
    assert (d["slo_concurrency_low"], d["slo_concurrency_high"]) == (8.0, 16.0)
    assert (d["gpus_low"], d["gpus"], d["gpus_high"]) == (7 * 8, 72, 13 * 8)
    assert any("one p95 per level and no per-request rows" in n for n in d["interval_notes"])
    assert all(lv["workflow_p95_low_s"] is None and lv["workflow_p95_high_s"] is None for lv in d["levels"])
    text = result.to_markdown()
    assert "= 72 GPUs** for 100 concurrent users (measured bracket 56–104)" in text
    assert "not a confidence interval" in text
    assert "| 8 | — | 7.909 | unknown |" in text
    assert "NeMo Agent Toolkit's straight line on the same p95s: C* = 10.62, 75.35 GPUs" in text


def test_a_per_level_bracket_is_open_above_when_every_level_meets_the_target() -> None:
    frame = pd.DataFrame({"concurrency": [1, 2, 4], "workflow_p95_s": [1.0, 1.1, 1.3]})
    result = size(SweepData.from_levels_frame(frame), targets(target_workflow_p95_s=2.0))
    assert result.slo_concurrency_is_lower_bound and result.interval_kind == "bracket"
    assert (result.slo_concurrency_low, result.slo_concurrency_high) == (4.0, None)
    assert result.gpus_low is None and result.gpus_high == result.gpus  # C* ≥ 4: at most these GPUs
    assert any("measure higher concurrency" in n for n in result.interval_notes)
    assert "measured bracket open–" in result.to_markdown()


def test_the_documentation_sample_with_its_requests_has_an_interval_around_the_truth() -> None:
    """The documented sweep shape (2 passes of c requests at level c) drawn from a curve through its p95s."""
    curve = nat_doc_curve()
    truth = curve.true_c_star(10.0)
    assert truth == pytest.approx(11.51, abs=0.01)
    true_gpus = math.ceil(100 / truth) * 8
    assert true_gpus == 72
    for seed in range(5):
        data = curve.sweep(seed, passes=2, requests_per_pass=lambda c: c, levels=(1, 2, 4, 8, 16, 32))
        result = size(data, SizingTargets(**NAT_DOC_TARGETS, bootstrap_samples=400), seed=seed)
        assert result.gpus is not None and result.gpus_low is not None
        assert result.gpus_low <= min(result.gpus, true_gpus)
        assert result.gpus_high is None  # 16 requests at level 8 cannot bound its p95 from above
        assert any("no upper end" in n for n in result.interval_notes)
        thin = [w for w in result.warnings if "too few for a p95" in w]
        assert [w.split(":")[0] for w in thin] == [f"concurrency {c}" for c in (1, 2, 4, 8, 16)]
        assert "concurrency 8: 16 requests" in thin[3] and "at least 59" in thin[3]
    longer = curve.sweep(99, passes=6, requests_per_pass=64, levels=(1, 2, 4, 8, 16, 32))
    result = size(longer, SizingTargets(**NAT_DOC_TARGETS, bootstrap_samples=400))
    low, high = result.gpus_low, result.gpus_high
    assert not result.warnings and low is not None and high is not None and result.gpus is not None
    assert low <= true_gpus <= high
    assert low <= result.gpus <= high


# --------------------------------------------------------------------------------------------------
# Honest intervals: passes resampled, too few requests admitted, a longer sweep inside a shorter one's interval
# --------------------------------------------------------------------------------------------------


def test_order_statistic_bounds_cover_the_true_p95() -> None:
    assert min_requests_for_upper_bound(0.95, 0.90) == 59
    assert min_requests_for_upper_bound(0.95, 0.95) == 72
    rng = np.random.default_rng(11)
    true_p95 = -math.log(0.05)  # of an exponential with mean 1
    for n in (60, 200):
        covered = 0
        for _ in range(2000):
            low, high = order_statistic_bounds(rng.exponential(1.0, n), 0.95, 0.90)
            covered += low <= true_p95 <= high
        assert covered / 2000 >= 0.89, n  # exact binomial bounds: at least the nominal 90 %
    low, high = order_statistic_bounds(np.arange(1.0, 9.0), 0.95, 0.90)
    assert (low, high) == (6.0, math.inf)  # 8 requests: no upper bound on a p95


def test_the_bootstrap_resamples_passes_so_drift_between_passes_widens_the_interval() -> None:
    rng = np.random.default_rng(3)
    same = [rng.lognormal(0.0, 0.2, 200) for _ in range(2)]
    drifted = [same[0], same[1] * 1.5]  # the second pass ran 50 % slower
    steady = level_bounds(same, np.random.default_rng(0), 500, 0.9)
    moving = level_bounds(drifted, np.random.default_rng(0), 500, 0.9)
    assert moving.high - moving.low > 2 * (steady.high - steady.low)
    one_pass = bootstrap_p95([np.concatenate(drifted)], np.random.default_rng(0), 500)
    by_pass = bootstrap_p95(drifted, np.random.default_rng(0), 500)
    assert np.std(by_pass) > 2 * np.std(one_pass)  # pooled requests alone hide the drift


SMALL_C_STAR = LatencyCurve(hinge(floor_s=3.0, knee=1.0, slope_s=2.25))  # true C* ≈ 3.2 at 8 s


@pytest.mark.parametrize("requests_per_pass", [lambda c: c, 20, 64], ids=["c per pass", "20 per pass", "64 per pass"])
def test_small_c_star_is_stable_between_two_and_six_passes(requests_per_pass: int) -> None:
    """Two and six passes of the same system (2-4 users per replica): the answers stay close, and the longer
    sweep's answer and the truth lie inside the shorter sweep's 90 % interval in the normal case (7 of 8 seeds)."""
    truth = SMALL_C_STAR.true_c_star(8.0)
    assert 2.0 < truth < 4.0
    true_gpus = math.ceil(100 / truth)
    sizing = targets(target_users=100, target_workflow_p95_s=8.0, test_gpus=1)

    def inside(result: SizingResult, gpus: int) -> bool:
        assert result.gpus_low is not None  # a low end always exists here: the top level misses the target
        return result.gpus_low <= gpus and (result.gpus_high is None or gpus <= result.gpus_high)

    contained = covered = 0
    for seed in range(8):
        short = size(SMALL_C_STAR.sweep(seed, 2, requests_per_pass), sizing, seed=seed)
        long = size(SMALL_C_STAR.sweep(1000 + seed, 6, requests_per_pass), sizing, seed=seed)
        assert short.gpus is not None and long.gpus is not None
        assert max(short.gpus, long.gpus) / min(short.gpus, long.gpus) < 1.5, (seed, short.gpus, long.gpus)
        contained += inside(short, long.gpus)
        covered += inside(short, true_gpus) + inside(long, true_gpus)
    assert contained >= 7
    assert covered >= 14


# --------------------------------------------------------------------------------------------------
# Confirmation at the recommended load
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load_per_replica", "replicas_in_test", "concurrencies"),
    [(100 / 9, 1, [11, 12]), (20.0, 1, [20]), (100 / 70, 8, [11, 12]), (0.5, 1, [1]), (4.0, 2, [8])],
)
def test_the_confirmation_measures_the_whole_loads_around_the_recommended_one(
    load_per_replica: float, replicas_in_test: int, concurrencies: list[int]
) -> None:
    answer = {
        "reachable": True,
        "load_per_replica": load_per_replica,
        "assumptions": {"replicas_in_test": replicas_in_test},
    }
    plan = plan_confirmation(answer)
    assert plan is not None and plan.concurrencies == concurrencies
    assert plan.load == pytest.approx(load_per_replica * replicas_in_test)
    assert plan_confirmation({"reachable": False, "load_per_replica": None}) is None


def _steady(p95_by_level: dict[int, float], n: int = 100, failures: int = 0) -> SweepData:
    """Two passes per level whose pooled p95 is exactly the given value (half the requests at half of it)."""
    levels = []
    for c, p95 in p95_by_level.items():
        values = np.full(n, p95)
        values[: n // 2] = p95 / 2
        values[n - failures :] = np.inf
        levels.append(LevelData(float(c), workflow=[values[::2], values[1::2]]))
    return SweepData(levels)


def test_the_confirmation_interpolates_between_the_whole_loads_and_judges_the_slo() -> None:
    sizing = targets(target_users=100, target_workflow_p95_s=10.0, test_gpus=8)
    measured = _steady({11: 9.0, 12: 11.0})
    held = judge_confirmation(ConfirmationPlan(100 / 9, 1), measured, sizing)
    assert held.confirmed and held.workflow_p95_s == pytest.approx(9.0 + 2.0 / 9)
    assert [row["concurrency"] for row in held.measured] == [11.0, 12.0] and not held.warnings
    assert held.summary().startswith("SLO held: workflow p95 9.222 s ≤ 10 s at 11.11 users per replica")
    missed = judge_confirmation(ConfirmationPlan(11.9, 1), measured, sizing)
    assert not missed.confirmed and missed.workflow_p95_s == pytest.approx(10.8)
    assert "## Confirmation" in missed.to_markdown() and "SLO missed" in missed.to_markdown()
    failing = judge_confirmation(ConfirmationPlan(11.5, 1), _steady({11: 9.0, 12: 9.0}, failures=10), sizing)
    assert not failing.confirmed and math.isinf(failing.workflow_p95_s)  # 10 % failed: no p95 met
    assert failing.measured[0]["error_rate"] == pytest.approx(0.1)
    thin = judge_confirmation(ConfirmationPlan(11.0, 1), _steady({11: 9.0}, n=20), sizing)
    assert thin.confirmed and thin.warnings and "20 requests" in thin.warnings[0] and "at least 59" in thin.warnings[0]
    with pytest.raises(SweepFormatError, match="no requests at concurrency 12"):
        judge_confirmation(ConfirmationPlan(11.5, 1), _steady({11: 9.0}), sizing)
