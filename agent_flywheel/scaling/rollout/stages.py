"""One stage judged: the canary's and the baseline's SLIs, burn rates, SLO checks, comparisons, a decision."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from agent_flywheel.config import RolloutSLO, RolloutStage
from agent_flywheel.scaling.rollout.burn_rates import BurnRateResult, burn_rates, format_window
from agent_flywheel.scaling.rollout.observations import Observation
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.statistics import fisher_greater, mann_whitney_greater, wilson_bounds

Decision = Literal["promote", "hold", "rollback"]
CheckStatus = Literal["pass", "hold", "rollback", "skip"]

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Check:
    """The outcome of one check within a stage."""

    name: str
    status: CheckStatus
    detail: str

    def to_dict(self) -> dict[str, str]:
        """Plain-JSON form."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class VariantSLIs:
    """What one variant did during a stage."""

    requests: int
    errors: int
    error_rate: float | None
    p95_latency_s: float | None
    slow_share: float | None  # successful requests slower than the SLO's p95 target
    quality_mean: float | None
    quality_samples: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


def variant_slis(obs: Sequence[Observation], slo: RolloutSLO) -> VariantSLIs:
    """One arm's SLIs: requests, errors, error rate, p95 of the successful ones, slow share, mean quality."""
    n = len(obs)
    errors = sum(not o.ok for o in obs)
    lat = np.array([o.latency_s for o in obs if o.ok], dtype=float)
    qual = [o.quality for o in obs if o.quality is not None]
    return VariantSLIs(
        requests=n,
        errors=errors,
        error_rate=errors / n if n else None,
        p95_latency_s=float(np.percentile(lat, 95)) if len(lat) else None,
        slow_share=float((lat > slo.p95_latency_s).mean()) if len(lat) else None,
        quality_mean=float(np.mean(qual)) if qual else None,
        quality_samples=len(qual),
    )


@dataclass
class StageReport:
    """One stage's SLIs, burn rates, comparisons, checks and decision."""

    stage: str
    weight: float
    start_s: float
    end_s: float
    decision: Decision
    reasons: list[str]
    checks: list[Check]
    baseline: VariantSLIs
    canary: VariantSLIs
    burn_rates: list[BurnRateResult]
    window_scale: float
    comparisons: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "stage": self.stage,
            "weight": self.weight,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "decision": self.decision,
            "reasons": self.reasons,
            "checks": [c.to_dict() for c in self.checks],
            "baseline": self.baseline.to_dict(),
            "canary": self.canary.to_dict(),
            "burn_rates": [b.to_dict() for b in self.burn_rates],
            "window_scale": self.window_scale,
            "comparisons": self.comparisons,
        }


