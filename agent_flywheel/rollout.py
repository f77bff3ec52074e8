"""Staged (canary) rollout check: per stage, canary vs baseline SLIs, error-budget burn rates, a decision.

Input: per-request observations ``(t_s, variant, ok, latency_s, quality | None)`` with ``t_s`` in seconds since
the rollout began and ``variant`` ``"baseline"`` or ``"canary"``. Stages (``RolloutStage``: weight, duration)
follow each other in time. Each stage ends in ``promote`` (go to the next stage), ``hold`` (not enough data, or
borderline: a human should look, like Argo Rollouts' *Inconclusive*) or ``rollback``, with reasons.

**SLIs**, on the canary's own requests (so the verdict does not depend on its traffic weight):

- errors: bad = a failed request; error budget ``B = 1 - availability``;
- latency: bad = a successful request slower than ``p95_latency_s``; budget 5 % (a p95 target);
- quality, where sampled: mean score against ``min_quality``.

**Multi-window burn rates** (Google SRE workbook): ``burn = bad ratio / B``. The workbook's page rules for a
30-day budget are 14.4× over 1 h *and* 5 min (2 % of the budget in an hour) and 6× over 6 h *and* 30 min
(5 % in six hours), with thresholds ``f × period / long window``; we derive the thresholds the same way from
``RolloutSLO.slo_period_s`` (so 14.4 and 6 for 30 days). A stage is much shorter than 6 h, so the **windows
are scaled, the thresholds are not**: every window is multiplied by ``k = min(1, stage_duration / 6 h)``, so
the slow rule's long window is the whole stage and all ratios of the workbook (short = long / 12, fast long =
slow long / 6) are kept. A burn rate is a rate — "at this error ratio the monthly budget is gone in 50 h" —
and does not change meaning with the window length; shrinking the windows only trades evidence for speed,
which is why a window must also hold a minimum number of canary requests before it may fire (low-weight
stages otherwise alarm on one error). The rules are evaluated every half short window through the stage;
a rule that fired at any time rolls the stage back (the canary burned budget while users were on it).

**Canary vs baseline**, like Kayenta / Flagger: Fisher's exact test (one-sided) on error counts, Mann-Whitney U
(one-sided, normal approximation with tie correction) on latency and on quality. A significant *and*
material regression that still meets the SLO is a ``hold``; an SLO breach beyond statistical doubt (Wilson
bound) is a ``rollback``; a breach within doubt is a ``hold``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from agent_flywheel.config import RolloutConfig, RolloutSLO, RolloutStage

Variant = Literal["baseline", "canary"]
Decision = Literal["promote", "hold", "rollback"]
CheckStatus = Literal["pass", "hold", "rollback", "skip"]

_NORMAL = NormalDist()
_HOUR = 3600.0


@dataclass(frozen=True)
class Observation:
    """One request seen during the rollout."""

    t_s: float
    variant: Variant
    ok: bool
    latency_s: float
    quality: float | None = None

    @classmethod
    def of(cls, item: Observation | Sequence[Any]) -> Observation:
        """Accept an Observation or a ``(t_s, variant, ok, latency_s[, quality])`` tuple."""
        if isinstance(item, Observation):
            return item
        t, variant, ok, latency = item[0], item[1], item[2], item[3]
        quality = item[4] if len(item) > 4 else None
        if variant not in ("baseline", "canary"):
            raise ValueError(f"variant must be 'baseline' or 'canary', got {variant!r}")
        return cls(float(t), variant, bool(ok), float(latency), None if quality is None else float(quality))


@dataclass(frozen=True)
class BurnRule:
    """A workbook alert: fire when both windows burn faster than ``f × period / long_window``."""

    name: str
    budget_fraction: float
    long_window_s: float
    short_window_s: float

    def threshold(self, period_s: float) -> float:
        """Burn-rate threshold for an SLO period (14.4 and 6 for the page rules over 30 days)."""
        return self.budget_fraction * period_s / self.long_window_s


SRE_PAGE_RULES: tuple[BurnRule, ...] = (
    BurnRule("fast burn (2% of budget in 1 h)", 0.02, _HOUR, 5 * 60.0),
    BurnRule("slow burn (5% of budget in 6 h)", 0.05, 6 * _HOUR, 30 * 60.0),
)


@dataclass(frozen=True)
class RolloutPolicy:
    """Knobs of the stage check (not in the YAML config: defaults that suit most agents)."""

    min_requests: int = 50  # canary requests a stage needs before it can be promoted
    min_window_requests: int = 20  # canary requests a long window needs before a burn rule may fire
    min_short_window_requests: int = 5
    alpha: float = 0.05  # one-sided level of every bound; the three canary-vs-baseline tests share it (Bonferroni)
    latency_tolerance: float = 0.10  # canary p95 may be this much above baseline before it counts as worse
    quality_tolerance: float = 0.02  # allowed drop in mean quality
    min_quality_samples: int = 20
    rules: tuple[BurnRule, ...] = SRE_PAGE_RULES
    reference_window_s: float = 6 * _HOUR  # the longest workbook window, scaled to the stage length


@dataclass(frozen=True)
class Check:
    """The outcome of one check within a stage."""

    name: str
    status: CheckStatus
    detail: str

    def to_dict(self) -> dict[str, str]:
        """Plain-JSON form."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


# --------------------------------------------------------------------------------------------------
# Statistics (no SciPy: the tests we need are short)
# --------------------------------------------------------------------------------------------------


