"""The sizing method: C* by measured bracketing, replicas and GPUs by the replica model, an honest interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.sizing.bracketing import Crossing, find_crossing
from agent_flywheel.scaling.sizing.capacity import CapacityFit, fit_capacity
from agent_flywheel.scaling.sizing.intervals import LevelBounds, level_bounds, monotone_bounds, thin_level_warning
from agent_flywheel.scaling.sizing.nat_linear import nat_linear_estimate
from agent_flywheel.scaling.sizing.replicas import ReplicaModel
from agent_flywheel.scaling.sizing.result import SizingResult
from agent_flywheel.scaling.sizing.sweeps import LevelData, Metric, SweepData


@dataclass(frozen=True)
class _Curve:
    """One metric's p95 per level against its target, with the capacity fit that shapes the interpolation."""

    metric: Metric
    target_s: float
    fit: CapacityFit | None


def _solve(x: np.ndarray, curves: Sequence[tuple[_Curve, np.ndarray]]) -> tuple[Crossing, _Curve]:
    """The binding crossing: the metric whose p95 reaches its target at the lowest concurrency."""
    best: tuple[Crossing, _Curve] | None = None
    for curve, y in curves:
        crossing = find_crossing(x, y, curve.target_s, curve.fit)
        if best is None or crossing.concurrency < best[0].concurrency:
            best = (crossing, curve)
    assert best is not None
    return best


def _interp_throughput(levels: Sequence[LevelData], c: float) -> float | None:
    pts = [(lv.concurrency, lv.throughput_rps) for lv in levels if lv.throughput_rps is not None]
    if not pts:
        return None
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(c, xs, ys))


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


@dataclass
class _Interval:
    """C* interval (None: that end is open) and why an end is open or the whole interval unknown."""

    c_low: float | None = None
    c_high: float | None = None
    notes: tuple[str, ...] = ()


def _interval(
    x: np.ndarray,
    curves: Sequence[tuple[_Curve, list[LevelBounds]]],
    confidence: float,
) -> _Interval:
    """C* where the per-level high p95s cross the target (low end) and where the low p95s do (high end)."""
    pessimistic, optimistic = [], []
    for curve, bounds in curves:
        lows, highs = monotone_bounds(bounds)
        pessimistic.append((curve, highs))
        optimistic.append((curve, lows))
    low, _ = _solve(x, pessimistic)
    high, _ = _solve(x, optimistic)
    notes = []
    c_low: float | None = low.concurrency
    if low.status == "unreachable":
        c_low = None
        notes.append(
            f"no upper end: at the lowest level measured the p95 may already miss the target at {confidence:.0%} "
            "confidence (too few requests, or too close to the target)"
        )
    c_high: float | None = high.concurrency
    if high.status == "lower_bound":
        c_high = None
        notes.append("no lower end: even the highest level measured may meet the target; measure higher concurrency")
    return _Interval(c_low, c_high, tuple(notes))


def _measured_bracket(x: np.ndarray, meets_all: np.ndarray) -> _Interval:
    """C* between the highest level meeting every target below the first that misses one, and that level.

    Why: a per-level table (one p95 per level) shows nothing of how far each p95 may be off, so no confidence
    interval exists; the measured levels still bracket C* if each p95 is taken as exact and latency does not
    fall as load rises. Labelled a bracket, never a confidence interval.
    """
    failing = np.flatnonzero(~meets_all)
    why = (
        "a bracket from the measured levels, not a confidence interval: the sweep has one p95 per level and no "
        "per-request rows, so how far each p95 may be off is unknown; give the per-request table "
        "(sweep/requests.csv) for a confidence interval"
    )
    if len(failing) == 0:
        return _Interval(
            float(x[-1]),
            None,
            (why, "no lower end: every level measured meets the target; measure higher concurrency"),
        )
    f = int(failing[0])
    if f == 0:
        return _Interval(notes=(why,))
    return _Interval(float(x[f - 1]), float(x[f]), (why,))


