"""The rollout check on observed traffic: canary vs baseline over a time window → promote | hold | rollback.

The requests of the window (:mod:`.observed`) are judged by the same rules as a stage of a staged rollout
(:func:`.stages.analyze_stage`: SLO checks with Wilson bounds, multi-window burn rates with the windows scaled to
the window's length, Fisher and Mann-Whitney against the baseline): once for the workflows and, when the SLO
has ``llm_p95_latency_s``, once more for the LLM calls of the two models. The decision is the worse of the two.
Too little canary traffic is a ``hold`` that says how much there was and how much is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_flywheel.config import RolloutSLO, RolloutStage
from agent_flywheel.scaling.profiling.spans import Trace
from agent_flywheel.scaling.rollout.observations import Observation
from agent_flywheel.scaling.rollout.observed import TrafficCounts, observe
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.report import stage_markdown
from agent_flywheel.scaling.rollout.stages import Decision, StageReport, VariantSLIs, analyze_stage, variant_slis

LLM_CALLS_SUFFIX = "llm-calls"
_SEVERITY: dict[Decision, int] = {"promote": 0, "hold": 1, "rollback": 2}


def worst(decisions: Sequence[Decision]) -> Decision:
    """The most severe decision: any rollback, else any hold, else promote."""
    return max(decisions, key=lambda d: _SEVERITY[d]) if decisions else "hold"


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class ObservedCheck:
    """The verdict on one window of observed traffic, with everything it rests on."""

    decision: Decision
    reasons: list[str]
    baseline_model: str
    canary_model: str
    window_start_s: float  # epoch seconds
    window_end_s: float
    traffic: TrafficCounts
    workflow: StageReport
    llm_calls: StageReport | None  # judged only with an LLM-call latency SLO
    llm_slis: dict[str, VariantSLIs]  # per arm, always
    notes: list[str] = field(default_factory=list)
    workflow_observations: list[Observation] = field(default_factory=list)
    llm_observations: list[Observation] = field(default_factory=list)

    @property
    def stages(self) -> list[StageReport]:
        """The judged parts, workflows first."""
        return [self.workflow] + ([self.llm_calls] if self.llm_calls else [])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``decision`` first (what an Argo Rollouts web metric reads), the SLIs of both arms, the
        traffic split, the window, and the judged stages in the shape of a staged rollout's report."""
        wf = {"baseline": self.workflow.baseline, "canary": self.workflow.canary}
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "baseline_model": self.baseline_model,
            "canary_model": self.canary_model,
            "window": {
                "start": _iso(self.window_start_s),
                "end": _iso(self.window_end_s),
                "start_s": self.window_start_s,
                "end_s": self.window_end_s,
                "seconds": self.window_end_s - self.window_start_s,
            },
            "traffic": self.traffic.to_dict(),
            "slis": {
                arm: {"workflow": wf[arm].to_dict(), "llm_calls": self.llm_slis[arm].to_dict()}
                for arm in ("baseline", "canary")
            },
            "stages": [s.to_dict() for s in self.stages],
            "not_reached": [],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        """Human-readable: the verdict, the window and the split, then each judged part."""
        t = self.traffic
        lines = [
            f"# Rollout check (observed traffic): **{self.decision}**",
            "",
            f"Canary `{self.canary_model}` vs baseline `{self.baseline_model}`, requests started "
            f"{_iso(self.window_start_s)} – {_iso(self.window_end_s)}.",
            "",
            *(f"- {r}" for r in self.reasons),
            "",
            f"{t.in_window} of {t.traces} traces in the window: {t.canary} canary, {t.baseline} baseline, "
            f"{t.unattributed} naming neither model ({t.unattributed_failed} of them failed); LLM calls: "
            f"{t.canary_llm_calls} canary, {t.baseline_llm_calls} baseline.",
            "",
        ]
        lines += stage_markdown(self.workflow)
        if self.llm_calls:
            lines += stage_markdown(self.llm_calls, unit="calls")
        else:
            lines += ["| LLM calls | calls | error rate | p95 s |", "| --- | ---: | ---: | ---: |"]
            for arm in ("baseline", "canary"):
                v = self.llm_slis[arm]
                er = "—" if v.error_rate is None else f"{v.error_rate:.2%}"
                p95 = "—" if v.p95_latency_s is None else f"{v.p95_latency_s:.3f}"
                lines.append(f"| {arm} | {v.requests} | {er} | {p95} |")
            lines.append("")
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def check_observed(
    traces: Sequence[Trace],
    baseline_model: str,
    canary_model: str,
    slo: RolloutSLO,
    start_s: float,
    end_s: float,
    *,
    stage: RolloutStage | None = None,
    origin_s: float | None = None,
    now_s: float | None = None,
    policy: RolloutPolicy | None = None,
    quality_attribute: str | None = None,
) -> ObservedCheck:
    """Judge the canary against the baseline on the requests that started in ``[start_s, end_s)`` (epoch s).

    Why: whoever shifts the traffic (Argo Rollouts, Flagger, a gateway, a person), the verdict must come from
    what the users really got. ``stage`` names the judged part and gives its canary weight (a stage of a routed
    rollout); without it, the part is ``observed`` and its weight is the canary's observed share. ``now_s``
    (epoch) marks a window still running: it can roll back early but not promote.
    """
    if end_s <= start_s:
        raise ValueError(f"the window ends ({end_s}) before it starts ({start_s})")
    origin = start_s if origin_s is None else origin_s
    seen = observe(
        traces, baseline_model, canary_model, start_s, end_s, origin_s=origin, quality_attribute=quality_attribute
    )
    counts = seen.counts
    attributed = counts.canary + counts.baseline
    share = counts.canary / attributed if attributed else 0.0
    name = stage.name if stage else "observed"
    weight = stage.weight if stage else share
    # model_construct: an observed share may be 0 (no canary traffic), which a configured stage may not be
    part = RolloutStage.model_construct(name=name, weight=weight, duration_s=end_s - start_s)
    now = None if now_s is None else now_s - origin
    workflow = analyze_stage(seen.workflows, part, slo, start_s=start_s - origin, now_s=now, policy=policy)
    llm_stage: StageReport | None = None
    if slo.llm_p95_latency_s is not None:
        call_slo = slo.model_copy(update={"p95_latency_s": slo.llm_p95_latency_s, "min_quality": None})
        call_part = RolloutStage.model_construct(
            name=f"{name}/{LLM_CALLS_SUFFIX}", weight=weight, duration_s=end_s - start_s
        )
        llm_stage = analyze_stage(
            seen.llm_calls, call_part, call_slo, start_s=start_s - origin, now_s=now, policy=policy
        )
    llm_slis = {
        arm: variant_slis([o for o in seen.llm_calls if o.variant == arm], slo) for arm in ("baseline", "canary")
    }
    parts = [workflow] + ([llm_stage] if llm_stage else [])
    decision = worst([p.decision for p in parts])
    reasons: list[str] = []
    if counts.canary == 0:
        others = ", ".join(f"{m} ({n})" for m, n in sorted(counts.other_models.items())) or "none"
        reasons.append(
            f"no request in the window was served by {canary_model} ({counts.in_window} traces in the window, "
            f"{counts.baseline} on {baseline_model}; other models' LLM calls: {others})"
        )
    for part_report in parts:
        if part_report.decision == decision:
            prefix = "LLM calls: " if part_report is llm_stage else ""
            reasons += [prefix + r for r in part_report.reasons]
    notes = list(seen.problems[:20])
    if counts.unattributed_failed:
        notes.append(
            f"{counts.unattributed_failed} failed requests named neither model (they failed before any LLM call, "
            "or used other models only) and count for neither arm"
        )
    return ObservedCheck(
        decision=decision,
        reasons=reasons,
        baseline_model=baseline_model,
        canary_model=canary_model,
        window_start_s=start_s,
        window_end_s=end_s,
        traffic=counts,
        workflow=workflow,
        llm_calls=llm_stage,
        llm_slis=llm_slis,
        notes=notes,
        workflow_observations=seen.workflows,
        llm_observations=seen.llm_calls,
    )
