"""The sizing answer: C*, replicas and GPUs under stated assumptions, an interval that admits what it does not know."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from agent_flywheel.scaling.sizing.capacity import CapacityFit
from agent_flywheel.scaling.sizing.nat_linear import NatLinearEstimate
from agent_flywheel.scaling.sizing.replicas import ReplicaModel
from agent_flywheel.scaling.sizing.sweeps import Metric

IntervalKind = Literal["confidence", "bracket"]


@dataclass
class SizingResult:
    """The answer: C* of the system under test, replicas and GPUs with an interval, the assumptions, cost.

    An end of an interval that the data cannot fix is None (``interval_notes`` says why). ``interval_kind`` says
    what the interval is: ``confidence`` from per-request rows, or ``bracket`` from a per-level table (the
    measured levels around C*, taking each p95 as exact: how far a p95 may be off is unknown there).
    """

    reachable: bool
    reason: str
    replica_model: ReplicaModel
    targets: dict[str, Any]
    confidence: float
    slo_concurrency: float | None = None
    slo_concurrency_low: float | None = None
    slo_concurrency_high: float | None = None
    slo_concurrency_is_lower_bound: bool = False
    extrapolated_slo_concurrency: float | None = None
    binding_metric: Metric | None = None
    bracket: tuple[float, float] | None = None
    interpolation: str = "none"
    slo_concurrency_per_replica: float | None = None
    load_per_replica: float | None = None  # target users / replicas: what each replica carries
    replicas: int | None = None
    gpus: int | None = None
    gpus_low: int | None = None
    gpus_high: int | None = None
    interval_kind: IntervalKind = "bracket"
    interval_notes: list[str] = field(default_factory=list)
    throughput_at_slo_rps: float | None = None
    cost_per_1k_workflows: float | None = None
    fit: CapacityFit | None = None
    levels: list[dict[str, Any]] = field(default_factory=list)
    bootstrap_samples: int = 0
    nat_linear: NatLinearEstimate | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``sizing calc --json``, ``sizing.json``)."""
        return {
            "reachable": self.reachable,
            "reason": self.reason,
            "assumptions": self.replica_model.to_dict(),
            "slo_concurrency": self.slo_concurrency,
            "slo_concurrency_low": self.slo_concurrency_low,
            "slo_concurrency_high": self.slo_concurrency_high,
            "slo_concurrency_is_lower_bound": self.slo_concurrency_is_lower_bound,
            "extrapolated_slo_concurrency": self.extrapolated_slo_concurrency,
            "slo_concurrency_per_replica": self.slo_concurrency_per_replica,
            "load_per_replica": self.load_per_replica,
            "binding_metric": self.binding_metric,
            "bracket": list(self.bracket) if self.bracket else None,
            "interpolation": self.interpolation,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "gpus_low": self.gpus_low,
            "gpus_high": self.gpus_high,
            "interval_kind": self.interval_kind,
            "interval_notes": self.interval_notes,
            "throughput_at_slo_rps": self.throughput_at_slo_rps,
            "cost_per_1k_workflows": self.cost_per_1k_workflows,
            "fit": self.fit.to_dict() if self.fit else None,
            "levels": self.levels,
            "targets": self.targets,
            "confidence": self.confidence,
            "bootstrap_samples": self.bootstrap_samples,
            "nat_linear": self.nat_linear.to_dict() if self.nat_linear else None,
            "warnings": self.warnings,
            "notes": self.notes,
        }

    def levels_frame(self) -> pd.DataFrame:
        """The per-level table the plots and reports use."""
        return pd.DataFrame(self.levels)

    def interval_text(self, low: float | None, high: float | None, spec: str) -> str:
        """``95% interval low–high``, or ``measured bracket low–high`` from a per-level table; ``open`` for an
        end the data leave open. The label keeps a bracket from being read as a confidence interval."""
        lo = "open" if low is None else format(low, spec)
        hi = "open" if high is None else format(high, spec)
        label = f"{self.confidence:.0%} interval" if self.interval_kind == "confidence" else "measured bracket"
        return f"{label} {lo}–{hi}"

    def to_markdown(self) -> str:
        """A short human-readable answer: the GPUs, the assumptions, the interval, the toolkit's line, the table."""
        model, users = self.replica_model, self.targets["target_users"]
        lines = ["# Sizing", ""]
        if self.reachable and self.gpus is not None and self.slo_concurrency is not None:
            bound = "≥ " if self.slo_concurrency_is_lower_bound else ""
            lines += [
                f"**{self.replicas} replicas × {model.gpus_per_replica} GPU(s) = {self.gpus} GPUs** for {users} "
                f"concurrent users ({self.interval_text(self.gpus_low, self.gpus_high, 'd')}).",
                "",
                f"- C* = {bound}{self.slo_concurrency:.2f} concurrent workflows on the system under test "
                f"({self.interval_text(self.slo_concurrency_low, self.slo_concurrency_high, '.2f')}): "
                f"{self.reason}.",
                f"- Replicas: {model.describe()}. C* per replica {self.slo_concurrency_per_replica:.2f}; "
                f"{model.rule()}; each replica carries {self.load_per_replica:.2f} users.",
            ]
        else:
            lines += [
                f"**Not reachable.** {self.reason.removeprefix('not reachable: ')}.",
                "",
                f"- Replicas: {model.describe()}.",
            ]
        lines += [f"- Interval: {note}." for note in self.interval_notes]
        if self.interval_kind == "confidence":
            lines.append(
                f"- Interval method: per level the wider of a bootstrap ({self.bootstrap_samples} resamples of passes, "
                "then requests) and distribution-free order-statistic bounds on the p95; C*'s low end is where the "
                "levels' high p95s cross the target, its high end where their low p95s do."
            )
        if self.throughput_at_slo_rps is not None:
            lines.append(f"- Throughput at the SLO: {self.throughput_at_slo_rps:.3f} workflows/s per test system.")
        if self.cost_per_1k_workflows is not None:
            lines.append(f"- Cost: ${self.cost_per_1k_workflows:.4f} per 1,000 workflows.")
        if self.nat_linear is not None:
            nat = self.nat_linear
            if nat.gpus is not None and nat.slo_concurrency is not None:
                lines.append(
                    f"- NeMo Agent Toolkit's straight line on the same p95s: C* = {nat.slo_concurrency:.2f}, "
                    f"{nat.gpus:.2f} GPUs (users / C* × test GPUs, fractional, no interval)."
                )
            else:
                lines.append(f"- NeMo Agent Toolkit's straight line on the same p95s: no estimate ({nat.error}).")
        if self.warnings:
            lines += ["", "**Warnings**", "", *[f"- {w}" for w in self.warnings]]
        lines += [
            "",
            f"| concurrency | requests | workflow p95 s | {self.confidence:.0%} interval | LLM p95 s | throughput /s | meets |",
            "| ---: | ---: | ---: | --- | ---: | ---: | :---: |",
        ]
        for lv in self.levels:
            lines.append(
                f"| {lv['concurrency']:g} | {_num(lv.get('requests'), 'd')} | {_num(lv['workflow_p95_s'], '.3f')} | "
                f"{self._level_interval(lv)} | {_num(lv['llm_p95_s'], '.3f')} | "
                f"{_num(lv['throughput_rps'], '.3f')} | {'yes' if lv['meets_target'] else 'no'} |"
            )
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def _level_interval(self, level: dict[str, Any]) -> str:
        if self.interval_kind != "confidence":
            return "unknown"
        high = level.get("workflow_p95_high_s")
        return f"{_num(level.get('workflow_p95_low_s'), '.3f')}–{'∞' if high is None else format(high, '.3f')}"


def _num(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)
