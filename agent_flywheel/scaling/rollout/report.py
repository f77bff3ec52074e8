"""A rollout walked stage by stage, stopping at the first stage that does not promote."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_flywheel.config import RolloutConfig
from agent_flywheel.scaling.rollout.observations import Observation
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.stages import Decision, StageReport, analyze_stage


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
            lines += stage_markdown(s)
        if self.not_reached:
            lines.append(f"Not reached: {', '.join(self.not_reached)}.")
        return "\n".join(lines) + "\n"


def stage_markdown(s: StageReport, unit: str = "requests") -> list[str]:
    """One stage as markdown lines: its decision, reasons and both arms' SLIs (``unit``: what was counted)."""
    lines = [f"## {s.stage} ({s.weight:.0%} canary): **{s.decision}**", ""]
    lines += [f"- {r}" for r in s.reasons]
    lines += [
        "",
        f"| variant | {unit} | error rate | p95 s | quality |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, v in (("baseline", s.baseline), ("canary", s.canary)):
        er = "—" if v.error_rate is None else f"{v.error_rate:.2%}"
        p95 = "—" if v.p95_latency_s is None else f"{v.p95_latency_s:.3f}"
        q = "—" if v.quality_mean is None else f"{v.quality_mean:.3f} (n={v.quality_samples})"
        lines.append(f"| {name} | {v.requests} | {er} | {p95} | {q} |")
    lines += ["", f"Burn-rate windows scaled by {s.window_scale:.3g} to the stage length.", ""]
    return lines


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