def analyze_stage(
    observations: Iterable[Observation | Sequence[Any]],
    stage: RolloutStage,
    slo: RolloutSLO,
    *,
    start_s: float = 0.0,
    now_s: float | None = None,
    policy: RolloutPolicy | None = None,
) -> StageReport:
    """Decide one stage: ``promote``, ``hold`` or ``rollback``, with the reasons.

    Why: a rollout needs a verdict per stage that a person can audit — which SLI, which window, which test —
    rather than a single score. Observations outside ``[start_s, start_s + duration_s)`` are ignored.
    ``now_s`` (default: the stage is over) marks a stage still running: it can roll back early but not promote.
    """
    pol = policy or RolloutPolicy()
    end_s = start_s + stage.duration_s
    obs = [Observation.of(o) for o in observations]
    obs = [o for o in obs if start_s <= o.t_s < end_s]
    base = [o for o in obs if o.variant == "baseline"]
    can = [o for o in obs if o.variant == "canary"]
    b_sli, c_sli = variant_slis(base, slo), variant_slis(can, slo)
    checks: list[Check] = []
    scale = min(1.0, stage.duration_s / pol.reference_window_s)
    err_budget = 1.0 - slo.availability
    lat_budget = 0.05
    observed_until = end_s if now_s is None else min(now_s, end_s)
    eval_end = observed_until

    # Enough data? --------------------------------------------------------------------------------
    if c_sli.requests < pol.min_requests:
        checks.append(
            Check(
                "data",
                "hold",
                f"not enough data: {c_sli.requests} canary requests in this stage, need at least {pol.min_requests}",
            )
        )
    else:
        checks.append(Check("data", "pass", f"{c_sli.requests} canary and {b_sli.requests} baseline requests"))
    if now_s is not None and now_s < end_s:
        checks.append(
            Check("time", "hold", f"stage still running: {now_s - start_s:.0f} of {stage.duration_s:.0f} s observed")
        )

    # Burn rates on the canary ----------------------------------------------------------------------
    burns: list[BurnRateResult] = []
    if can:
        t = np.array([o.t_s for o in can], dtype=float)
        bad_err = np.array([not o.ok for o in can])
        burns += burn_rates(t, bad_err, err_budget, "errors", start_s, eval_end, scale, slo, pol)
        ok_mask = np.array([o.ok for o in can])
        if ok_mask.any():
            slow = np.array([o.latency_s > slo.p95_latency_s for o in can])[ok_mask]
            burns += burn_rates(t[ok_mask], slow, lat_budget, "latency", start_s, eval_end, scale, slo, pol)
    for br in burns:
        if br.fired:
            checks.append(
                Check(
                    f"burn-rate:{br.sli}",
                    "rollback",
                    f"{br.sli} error budget burning too fast ({br.rule}): burn {br.long_burn_when_fired:.1f}x over "
                    f"{format_window(br.long_window_s)} and {br.short_burn_when_fired:.1f}x over "
                    f"{format_window(br.short_window_s)} > {br.threshold:.1f}x, "
                    f"{br.first_fired_at_s - start_s if br.first_fired_at_s is not None else 0:.0f} s into the stage",
                )
            )
    if not any(b.fired for b in burns) and burns:
        worst = max((b.max_burn or 0.0) for b in burns)
        checks.append(Check("burn-rate", "pass", f"no burn-rate rule fired (highest burn {worst:.1f}x)"))

    # SLO checks over the stage ---------------------------------------------------------------------
    if c_sli.requests:
        lo, _ = wilson_bounds(c_sli.errors, c_sli.requests, pol.alpha)
        rate = c_sli.error_rate or 0.0
        if lo > err_budget:
            status: CheckStatus = "rollback"
            detail = f"error rate {rate:.2%} is above the {err_budget:.2%} budget beyond doubt (lower bound {lo:.2%})"
        elif rate > err_budget:
            status, detail = "hold", f"error rate {rate:.2%} is above the {err_budget:.2%} budget but within doubt"
        else:
            status, detail = "pass", f"error rate {rate:.2%} within the {err_budget:.2%} budget"
        checks.append(Check("slo:errors", status, detail))
    ok_can = [o.latency_s for o in can if o.ok]
    if ok_can and c_sli.p95_latency_s is not None:
        slow_n = sum(v > slo.p95_latency_s for v in ok_can)
        lo, _ = wilson_bounds(slow_n, len(ok_can), pol.alpha)
        if lo > lat_budget:
            status = "rollback"
            detail = (
                f"p95 latency {c_sli.p95_latency_s:.3f} s exceeds the {slo.p95_latency_s:g} s SLO beyond doubt "
                f"({slow_n / len(ok_can):.1%} slower, lower bound {lo:.1%} > 5%)"
            )
        elif c_sli.p95_latency_s > slo.p95_latency_s:
            status = "hold"
            detail = f"p95 latency {c_sli.p95_latency_s:.3f} s exceeds the {slo.p95_latency_s:g} s SLO, within doubt"
        else:
            status, detail = "pass", f"p95 latency {c_sli.p95_latency_s:.3f} s within {slo.p95_latency_s:g} s"
        checks.append(Check("slo:latency", status, detail))
    if slo.min_quality is not None:
        q = [o.quality for o in can if o.quality is not None]
        if len(q) < pol.min_quality_samples:
            checks.append(
                Check("slo:quality", "skip", f"{len(q)} quality samples, need {pol.min_quality_samples} to judge")
            )
        else:
            mean = float(np.mean(q))
            half = _NORMAL.inv_cdf(1 - pol.alpha) * float(np.std(q, ddof=1)) / math.sqrt(len(q))
            if mean + half < slo.min_quality:
                status, detail = "rollback", f"quality {mean:.3f} below the {slo.min_quality:g} minimum beyond doubt"
            elif mean < slo.min_quality:
                status, detail = "hold", f"quality {mean:.3f} below the {slo.min_quality:g} minimum, within doubt"
            else:
                status, detail = "pass", f"quality {mean:.3f} meets the {slo.min_quality:g} minimum"
            checks.append(Check("slo:quality", status, detail))

    # Canary vs baseline ----------------------------------------------------------------------------
    comparisons: dict[str, Any] = {}
    alpha_cmp = pol.alpha / 3  # errors, latency, quality: the family-wise false-hold rate stays at alpha
    if b_sli.requests >= pol.min_requests and c_sli.requests >= pol.min_requests:
        p_err = fisher_greater(c_sli.errors, c_sli.requests, b_sli.errors, b_sli.requests)
        comparisons["errors_p_value"] = p_err
        if p_err < alpha_cmp and (c_sli.error_rate or 0) > (b_sli.error_rate or 0):
            checks.append(
                Check(
                    "compare:errors",
                    "hold",
                    f"canary errors {c_sli.error_rate:.2%} vs baseline {b_sli.error_rate:.2%} (Fisher p={p_err:.3g})",
                )
            )
        else:
            checks.append(Check("compare:errors", "pass", f"no significant error increase (p={p_err:.3g})"))
        ok_base = [o.latency_s for o in base if o.ok]
        if ok_can and ok_base and b_sli.p95_latency_s and c_sli.p95_latency_s is not None:
            effect, p_lat = mann_whitney_greater(ok_can, ok_base)
            ratio = c_sli.p95_latency_s / b_sli.p95_latency_s
            comparisons.update(latency_p_value=p_lat, latency_effect=effect, p95_ratio=ratio)
            if p_lat < alpha_cmp and ratio > 1 + pol.latency_tolerance:
                checks.append(
                    Check(
                        "compare:latency",
                        "hold",
                        f"canary slower: p95 {c_sli.p95_latency_s:.3f} s vs {b_sli.p95_latency_s:.3f} s "
                        f"(x{ratio:.2f}, Mann-Whitney p={p_lat:.3g})",
                    )
                )
            else:
                checks.append(
                    Check("compare:latency", "pass", f"p95 x{ratio:.2f} of baseline (Mann-Whitney p={p_lat:.3g})")
                )
        q_can = [o.quality for o in can if o.quality is not None]
        q_base = [o.quality for o in base if o.quality is not None]
        if len(q_can) >= pol.min_quality_samples and len(q_base) >= pol.min_quality_samples:
            effect, p_q = mann_whitney_greater(q_base, q_can)
            drop = float(np.mean(q_base) - np.mean(q_can))
            comparisons.update(quality_p_value=p_q, quality_drop=drop)
            if p_q < alpha_cmp and drop > pol.quality_tolerance:
                checks.append(
                    Check("compare:quality", "hold", f"canary quality lower by {drop:.3f} (Mann-Whitney p={p_q:.3g})")
                )
            else:
                checks.append(Check("compare:quality", "pass", f"quality drop {drop:.3f} (p={p_q:.3g})"))
    else:
        checks.append(
            Check(
                "compare",
                "skip",
                f"no comparison: {b_sli.requests} baseline / {c_sli.requests} canary requests "
                f"(need {pol.min_requests} each; a 100% stage has no baseline)",
            )
        )

    decision: Decision
    if any(c.status == "rollback" for c in checks):
        decision = "rollback"
    elif any(c.status == "hold" for c in checks):
        decision = "hold"
    else:
        decision = "promote"
    wanted = {"rollback": ("rollback",), "hold": ("hold",), "promote": ("pass",)}[decision]
    reasons = [c.detail for c in checks if c.status in wanted]
    return StageReport(
        stage=stage.name,
        weight=stage.weight,
        start_s=start_s,
        end_s=end_s,
        decision=decision,
        reasons=reasons,
        checks=checks,
        baseline=b_sli,
        canary=c_sli,
        burn_rates=burns,
        window_scale=scale,
        comparisons=comparisons,
    )
