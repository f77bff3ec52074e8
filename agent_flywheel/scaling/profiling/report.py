"""What a profile says: workflow and LLM latency, per-step statistics, critical-path shares and the bottleneck."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent_flywheel.scaling.profiling.critical_path import critical_path
from agent_flywheel.scaling.profiling.files import load_traces
from agent_flywheel.scaling.profiling.spans import SYNTHETIC_ROOT_NAME, Trace


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, min, max, mean and p50/p90/p95/p99 (linear interpolation, as numpy and the toolkit do)."""
    if len(values) == 0:
        return {
            "count": 0,
            "min_s": None,
            "max_s": None,
            "mean_s": None,
            "p50_s": None,
            "p90_s": None,
            "p95_s": None,
            "p99_s": None,
        }
    arr = np.asarray(values, dtype=float)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(arr, [50, 90, 95, 99]))
    return {
        "count": len(arr),
        "min_s": float(arr.min()),
        "max_s": float(arr.max()),
        "mean_s": float(arr.mean()),
        "p50_s": p50,
        "p90_s": p90,
        "p95_s": p95,
        "p99_s": p99,
    }


@dataclass(frozen=True)
class StepStats:
    """Statistics of one step (spans sharing a name and kind) over all traces."""

    name: str
    kind: str
    count: int
    p50_s: float
    p95_s: float
    p99_s: float
    mean_s: float
    critical_path_s: float
    critical_path_share: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "count": self.count,
            "p50_s": self.p50_s,
            "p95_s": self.p95_s,
            "p99_s": self.p99_s,
            "mean_s": self.mean_s,
            "critical_path_s": self.critical_path_s,
            "critical_path_share": self.critical_path_share,
        }


@dataclass(frozen=True)
class LLMCall:
    """One model call with its own latency (paired by id) and token counts."""

    trace_id: str
    span_id: str
    model: str | None
    provider: str | None
    latency_s: float
    input_tokens: int | None
    output_tokens: int | None
    ttft_s: float | None
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "model": self.model,
            "provider": self.provider,
            "latency_s": self.latency_s,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "ttft_s": self.ttft_s,
            "ok": self.ok,
        }


