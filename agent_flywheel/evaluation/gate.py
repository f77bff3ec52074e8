"""The promotion gate: which candidate, if any, may replace the teacher.

Policy (ours; the blueprint leaves this to a human reading a table):

1. a candidate is a model × eval mode (``base-eval``, ``icl-eval``, ``customized-eval``);
2. it is **non-inferior** when the lower bound of the paired bootstrap interval of
   ``mean(candidate − teacher)`` on ``cfg.metric`` at ``cfg.confidence`` is above ``−cfg.margin``;
   samples pair by key (the conversation hash), so both sides are scored on the same conversations;
3. among non-inferior candidates that are **cheaper than the teacher**, the cheapest wins
   (``cost_basis``: ``size`` = billions of parameters, or ``cost_per_1k_tokens``); ties go to the higher
   score, then to the simpler mode (base, then customized, then ICL, whose examples cost prompt tokens);
4. a candidate without scores is "not evaluated", one without a known cost is not promoted, and
   nothing here raises on missing data: the decision always explains itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from agent_flywheel.config import EVAL_MODES, EvalMode, NIMConfig, PromotionGateConfig
from agent_flywheel.evaluation.bootstrap import Interval, paired_bootstrap_difference
from agent_flywheel.evaluation.results import scores_by_sample

Scores = Mapping[str, float] | Sequence[Mapping[str, Any]]
"""Per-sample scores: ``{sample_key: value}`` for the gate's metric, or per-sample rows from
:func:`agent_flywheel.evaluation.results.parse_sample_results` (the metric is read from them)."""

Verdict = Literal["non-inferior", "non-inferiority not shown", "inferior", "not evaluated"]
"""A candidate's verdict on the paired interval of ``candidate - teacher``: ``non-inferior`` when the whole
interval lies above ``-margin``; ``inferior`` when the whole interval lies below it (shown worse by more than
the margin); ``non-inferiority not shown`` when it straddles ``-margin`` (the data cannot tell: more eval
samples would); ``not evaluated`` without paired scores."""
_MODE_PREFERENCE: dict[str, int] = {"base-eval": 0, "customized-eval": 1, "icl-eval": 2}
_BOUNDS: dict[str, str] = {
    "non-inferior": "lower bound > -{margin:g}",
    "non-inferiority not shown": "interval straddles -{margin:g}",
    "inferior": "upper bound <= -{margin:g}",
}


@dataclass(frozen=True)
class Candidate:
    """One model evaluated one way."""

    model_name: str
    eval_mode: EvalMode

    @property
    def name(self) -> str:
        """``<model> (<mode>)``, the label used in tables and reasons."""
        return f"{self.model_name} ({self.eval_mode})"


@dataclass(frozen=True)
class CandidateAssessment:
    """What the gate concluded about one candidate, with the numbers behind it."""

    candidate: Candidate
    verdict: Verdict
    cost: float | None
    cheaper: bool
    mean: float | None = None
    teacher_mean: float | None = None
    difference: Interval | None = None
    unpaired: int = 0
    note: str = ""

    def reason(self, metric: str, margin: float, confidence: float, cost_unit: str) -> str:
        """One line: mean, interval, verdict and cost, in words a reviewer can check."""
        cost = "cost unknown" if self.cost is None else f"cost {_fmt_cost(self.cost)} {cost_unit}"
        if self.verdict == "not evaluated" or self.difference is None:
            return f"{self.candidate.name}: not evaluated{_suffix(self.note)}; {cost}"
        d = self.difference
        level = f"{confidence:.0%}"
        line = (
            f"{self.candidate.name}: {metric} {self.mean:.3f} vs teacher {self.teacher_mean:.3f} on {d.n} paired "
            f"samples; difference {d.mean:+.3f}, {level} interval [{d.low:+.3f}, {d.high:+.3f}]; "
            f"{self.verdict} ({_BOUNDS[self.verdict].format(margin=margin)}); {cost}"
        )
        if not self.cheaper:
            line += ", not cheaper than the teacher"
        if self.unpaired:
            line += f"; {self.unpaired} samples scored on one side only were left out"
        return line + _suffix(self.note)


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer: the promoted candidate (or None), why, and a table for the Prefect artifact."""

    promoted: Candidate | None
    outcome: Literal["promoted", "no-candidate"]
    reasons: list[str]
    rows: list[dict[str, Any]]
    metric: str
    margin: float
    confidence: float
    cost_basis: str
    teacher: str
    teacher_mean: float | None
    assessments: list[CandidateAssessment] = field(default_factory=list)

    def to_markdown(self) -> str:
        """A Markdown report: the policy, the outcome, one table row per candidate and the reasons."""
        head = (
            f"## Promotion gate: {self.outcome}\n\n"
            f"Metric `{self.metric}`, non-inferiority margin {self.margin:g} at {self.confidence:.0%} "
            f"(paired bootstrap), then the cheapest by `{self.cost_basis}`. Teacher: `{self.teacher}`"
            + (f" ({self.teacher_mean:.3f})" if self.teacher_mean is not None else " (no scores)")
            + ".\n\n"
        )
        winner = f"**Promoted:** `{self.promoted.name}`\n\n" if self.promoted else "**No candidate promoted.**\n\n"
        columns = ["candidate", "mode", "n", "mean", "difference", "interval", "verdict", "cost", "promoted"]
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in self.rows:
            interval = "" if row["low"] is None else f"[{row['low']:+.3f}, {row['high']:+.3f}]"
            cells = [
                f"`{row['model']}`",
                row["eval_mode"],
                str(row["n"]),
                _fmt(row["mean"], "{:.3f}"),
                _fmt(row["difference"], "{:+.3f}"),
                interval,
                row["verdict"],
                "" if row["cost"] is None else _fmt_cost(row["cost"]),
                "yes" if row["promoted"] else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        reasons = "\n".join(f"- {r}" for r in self.reasons)
        return head + winner + "\n".join(lines) + "\n\n### Reasons\n\n" + reasons + "\n"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary for MLflow and events."""
        return {
            "outcome": self.outcome,
            "promoted": None if self.promoted is None else asdict(self.promoted),
            "metric": self.metric,
            "margin": self.margin,
            "confidence": self.confidence,
            "cost_basis": self.cost_basis,
            "teacher": self.teacher,
            "teacher_mean": self.teacher_mean,
            "reasons": list(self.reasons),
            "rows": [dict(r) for r in self.rows],
        }


def _suffix(note: str) -> str:
    return f" ({note})" if note else ""


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else spec.format(value)


def _fmt_cost(cost: float) -> str:
    return f"{cost:g}"


def minimum_eval_records(margin: float, confidence: float) -> int:
    """The smallest eval set on which the gate can still pass a candidate that is wrong on one sample more
    than the teacher: the minimum for a meaningful gate.

    On ``n`` paired samples such a candidate's differences are one ``-1`` and zeros. A bootstrap resample
    draws that sample ``K ~ Binomial(n, 1/n)`` times, so the interval's lower bound is ``-q/n`` with ``q`` the
    ``(1 + confidence) / 2`` quantile of ``K``; the candidate passes when ``q/n < margin``. With fewer samples
    a single disagreement fails every candidate, however good, and the gate decides nothing (at the default
    margin 0.05 and confidence 0.95: 61 samples). With ``margin`` 0 only a candidate never worse than the
    teacher can pass, on any number of samples: 1.
    """
    if margin <= 0:
        return 1
    level = (1.0 + confidence) / 2.0
    n = 1
    while True:
        p = 1.0 / n
        cumulative, k = 0.0, 0
        while True:
            cumulative += math.comb(n, k) * p**k * (1.0 - p) ** (n - k)
            if cumulative >= level or k == n:
                break
            k += 1
        if k < margin * n:
            return n
        n += 1


def model_cost(nim: NIMConfig, cost_basis: str) -> float | None:
    """The cost the gate compares: billions of parameters (``size``) or ``cost_per_1k_tokens``."""
    return nim.size_b if cost_basis == "size" else nim.cost_per_1k_tokens


def _as_scores(scores: Scores | None, metric: str) -> dict[str, float]:
    if scores is None:
        return {}
    if isinstance(scores, Mapping):
        return {str(k): float(v) for k, v in scores.items() if v is not None and not math.isnan(float(v))}
    return scores_by_sample(scores, metric)


def decide_promotion(
    teacher: NIMConfig,
    teacher_scores: Scores | None,
    candidates: Sequence[NIMConfig],
    candidate_scores: Mapping[tuple[str, str], Scores | None],
    cfg: PromotionGateConfig,
    seed: int = 0,
) -> GateDecision:
    """Decide which candidate (model × eval mode) replaces the teacher, if any, and say why.

    ``teacher_scores`` are the teacher's ``base-eval`` per-sample scores; ``candidate_scores`` maps
    ``(model_name, eval_mode)`` to per-sample scores. Every model in ``candidates`` is assessed in every
    mode of ``cfg.eval_modes``; a missing entry is "not evaluated". Deterministic for a ``seed``.
    """
    reference = _as_scores(teacher_scores, cfg.metric)
    teacher_mean = sum(reference.values()) / len(reference) if reference else None
    teacher_cost = model_cost(teacher, cfg.cost_basis)
    assessments: list[CandidateAssessment] = []
    for nim in candidates:
        for mode in (m for m in EVAL_MODES if m in cfg.eval_modes):
            candidate = Candidate(nim.model_name, mode)
            cost = model_cost(nim, cfg.cost_basis)
            cheaper = cost is not None and teacher_cost is not None and cost < teacher_cost
            raw = candidate_scores.get((nim.model_name, mode))
            assessments.append(_assess(candidate, raw, reference, cost, cheaper, nim, cfg, seed))

    eligible = [a for a in assessments if a.verdict == "non-inferior" and a.cheaper]
    eligible.sort(
        key=lambda a: (
            a.cost if a.cost is not None else math.inf,
            -(a.mean if a.mean is not None else -math.inf),
            _MODE_PREFERENCE.get(a.candidate.eval_mode, 9),
            a.candidate.model_name,
        )
    )
    promoted = eligible[0].candidate if eligible else None
    unit = "B parameters" if cfg.cost_basis == "size" else "per 1k tokens"
    reasons = [a.reason(cfg.metric, cfg.margin, cfg.confidence, unit) for a in assessments]
    if teacher_cost is None:
        reasons.append(
            f"teacher {teacher.model_name}: cost unknown on basis {cfg.cost_basis}, so no candidate is cheaper"
        )
    if not reference:
        reasons.append(f"teacher {teacher.model_name}: no {cfg.metric} scores, so no candidate can be compared")
    if promoted is not None:
        reasons.append(f"promoted {promoted.name}: the cheapest non-inferior candidate cheaper than the teacher")
    else:
        reasons.append("no candidate promoted: none is both non-inferior and cheaper than the teacher")
    rows = [_row(a, promoted) for a in assessments]
    return GateDecision(
        promoted=promoted,
        outcome="promoted" if promoted is not None else "no-candidate",
        reasons=reasons,
        rows=rows,
        metric=cfg.metric,
        margin=cfg.margin,
        confidence=cfg.confidence,
        cost_basis=cfg.cost_basis,
        teacher=teacher.model_name,
        teacher_mean=teacher_mean,
        assessments=assessments,
    )


def _assess(
    candidate: Candidate,
    raw: Scores | None,
    reference: Mapping[str, float],
    cost: float | None,
    cheaper: bool,
    nim: NIMConfig,
    cfg: PromotionGateConfig,
    seed: int,
) -> CandidateAssessment:
    scores = _as_scores(raw, cfg.metric)
    if raw is None or not scores:
        note = ""
        if candidate.eval_mode == "customized-eval" and not nim.customization_enabled:
            note = "customization disabled"
        elif raw is not None:
            note = f"no {cfg.metric} scores"
        return CandidateAssessment(candidate, "not evaluated", cost, cheaper, note=note)
    if not reference:
        return CandidateAssessment(candidate, "not evaluated", cost, cheaper, note="no teacher scores")
    paired = paired_bootstrap_difference(
        scores, reference, confidence=cfg.confidence, n_resamples=cfg.bootstrap_samples, seed=seed
    )
    if paired.n == 0:
        return CandidateAssessment(
            candidate, "not evaluated", cost, cheaper, note="no samples in common with the teacher"
        )
    verdict: Verdict = (
        "non-inferior"
        if paired.difference.low > -cfg.margin
        else "inferior"
        if paired.difference.high <= -cfg.margin
        else "non-inferiority not shown"
    )
    note = "" if cost is not None else f"no {cfg.cost_basis} known"
    return CandidateAssessment(
        candidate,
        verdict,
        cost,
        cheaper,
        mean=paired.candidate_mean,
        teacher_mean=paired.reference_mean,
        difference=paired.difference,
        unpaired=paired.unpaired_reference + paired.unpaired_candidate,
        note=note,
    )


def _row(assessment: CandidateAssessment, promoted: Candidate | None) -> dict[str, Any]:
    d = assessment.difference
    return {
        "candidate": assessment.candidate.name,
        "model": assessment.candidate.model_name,
        "eval_mode": assessment.candidate.eval_mode,
        "n": d.n if d else 0,
        "mean": assessment.mean,
        "teacher_mean": assessment.teacher_mean,
        "difference": d.mean if d else None,
        "low": d.low if d else None,
        "high": d.high if d else None,
        "verdict": assessment.verdict,
        "cost": assessment.cost,
        "cheaper": assessment.cheaper,
        "promoted": promoted == assessment.candidate,
    }