def wilson_bounds(bad: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Wilson score bounds (lower, upper) for a proportion, each at level ``1 - alpha``."""
    if n == 0:
        return 0.0, 1.0
    z = _NORMAL.inv_cdf(1 - alpha)
    p = bad / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher_greater(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided Fisher exact p-value that group A's bad ratio is higher than group B's."""
    total_bad, total = bad_a + bad_b, n_a + n_b
    if total_bad == 0 or n_a == 0 or n_b == 0:
        return 1.0

    def log_pmf(k: int) -> float:
        return (
            math.lgamma(total_bad + 1)
            - math.lgamma(k + 1)
            - math.lgamma(total_bad - k + 1)
            + math.lgamma(total - total_bad + 1)
            - math.lgamma(n_a - k + 1)
            - math.lgamma(total - total_bad - n_a + k + 1)
            - (math.lgamma(total + 1) - math.lgamma(n_a + 1) - math.lgamma(total - n_a + 1))
        )

    hi = min(total_bad, n_a)
    lo_k = max(bad_a, total_bad - (total - n_a))
    return float(min(1.0, sum(math.exp(log_pmf(k)) for k in range(lo_k, hi + 1))))


def mann_whitney_greater(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mann-Whitney U test that ``a`` tends to be larger than ``b``: (P(a > b) + ½P(a = b), one-sided p).

    Normal approximation with tie correction and continuity correction; fine from about 10 per group.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 0.5, 1.0
    both = np.concatenate([x, y])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    n = n1 + n2
    tie = float((counts**3 - counts).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie / (n * (n - 1))) if n > 1 else 0.0
    effect = u1 / (n1 * n2)
    if var <= 0:
        return effect, 1.0
    z = (u1 - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
    return effect, 1.0 - _NORMAL.cdf(z)


# --------------------------------------------------------------------------------------------------
# Stage analysis
# --------------------------------------------------------------------------------------------------


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


def _slis(obs: Sequence[Observation], slo: RolloutSLO) -> VariantSLIs:
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


def _burn_rates(
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


def _fmt_window(seconds: float) -> str:
    if seconds >= _HOUR and abs(seconds / _HOUR - round(seconds / _HOUR)) < 1e-6:
        return f"{seconds / _HOUR:.0f} h"
    if seconds >= 60:
        return (
            f"{seconds / 60:.0f} min" if abs(seconds / 60 - round(seconds / 60)) < 1e-6 else f"{seconds / 60:.1f} min"
        )
    return f"{seconds:.0f} s"


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
    b_sli, c_sli = _slis(base, slo), _slis(can, slo)
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
        burns += _burn_rates(t, bad_err, err_budget, "errors", start_s, eval_end, scale, slo, pol)
        ok_mask = np.array([o.ok for o in can])
        if ok_mask.any():
            slow = np.array([o.latency_s > slo.p95_latency_s for o in can])[ok_mask]
            burns += _burn_rates(t[ok_mask], slow, lat_budget, "latency", start_s, eval_end, scale, slo, pol)
    for br in burns:
        if br.fired:
            checks.append(
                Check(
                    f"burn-rate:{br.sli}",
                    "rollback",
                    f"{br.sli} error budget burning too fast ({br.rule}): burn {br.long_burn_when_fired:.1f}x over "
                    f"{_fmt_window(br.long_window_s)} and {br.short_burn_when_fired:.1f}x over "
                    f"{_fmt_window(br.short_window_s)} > {br.threshold:.1f}x, "
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


@dataclass
class RolloutReport:
    """All stages up to the first that did not promote; the overall decision is that stage's."""

    decision: Decision
    stages: list[StageReport]
    not_reached: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (MLflow ``rollout/<app>`` artifact, event payload)."""
        return {
            "decision": self.decision,
            "stages": [s.to_dict() for s in self.stages],
            "not_reached": self.not_reached,
        }

    def to_markdown(self) -> str:
        """Human-readable: one section per stage with its decision, reasons and SLIs."""
        lines = [f"# Rollout check: **{self.decision}**", ""]
        for s in self.stages:
            lines += [f"## {s.stage} ({s.weight:.0%} canary): **{s.decision}**", ""]
            lines += [f"- {r}" for r in s.reasons]
            lines += [
                "",
                "| variant | requests | error rate | p95 s | quality |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            for name, v in (("baseline", s.baseline), ("canary", s.canary)):
                er = "—" if v.error_rate is None else f"{v.error_rate:.2%}"
                p95 = "—" if v.p95_latency_s is None else f"{v.p95_latency_s:.3f}"
                q = "—" if v.quality_mean is None else f"{v.quality_mean:.3f} (n={v.quality_samples})"
                lines.append(f"| {name} | {v.requests} | {er} | {p95} | {q} |")
            lines += ["", f"Burn-rate windows scaled by {s.window_scale:.3g} to the stage length.", ""]
        if self.not_reached:
            lines.append(f"Not reached: {', '.join(self.not_reached)}.")
        return "\n".join(lines) + "\n"


def analyze_rollout(
    observations: Iterable[Observation | Sequence[Any]],
    config: RolloutConfig,
    *,
    now_s: float | None = None,
    policy: RolloutPolicy | None = None,
) -> RolloutReport:
    """Walk the stages in order (each starts when the previous ends) and stop at the first non-promote.

    Why: a stage may only be judged once the previous one promoted; the report says where the rollout stands.
    """
    obs = [Observation.of(o) for o in observations]
    reports: list[StageReport] = []
    start = 0.0
    stages = list(config.stages)
    for i, stage in enumerate(stages):
        if now_s is not None and now_s <= start:
            return RolloutReport("hold", reports, [s.name for s in stages[i:]])
        report = analyze_stage(obs, stage, config.slo, start_s=start, now_s=now_s, policy=policy)
        reports.append(report)
        if report.decision != "promote":
            return RolloutReport(report.decision, reports, [s.name for s in stages[i + 1 :]])
        start += stage.duration_s
    return RolloutReport("promote", reports, [])