@dataclass
class ProfileReport:
    """What a profile says: workflow and LLM latency, per-step stats, the critical path and the bottleneck."""

    workflow: dict[str, float | int | None]
    llm: dict[str, float | int | None]
    steps: list[StepStats]
    bottleneck: str
    llm_calls: list[LLMCall]
    llm_by_model: dict[str, dict[str, float | int | None]]
    tokens: dict[str, float | int | None]
    num_traces: int
    problems: list[str] = field(default_factory=list)
    source_format: str = ""
    repaired_spans: int = 0

    def to_dict(self, include_calls: bool = True) -> dict[str, Any]:
        """Plain-JSON form (``--json`` of ``profile analyze``)."""
        out: dict[str, Any] = {
            "num_traces": self.num_traces,
            "source_format": self.source_format,
            "workflow": self.workflow,
            "llm": self.llm,
            "llm_by_model": self.llm_by_model,
            "tokens": self.tokens,
            "steps": [s.to_dict() for s in self.steps],
            "bottleneck": self.bottleneck,
            "repaired_spans": self.repaired_spans,
            "problems": self.problems,
        }
        if include_calls:
            out["llm_calls"] = [c.to_dict() for c in self.llm_calls]
        return out

    def to_json(self, include_calls: bool = True, indent: int | None = 2) -> str:
        """The report as a JSON string."""
        return json.dumps(self.to_dict(include_calls), indent=indent)

    def to_markdown(self) -> str:
        """A human-readable report (MLflow artifact, Prefect markdown artifact, CLI output)."""

        def fmt(v: float | int | None) -> str:
            return "—" if v is None else f"{v:.3f}"

        lines = [
            f"# Profile: {self.num_traces} traces",
            "",
            f"**Bottleneck:** {self.bottleneck}",
            "",
            "| metric | count | p50 s | p95 s | p99 s | max s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, s in (("workflow", self.workflow), ("LLM call", self.llm)):
            lines.append(
                f"| {label} | {s['count']} | {fmt(s['p50_s'])} | {fmt(s['p95_s'])} | {fmt(s['p99_s'])} | {fmt(s['max_s'])} |"
            )
        for model, s in self.llm_by_model.items():
            lines.append(
                f"| LLM `{model}` | {s['count']} | {fmt(s['p50_s'])} | {fmt(s['p95_s'])} | {fmt(s['p99_s'])} | {fmt(s['max_s'])} |"
            )
        lines += [
            "",
            "| step | kind | count | p50 s | p95 s | critical path share |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for st in self.steps:
            lines.append(
                f"| `{st.name}` | {st.kind} | {st.count} | {st.p50_s:.3f} | {st.p95_s:.3f} | {st.critical_path_share:.1%} |"
            )
        if self.tokens.get("llm_calls_with_tokens"):
            lines += [
                "",
                f"Tokens per LLM call: {self.tokens['mean_input_tokens']:.0f} in, "
                f"{self.tokens['mean_output_tokens']:.0f} out (mean over {self.tokens['llm_calls_with_tokens']} calls).",
            ]
        if self.repaired_spans:
            lines += [
                "",
                f"**{self.repaired_spans} spans repaired:** their stated parent did not contain them in time (a "
                "sibling that had already finished, or a span that was never exported), so each was placed under "
                "the innermost span that did.",
            ]
        if self.problems:
            lines += ["", f"**{len(self.problems)} input problems** (first 10):", ""]
            lines += [f"- {p}" for p in self.problems[:10]]
        return "\n".join(lines) + "\n"


def _bottleneck_sentence(steps: Sequence[StepStats]) -> str:
    if not steps:
        return "No spans with a duration: nothing to attribute."
    top = max(steps, key=lambda s: s.critical_path_share)
    if top.critical_path_share <= 0:
        return "No spans with a duration: nothing to attribute."
    if top.name == SYNTHETIC_ROOT_NAME:
        what = "Time between top-level spans (untraced work)"
    elif top.kind == "workflow" or top.count == 0:
        what = f"The own time of `{top.name}` (outside any child span)"
    else:
        what = f"`{top.name}` ({top.kind}, {top.count} calls, p95 {top.p95_s:.2f} s)"
    return (
        f"{what} is the bottleneck: {top.critical_path_share:.0%} of workflow time is spent waiting on it on the "
        f"critical path, so making it 2x faster would cut workflow time by up to {top.critical_path_share / 2:.0%}."
    )


def analyze(traces: Sequence[Trace], problems: Sequence[str] = (), source_format: str = "") -> ProfileReport:
    """Build the profile report from traces.

    Why: one pass gives the numbers the sizing step and a human both need: workflow and per-call LLM latency
    (each call its own, paired by id), and where the time goes on the critical path.
    """
    durations: dict[tuple[str, str], list[float]] = defaultdict(list)
    on_path: dict[tuple[str, str], float] = defaultdict(float)
    total_time = 0.0
    workflow: list[float] = []
    calls: list[LLMCall] = []
    repaired = 0
    for trace in traces:
        workflow.append(trace.duration_s)
        repaired += len(trace.repaired)
        for span in trace.spans:
            durations[(span.name, span.kind)].append(span.duration_s)
            if span.is_llm:
                calls.append(
                    LLMCall(
                        trace.trace_id,
                        span.span_id,
                        span.model,
                        span.provider,
                        span.duration_s,
                        span.input_tokens,
                        span.output_tokens,
                        span.ttft_s,
                        span.ok,
                    )
                )
        total_time += trace.duration_s
        for seg in critical_path(trace):
            on_path[(seg.span.name, seg.span.kind)] += seg.duration_s
    steps: list[StepStats] = []
    for key in set(durations) | set(on_path):
        values = durations.get(key, [])
        arr = np.asarray(values, dtype=float) if values else np.zeros(1)
        steps.append(
            StepStats(
                name=key[0],
                kind=key[1],
                count=len(values),
                p50_s=float(np.percentile(arr, 50)),
                p95_s=float(np.percentile(arr, 95)),
                p99_s=float(np.percentile(arr, 99)),
                mean_s=float(arr.mean()),
                critical_path_s=on_path.get(key, 0.0),
                critical_path_share=on_path.get(key, 0.0) / total_time if total_time > 0 else 0.0,
            )
        )
    steps.sort(key=lambda s: (-s.critical_path_share, -s.p95_s, s.name))
    by_model: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        by_model[call.model or "(unknown)"].append(call.latency_s)
    with_tokens = [c for c in calls if c.input_tokens is not None or c.output_tokens is not None]
    tokens: dict[str, float | int | None] = {
        "llm_calls_with_tokens": len(with_tokens),
        "total_input_tokens": sum(c.input_tokens or 0 for c in with_tokens),
        "total_output_tokens": sum(c.output_tokens or 0 for c in with_tokens),
        "mean_input_tokens": float(np.mean([c.input_tokens or 0 for c in with_tokens])) if with_tokens else None,
        "mean_output_tokens": float(np.mean([c.output_tokens or 0 for c in with_tokens])) if with_tokens else None,
        "llm_calls_per_workflow": len(calls) / len(traces) if traces else None,
    }
    return ProfileReport(
        workflow=summarize(workflow),
        llm=summarize([c.latency_s for c in calls]),
        steps=steps,
        bottleneck=_bottleneck_sentence(steps),
        llm_calls=calls,
        llm_by_model={m: summarize(v) for m, v in sorted(by_model.items())},
        tokens=tokens,
        num_traces=len(traces),
        problems=list(problems),
        source_format=source_format,
        repaired_spans=repaired,
    )


def analyze_file(path: str | Path) -> ProfileReport:
    """Load a trace file and analyse it (the ``profile analyze`` command)."""
    ts = load_traces(path)
    return analyze(ts.traces, ts.problems, ts.source_format)


def representative_trace(traces: Sequence[Trace], quantile: float = 0.5) -> Trace:
    """The trace whose workflow latency is nearest the given quantile (the one worth drawing)."""
    if not traces:
        raise ValueError("no traces")
    target = float(np.quantile([t.duration_s for t in traces], quantile))
    return min(traces, key=lambda t: abs(t.duration_s - target))
