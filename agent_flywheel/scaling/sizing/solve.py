"""The sizing method: C* by measured bracketing, GPUs in whole replicas, a bootstrap interval, cost at the SLO."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.sizing.bracketing import Crossing, find_crossing
from agent_flywheel.scaling.sizing.capacity import CapacityFit, fit_capacity
from agent_flywheel.scaling.sizing.nat_linear import nat_linear_estimate
from agent_flywheel.scaling.sizing.quantiles import quantile_with_failures
from agent_flywheel.scaling.sizing.result import SizingResult, users_per_replica
from agent_flywheel.scaling.sizing.sweeps import LevelData, Metric, SweepData


def _gpus_for(c: float, users: int, test_gpus: int) -> tuple[int, int] | None:
    if c <= 0:
        return None
    replicas = max(1, math.ceil(users / users_per_replica(c) - 1e-9))
    return replicas, replicas * test_gpus


def _solve(
    x: np.ndarray, y_w: np.ndarray, y_llm: np.ndarray | None, t_w: float, t_llm: float | None
) -> tuple[Crossing, Metric, CapacityFit | None]:
    fit_w = fit_capacity(x, y_w)
    best = find_crossing(x, y_w, t_w, fit_w)
    metric: Metric = "workflow"
    fit = fit_w
    if y_llm is not None and t_llm is not None:
        fit_l = fit_capacity(x, y_llm)
        cross_l = find_crossing(x, y_llm, t_llm, fit_l)
        if cross_l.concurrency < best.concurrency or (
            cross_l.concurrency == best.concurrency and cross_l.status == "unreachable"
        ):
            best, metric, fit = cross_l, "llm", fit_l
    return best, metric, fit


def _bootstrap_p95(passes: list[np.ndarray], rng: np.random.Generator, b: int, resample_passes: bool) -> np.ndarray:
    """``b`` bootstrap replicates of the pooled p95: passes resampled, then requests within each chosen pass."""
    passes = [p for p in passes if len(p)]
    if not passes:
        return np.full(b, np.nan)
    sizes = np.array([len(p) for p in passes])
    n_max = int(sizes.max())
    padded = np.full((len(passes), n_max), np.nan)
    for i, p in enumerate(passes):
        padded[i, : len(p)] = p
    cols = []
    for slot, n_slot in enumerate(sizes):
        chosen = rng.integers(0, len(passes), size=b) if resample_passes and len(passes) > 1 else np.full(b, slot)
        idx = (rng.random((b, int(n_slot))) * sizes[chosen][:, None]).astype(int)
        cols.append(padded[chosen[:, None], idx])
    return quantile_with_failures(np.concatenate(cols, axis=1), 0.95, axis=1)


def _interp_throughput(levels: Sequence[LevelData], c: float) -> float | None:
    pts = [(lv.concurrency, lv.throughput_rps) for lv in levels if lv.throughput_rps is not None]
    if not pts:
        return None
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(c, xs, ys))


def size(
    data: SweepData,
    targets: SizingTargets,
    *,
    seed: int = 0,
    resample_passes: bool = True,
    compare_nat: bool = True,
) -> SizingResult:
    """Size the system: C* by measured bracketing, GPUs in whole replicas, a bootstrap interval, cost.

    Why: an answer with an interval, honest about what was measured (never a crash when the SLO cannot be
    met, never a straight line through the knee). See the module docstring for the method.
    """
    x = data.concurrencies
    t_w, t_llm = targets.target_workflow_p95_s, targets.target_llm_p95_s
    notes = list(data.notes)
    y_w = np.array([lv.p95("workflow") for lv in data.levels], dtype=float)
    use_llm = t_llm is not None
    if use_llm and not data.has_llm:
        notes.append("an LLM-call target was given but the sweep has no LLM latencies; only the workflow target used")
        use_llm = False
    y_l = np.array([lv.p95("llm") for lv in data.levels], dtype=float) if use_llm else None
    crossing, metric, fit = _solve(x, y_w, y_l, t_w, t_llm if use_llm else None)
    users, tg = targets.target_users, targets.test_gpus

    # Bootstrap -------------------------------------------------------------------------------------
    b = targets.bootstrap_samples
    low_high_w: list[tuple[float | None, float | None]] = [(None, None)] * len(x)
    c_low = c_high = None
    g_low = g_high = None
    unreachable_share = 0.0
    if data.has_samples:
        rng = np.random.default_rng(seed)
        boot_w = np.stack([_bootstrap_p95(lv.workflow, rng, b, resample_passes) for lv in data.levels], axis=1)
        boot_l = (
            np.stack([_bootstrap_p95(lv.llm, rng, b, resample_passes) for lv in data.levels], axis=1)
            if use_llm
            else None
        )
        alpha = (1 - targets.confidence) / 2
        with np.errstate(invalid="ignore"):
            lo_w = np.quantile(boot_w, alpha, axis=0, method="inverted_cdf")
            hi_w = np.quantile(boot_w, 1 - alpha, axis=0, method="inverted_cdf")
        low_high_w = [(float(a), float(c)) for a, c in zip(lo_w, hi_w, strict=True)]
        cs = np.empty(b)
        for i in range(b):
            cr, _, _ = _solve(x, boot_w[i], boot_l[i] if boot_l is not None else None, t_w, t_llm if use_llm else None)
            cs[i] = cr.concurrency
        unreachable_share = float((cs <= 0).mean())
        c_low = float(np.quantile(cs, alpha, method="inverted_cdf"))
        c_high = float(np.quantile(cs, 1 - alpha, method="inverted_cdf"))
        g_low_pair, g_high_pair = _gpus_for(c_high, users, tg), _gpus_for(c_low, users, tg)
        g_low = g_low_pair[1] if g_low_pair else None
        g_high = g_high_pair[1] if g_high_pair else None
    else:
        notes.append("no interval: per-level input has no per-request samples to resample")

    # Per-level table -------------------------------------------------------------------------------
    meets_all = y_w <= t_w
    if y_l is not None and t_llm is not None:
        meets_all = meets_all & (y_l <= t_llm)
    levels = []
    for i, lv in enumerate(data.levels):
        levels.append(
            {
                "concurrency": float(lv.concurrency),
                "workflow_p95_s": _finite_or_none(y_w[i]),
                "workflow_p95_low_s": _finite_or_none(low_high_w[i][0]),
                "workflow_p95_high_s": _finite_or_none(low_high_w[i][1]),
                "llm_p95_s": _finite_or_none(lv.p95("llm")),
                "throughput_rps": lv.throughput_rps,
                "requests": int(sum(len(p) for p in lv.workflow)) if lv.has_samples else None,
                "meets_target": bool(meets_all[i]),
            }
        )

    # NeMo Agent Toolkit comparison -----------------------------------------------------------------
    nat = None
    if compare_nat:
        finite = np.isfinite(y_w)
        nat = nat_linear_estimate(x[finite], y_w[finite], t_w, users, tg)

    targets_d = {
        "target_workflow_p95_s": t_w,
        "target_llm_p95_s": t_llm,
        "target_users": users,
        "test_gpus": tg,
        "gpu_price_per_hour": targets.gpu_price_per_hour,
    }
    label = "LLM-call p95" if metric == "llm" else "workflow p95"
    target_of = t_llm if metric == "llm" and t_llm is not None else t_w
    if crossing.status == "unreachable":
        first = data.levels[0]
        p = first.p95(metric)
        shown = "∞ (more than 5% of requests failed)" if p is None or not math.isfinite(p) else f"{p:.2f} s"
        reason = (
            f"not reachable: {label} at concurrency {first.concurrency:g} is already {shown} (target {target_of:g} s)"
        )
        if first.concurrency > 1:
            reason += "; measure lower concurrency to know whether any load meets it"
        return SizingResult(
            reachable=False,
            reason=reason,
            slo_concurrency=None,
            slo_concurrency_low=c_low,
            slo_concurrency_high=c_high,
            slo_concurrency_is_lower_bound=False,
            extrapolated_slo_concurrency=None,
            binding_metric=metric,
            bracket=None,
            interpolation=crossing.method,
            replicas=None,
            gpus=None,
            gpus_low=g_low,
            gpus_high=g_high,
            throughput_at_slo_rps=None,
            cost_per_1k_workflows=None,
            fit=fit,
            levels=levels,
            targets=targets_d,
            confidence=targets.confidence,
            bootstrap_samples=b if data.has_samples else 0,
            unreachable_share=unreachable_share,
            nat_linear=nat,
            notes=notes,
        )

    c_star = crossing.concurrency
    pair = _gpus_for(c_star, users, tg)
    assert pair is not None  # c_star > 0 when reachable
    replicas, gpus = pair
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
            f"{label} meets {target_of:g} s up to concurrency {crossing.bracket[0]:g} and misses it at "
            f"{crossing.bracket[1]:g}; C* ≈ {c_star:.1f} ({crossing.method} interpolation inside that bracket)"
        )
    if crossing.noisy_levels:
        notes.append(
            "levels "
            + ", ".join(f"{v:g}" for v in crossing.noisy_levels)
            + " meet the target again above the first failing level; treated as noise (conservative)"
        )
    if unreachable_share > 0:
        notes.append(f"in {unreachable_share:.1%} of bootstrap resamples the target was not reachable at all")
    # The point estimate always lies inside its interval.
    if c_low is not None and c_high is not None:
        c_low, c_high = min(c_low, c_star), max(c_high, c_star)
    if g_low is not None:
        g_low = min(g_low, gpus)
    if data.has_samples:
        g_high = max(g_high, gpus) if g_high is not None else None
    else:
        g_low = g_high = gpus
        c_low = c_high = c_star
    throughput = _interp_throughput(data.levels, c_star)
    cost = None
    if throughput and targets.gpu_price_per_hour is not None:
        cost = targets.gpu_price_per_hour * tg / (throughput * 3600.0) * 1000.0
    return SizingResult(
        reachable=True,
        reason=reason,
        slo_concurrency=c_star,
        slo_concurrency_low=c_low,
        slo_concurrency_high=c_high,
        slo_concurrency_is_lower_bound=crossing.status == "lower_bound",
        extrapolated_slo_concurrency=crossing.extrapolated,
        binding_metric=metric,
        bracket=crossing.bracket,
        interpolation=crossing.method,
        replicas=replicas,
        gpus=gpus,
        gpus_low=g_low,
        gpus_high=g_high,
        throughput_at_slo_rps=throughput,
        cost_per_1k_workflows=cost,
        fit=fit,
        levels=levels,
        targets=targets_d,
        confidence=targets.confidence,
        bootstrap_samples=b if data.has_samples else 0,
        unreachable_share=unreachable_share,
        nat_linear=nat,
        notes=notes,
    )


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def size_sweep(sweep: Any, targets: SizingTargets, *, seed: int = 0) -> SizingResult:
    """Size straight from a :class:`~agent_flywheel.scaling.loadgen.sweep.SweepResult` (per-call LLM latencies)."""
    return size(SweepData.from_sweep(sweep), targets, seed=seed)


def size_from_mapping(rows: Sequence[Mapping[str, Any]], targets: SizingTargets, *, seed: int = 0) -> SizingResult:
    """Size from plain dict rows (per request or per level), e.g. rows fetched from MLflow."""
    return size(SweepData.from_frame(pd.DataFrame(list(rows))), targets, seed=seed)
