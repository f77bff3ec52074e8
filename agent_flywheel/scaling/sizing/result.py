"""The sizing answer: C*, GPUs in whole replicas with an interval, reachability with its reason, cost."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from agent_flywheel.scaling.sizing.capacity import CapacityFit
from agent_flywheel.scaling.sizing.nat_linear import NatLinearEstimate
from agent_flywheel.scaling.sizing.sweeps import Metric


@dataclass
class SizingResult:
    """The answer: C*, GPUs with an interval, reachability with its reason, throughput and cost at the SLO."""

    reachable: bool
    reason: str
    slo_concurrency: float | None
    slo_concurrency_low: float | None
    slo_concurrency_high: float | None
    slo_concurrency_is_lower_bound: bool
    extrapolated_slo_concurrency: float | None
    binding_metric: Metric | None
    bracket: tuple[float, float] | None
    interpolation: str
    replicas: int | None
    gpus: int | None
    gpus_low: int | None
    gpus_high: int | None
    throughput_at_slo_rps: float | None
    cost_per_1k_workflows: float | None
    fit: CapacityFit | None
    levels: list[dict[str, Any]]
    targets: dict[str, Any]
    confidence: float
    bootstrap_samples: int
    unreachable_share: float
    nat_linear: NatLinearEstimate | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``sizing calc --json``)."""
        return {
            "reachable": self.reachable,
            "reason": self.reason,
            "slo_concurrency": self.slo_concurrency,
            "slo_concurrency_low": self.slo_concurrency_low,
            "slo_concurrency_high": self.slo_concurrency_high,
            "slo_concurrency_is_lower_bound": self.slo_concurrency_is_lower_bound,
            "extrapolated_slo_concurrency": self.extrapolated_slo_concurrency,
            "binding_metric": self.binding_metric,
            "bracket": list(self.bracket) if self.bracket else None,
            "interpolation": self.interpolation,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "gpus_low": self.gpus_low,
            "gpus_high": self.gpus_high,
            "throughput_at_slo_rps": self.throughput_at_slo_rps,
            "cost_per_1k_workflows": self.cost_per_1k_workflows,
            "fit": self.fit.to_dict() if self.fit else None,
            "levels": self.levels,
            "targets": self.targets,
            "confidence": self.confidence,
            "bootstrap_samples": self.bootstrap_samples,
            "unreachable_share": self.unreachable_share,
            "nat_linear": self.nat_linear.to_dict() if self.nat_linear else None,
            "notes": self.notes,
        }

    def levels_frame(self) -> pd.DataFrame:
        """The per-level table the plots and reports use."""
        return pd.DataFrame(self.levels)

    def to_markdown(self) -> str:
        """A short human-readable answer with the per-level table."""

        def f(v: float | None, spec: str = ".2f") -> str:
            return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)

        lines = ["# Sizing", ""]
        if self.reachable:
            bound = "≥ " if self.slo_concurrency_is_lower_bound else ""
            lines.append(
                f"**C\\* = {bound}{f(self.slo_concurrency)}** concurrent workflows per {self.targets['test_gpus']} "
                f"GPU(s) (interval {f(self.slo_concurrency_low)}–{f(self.slo_concurrency_high)}); "
                f"{_whole(self.slo_concurrency)} users per replica: "
                f"**{self.gpus} GPUs** for {self.targets['target_users']} users "
                f"(interval {self.gpus_low}–{self.gpus_high if self.gpus_high is not None else '∞'}, "
                f"{self.confidence:.0%})."
            )
        else:
            lines.append(f"**Not reachable.** {self.reason}")
        lines += ["", self.reason if self.reachable else "", ""]
        if self.throughput_at_slo_rps is not None:
            lines.append(f"Throughput at the SLO: {self.throughput_at_slo_rps:.3f} workflows/s per test system.")
        if self.cost_per_1k_workflows is not None:
            lines.append(f"Cost: ${self.cost_per_1k_workflows:.4f} per 1,000 workflows.")
        lines += [
            "",
            "| concurrency | workflow p95 s | interval | LLM p95 s | throughput /s | meets |",
            "| ---: | ---: | --- | ---: | ---: | :---: |",
        ]
        for lv in self.levels:
            lines.append(
                f"| {lv['concurrency']:g} | {f(lv['workflow_p95_s'], '.3f')} | "
                f"{f(lv['workflow_p95_low_s'], '.3f')}–{f(lv['workflow_p95_high_s'], '.3f')} | "
                f"{f(lv['llm_p95_s'], '.3f')} | {f(lv['throughput_rps'], '.3f')} | {'yes' if lv['meets_target'] else 'no'} |"
            )
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def users_per_replica(c_star: float) -> float:
    """How many users one replica serves under the SLO: C* rounded down to whole users (a C* of 10.6 means
    that 11 users miss the target); below one user, C* itself."""
    return math.floor(c_star + 1e-9) if c_star >= 1 else c_star


def _whole(c_star: float | None) -> str:
    """:func:`users_per_replica` as text ("22", or "0.5" below one user)."""
    return "—" if c_star is None else f"{users_per_replica(c_star):g}"