def size(data: SweepData, targets: SizingTargets, *, seed: int = 0, compare_nat: bool = True) -> SizingResult:
    """Size the system: C* by measured bracketing, replicas and GPUs by the replica model, an interval, cost.

    Why: an answer that states its assumptions and admits what the data cannot tell (never a crash when the
    SLO cannot be met, never a straight line through the knee). See the package docstring for the method.
    """
    x = data.concurrencies
    model = ReplicaModel.from_targets(targets)
    t_w, t_llm = targets.target_workflow_p95_s, targets.target_llm_p95_s
    notes = list(data.notes)
    warnings: list[str] = []
    y_w = np.array([lv.p95("workflow") for lv in data.levels], dtype=float)
    use_llm = t_llm is not None
    if use_llm and not data.has_llm:
        notes.append("an LLM-call target was given but the sweep has no LLM latencies; only the workflow target used")
        use_llm = False
    y_l = np.array([lv.p95("llm") for lv in data.levels], dtype=float) if use_llm else None
    curves = [(_Curve("workflow", t_w, fit_capacity(x, y_w)), y_w)]
    if y_l is not None and t_llm is not None:
        curves.append((_Curve("llm", t_llm, fit_capacity(x, y_l)), y_l))
    crossing, binding = _solve(x, curves)
    users = targets.target_users
    meets_all = y_w <= t_w
    if y_l is not None and t_llm is not None:
        meets_all = meets_all & (y_l <= t_llm)

    # Interval ----------------------------------------------------------------------------------------
    b = targets.bootstrap_samples
    bounds_w: list[LevelBounds] | None = None
    if data.has_samples:
        rng = np.random.default_rng(seed)
        bounds_w = [level_bounds(lv.workflow, rng, b, targets.confidence) for lv in data.levels]
        interval_curves = [(curves[0][0], bounds_w)]
        if y_l is not None:
            bounds_l = [level_bounds(lv.llm, rng, b, targets.confidence) for lv in data.levels]
            if all(lb.requests for lb in bounds_l):
                interval_curves.append((curves[1][0], bounds_l))
            else:
                notes.append("some levels have no LLM-call samples: the interval uses the workflow p95 only")
        for lv, lb in zip(data.levels, bounds_w, strict=True):
            warning = thin_level_warning(lv.concurrency, lb.requests, targets.confidence)
            if warning:
                warnings.append(
                    warning + "; the interval treats this level as possibly missing the target unless a "
                    "better-measured higher level meets it"
                )
        interval = _interval(x, interval_curves, targets.confidence)
    else:
        interval = _measured_bracket(x, meets_all)

    # Per-level table ---------------------------------------------------------------------------------
    lows_w, highs_w = monotone_bounds(bounds_w) if bounds_w else (None, None)
    levels = []
    for i, lv in enumerate(data.levels):
        row = {
            "concurrency": float(lv.concurrency),
            "requests": bounds_w[i].requests if bounds_w else None,
            "passes": bounds_w[i].passes if bounds_w else None,
            "workflow_p95_s": _finite_or_none(y_w[i]),
            "workflow_p95_low_s": _finite_or_none(lows_w[i]) if lows_w is not None else None,
            "workflow_p95_high_s": _finite_or_none(highs_w[i]) if highs_w is not None else None,
            "workflow_p95_bounded": bool(np.isfinite(highs_w[i])) if highs_w is not None else None,
            "llm_p95_s": _finite_or_none(lv.p95("llm")),
            "throughput_rps": lv.throughput_rps,
            "meets_target": bool(meets_all[i]),
        }
        levels.append(row)

    nat = None
    if compare_nat:
        finite = np.isfinite(y_w)
        nat = nat_linear_estimate(x[finite], y_w[finite], t_w, users, model.test_gpus)

    targets_d = {
        "target_workflow_p95_s": t_w,
        "target_llm_p95_s": t_llm,
        "target_users": users,
        "test_gpus": targets.test_gpus,
        "gpu_price_per_hour": targets.gpu_price_per_hour,
    }
    base = SizingResult(
        reachable=False,
        reason="",
        replica_model=model,
        targets=targets_d,
        confidence=targets.confidence,
        slo_concurrency_low=interval.c_low,
        slo_concurrency_high=interval.c_high,
        binding_metric=binding.metric,
        interpolation=crossing.method,
        gpus_low=None if interval.c_high is None else model.gpus_for(interval.c_high, users),
        interval_kind="confidence" if data.has_samples else "bracket",
        interval_notes=list(interval.notes),
        fit=binding.fit,
        levels=levels,
        bootstrap_samples=b if data.has_samples else 0,
        nat_linear=nat,
        warnings=warnings,
        notes=notes,
    )
    label = "LLM-call p95" if binding.metric == "llm" else "workflow p95"
    if crossing.status == "unreachable":
        first = data.levels[0]
        p = first.p95(binding.metric)
        shown = "∞ (more than 5% of requests failed)" if p is None or not math.isfinite(p) else f"{p:.2f} s"
        reason = (
            f"not reachable: {label} at concurrency {first.concurrency:g} is already {shown} "
            f"(target {binding.target_s:g} s)"
        )
        if first.concurrency > 1:
            reason += "; measure lower concurrency to know whether any load meets it"
        return replace(base, reason=reason)

    c_star = crossing.concurrency
    located = replace(
        base,
        slo_concurrency=c_star,
        slo_concurrency_is_lower_bound=crossing.status == "lower_bound",
        extrapolated_slo_concurrency=crossing.extrapolated,
        bracket=crossing.bracket,
        slo_concurrency_per_replica=model.per_replica(c_star),
    )
    replicas = model.replicas_for(c_star, users)
    if replicas is None:
        return replace(
            located,
            gpus_low=None,
            reason=(
                f"not reachable with users pinned to replicas: C* per replica is {model.per_replica(c_star):.2f}, so "
                f"one replica of {model.gpus_per_replica} GPU(s) cannot hold even one pinned user under the target"
            ),
        )
    gpus = replicas * model.gpus_per_replica
    if crossing.status == "lower_bound":
        reason = (
            f"every measured level meets the target; C* ≥ {c_star:g} (the highest level measured), so {gpus} GPUs "
            "is an upper bound"
        )
        if crossing.extrapolated is not None:
            reason += f"; the capacity model extrapolates C* ≈ {crossing.extrapolated:.1f} (unmeasured, flagged)"
        reason += "; measure higher concurrency for a tighter answer"
    else:
        assert crossing.bracket is not None
        reason = (
            f"{label} meets {binding.target_s:g} s up to concurrency {crossing.bracket[0]:g} and misses it at "
            f"{crossing.bracket[1]:g}; C* ≈ {c_star:.1f} ({crossing.method} interpolation inside that bracket)"
        )
    if crossing.noisy_levels:
        notes.append(
            "levels "
            + ", ".join(f"{v:g}" for v in crossing.noisy_levels)
            + " meet the target again above the first failing level; treated as noise (conservative)"
        )
    # The point estimate always lies inside its interval (the monotone bounds can pass a noisy point).
    c_low = None if interval.c_low is None else min(interval.c_low, c_star)
    c_high = None if interval.c_high is None else max(interval.c_high, c_star)
    throughput = _interp_throughput(data.levels, c_star)
    cost = None
    if throughput and targets.gpu_price_per_hour is not None:
        cost = targets.gpu_price_per_hour * model.test_gpus / (throughput * 3600.0) * 1000.0
    return replace(
        located,
        reachable=True,
        reason=reason,
        slo_concurrency_low=c_low,
        slo_concurrency_high=c_high,
        load_per_replica=users / replicas,
        replicas=replicas,
        gpus=gpus,
        gpus_low=None if c_high is None else model.gpus_for(c_high, users),
        gpus_high=None if c_low is None else model.gpus_for(c_low, users),
        throughput_at_slo_rps=throughput,
        cost_per_1k_workflows=cost,
    )
