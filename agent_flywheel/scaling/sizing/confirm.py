"""Confirmation: measure again at the load the answer puts on each replica, and see whether the SLO held.

The answer rests on C* interpolated between two measured levels and on a sweep that may have been short; before
anyone buys GPUs, the load each replica will carry is measured directly. On the system under test (``k``
replicas) that is ``k × users / replicas`` concurrent workflows. A closed loop runs whole users, so when that
load is a fraction (requests balanced over replicas) the two whole loads around it are measured and the p95 at
the fraction is interpolated between them, the assumption the balanced answer itself makes; pinned users are
whole already. The SLO held when the p95 at that load (and the LLM-call p95, with an LLM target) meets the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.sizing.intervals import thin_level_warning
from agent_flywheel.scaling.sizing.sweeps import LevelData, Metric, SweepData, SweepFormatError

_EPS = 1e-9


@dataclass(frozen=True)
class ConfirmationPlan:
    """The load to confirm: per replica, on the system under test, and the whole concurrencies to measure."""

    load_per_replica: float
    replicas_in_test: int

    @property
    def load(self) -> float:
        """Concurrent workflows on the system under test that the answer implies."""
        return self.load_per_replica * self.replicas_in_test

    @property
    def concurrencies(self) -> list[int]:
        """The whole loads to measure: the load itself, or the two around a fraction (never below one user)."""
        return sorted({max(1, math.floor(self.load + _EPS)), max(1, math.ceil(self.load - _EPS))})


def plan_confirmation(answer: Mapping[str, Any]) -> ConfirmationPlan | None:
    """The plan for a sizing answer (``SizingResult.to_dict()``); None when there is nothing to confirm."""
    if not answer.get("reachable") or answer.get("load_per_replica") is None:
        return None
    return ConfirmationPlan(float(answer["load_per_replica"]), int(answer["assumptions"]["replicas_in_test"]))


@dataclass(frozen=True)
class Confirmation:
    """What the re-measurement found: p95 per measured load, the p95 at the answer's load, whether the SLO held."""

    plan: ConfirmationPlan
    target_workflow_p95_s: float
    target_llm_p95_s: float | None
    measured: list[dict[str, Any]]
    workflow_p95_s: float
    llm_p95_s: float | None
    confirmed: bool
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: held or missed, the p95 against the target, the load."""
        verdict = "SLO held" if self.confirmed else "SLO missed"
        p95 = "∞ (more than 5% failed)" if not math.isfinite(self.workflow_p95_s) else f"{self.workflow_p95_s:.3f} s"
        sign = "≤" if self.workflow_p95_s <= self.target_workflow_p95_s else ">"
        text = (
            f"{verdict}: workflow p95 {p95} {sign} {self.target_workflow_p95_s:g} s at {self.plan.load_per_replica:.2f} "
            f"users per replica ({self.plan.load:.2f} on the system under test, measured at "
            f"{', '.join(str(c) for c in self.plan.concurrencies)})"
        )
        if self.target_llm_p95_s is not None and self.llm_p95_s is not None:
            llm_sign = "≤" if self.llm_p95_s <= self.target_llm_p95_s else ">"
            text += f"; LLM-call p95 {self.llm_p95_s:.3f} s {llm_sign} {self.target_llm_p95_s:g} s"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``confirmation`` in ``sizing.json``)."""
        return {
            "confirmed": self.confirmed,
            "summary": self.summary(),
            "load_per_replica": self.plan.load_per_replica,
            "load": self.plan.load,
            "concurrencies": self.plan.concurrencies,
            "workflow_p95_s": self.workflow_p95_s,
            "llm_p95_s": self.llm_p95_s,
            "target_workflow_p95_s": self.target_workflow_p95_s,
            "target_llm_p95_s": self.target_llm_p95_s,
            "measured": self.measured,
            "warnings": self.warnings,
        }

    def to_markdown(self) -> str:
        """The report's confirmation section."""
        lines = ["## Confirmation", "", f"**{self.summary()}.**", ""]
        if self.plan.load != round(self.plan.load):
            lines += [
                "The load is a fraction of a user: the p95 at it is interpolated between the two whole loads around it.",
                "",
            ]
        lines += [
            "| concurrency | requests | workflow p95 s | LLM p95 s | error rate |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in self.measured:
            lines.append(
                f"| {row['concurrency']:g} | {row['requests']} | {_num(row['workflow_p95_s'])} | "
                f"{_num(row['llm_p95_s'])} | {row['error_rate']:.1%} |"
            )
        lines += [f"- {w}" for w in self.warnings]
        return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "—" if value is None else ("∞" if not math.isfinite(value) else f"{value:.3f}")


def _at_load(plan: ConfirmationPlan, p95_of: Mapping[int, float | None]) -> float | None:
    """The p95 at the plan's load: the measured one, or interpolated between the two whole loads around it."""
    lo, hi = plan.concurrencies[0], plan.concurrencies[-1]
    p_lo, p_hi = p95_of[lo], p95_of[hi]
    if p_lo is None or p_hi is None:
        return None
    frac = 0.0 if hi == lo else min(1.0, max(0.0, (plan.load - lo) / (hi - lo)))
    if frac <= _EPS:
        return p_lo
    if frac >= 1.0 - _EPS:
        return p_hi
    if not (math.isfinite(p_lo) and math.isfinite(p_hi)):
        return math.inf
    return p_lo + frac * (p_hi - p_lo)


def judge_confirmation(plan: ConfirmationPlan, data: SweepData, targets: SizingTargets) -> Confirmation:
    """Did the SLO hold at the plan's load? From the re-measured sweep (failed requests count as infinitely slow)."""
    levels: dict[int, LevelData] = {}
    for c in plan.concurrencies:
        found = [lv for lv in data.levels if abs(lv.concurrency - c) < _EPS]
        if not found or not found[0].has_samples:
            raise SweepFormatError(f"the confirmation sweep has no requests at concurrency {c}")
        levels[c] = found[0]
    measured, warnings = [], []
    for c, lv in levels.items():
        requests = sum(len(p) for p in lv.workflow)
        failed = sum(int(np.isinf(p).sum()) for p in lv.workflow)
        measured.append(
            {
                "concurrency": float(c),
                "requests": requests,
                "workflow_p95_s": lv.p95("workflow"),
                "llm_p95_s": lv.p95("llm"),
                "error_rate": failed / requests if requests else 0.0,
            }
        )
        warning = thin_level_warning(c, requests, targets.confidence)
        if warning:
            warnings.append(warning + "; the confirmation says little about the p95 at this load")
    metric_p95: dict[Metric, float | None] = {
        metric: _at_load(plan, {c: lv.p95(metric) for c, lv in levels.items()}) for metric in ("workflow", "llm")
    }
    workflow = metric_p95["workflow"]
    assert workflow is not None  # every confirmation level has requests
    confirmed = workflow <= targets.target_workflow_p95_s
    llm = metric_p95["llm"]
    if targets.target_llm_p95_s is not None and llm is not None:
        confirmed = confirmed and llm <= targets.target_llm_p95_s
    return Confirmation(
        plan=plan,
        target_workflow_p95_s=targets.target_workflow_p95_s,
        target_llm_p95_s=targets.target_llm_p95_s,
        measured=measured,
        workflow_p95_s=workflow,
        llm_p95_s=llm,
        confirmed=bool(confirmed),
        warnings=warnings,
    )
