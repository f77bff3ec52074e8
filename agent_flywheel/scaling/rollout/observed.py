"""Rollout observations from observed traffic: the agent's own spans, split by the model that served each request.

A request (a trace) belongs to the **canary** when any of its LLM calls was served by the canary model, to the
**baseline** when none was and one was served by the baseline model; a request that named neither model (it
failed before its first model call, or used other models only) cannot be attributed and is counted apart. A
call's model is read from every name its span carries: the GenAI ``gen_ai.request.model`` and
``gen_ai.response.model`` and OpenInference's ``llm.model_name`` (a provider may answer with a dated name, so
either the requested or the answered name may match).

Per request: the send time (the root span's start), whether it succeeded (the root span's status, or every
top-level span's when the trace has several; a server span answering 5xx counts as failed), the workflow latency
(the root's duration) and, when a span carries the configured attribute, a quality score in [0, 1]. Per LLM
call of either model: its start, status and duration, so the per-call SLIs split the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_flywheel.scaling.profiling.spans import Span, Trace
from agent_flywheel.scaling.rollout.observations import Observation, Variant

MODEL_ATTRIBUTES = ("gen_ai.request.model", "gen_ai.response.model", "llm.model_name")
HTTP_STATUS_ATTRIBUTES = ("http.response.status_code", "http.status_code")


def span_models(span: Span) -> set[str]:
    """Every model name an LLM span carries (requested, answered, OpenInference's), as written."""
    names = {str(span.attributes[k]) for k in MODEL_ATTRIBUTES if span.attributes.get(k) not in (None, "")}
    if span.model:
        names.add(span.model)
    return names


def call_arm(span: Span, baseline_model: str, canary_model: str) -> Variant | None:
    """Which arm one LLM call served: the canary's model wins, then the baseline's; None for any other model."""
    models = span_models(span)
    if canary_model in models:
        return "canary"
    if baseline_model in models:
        return "baseline"
    return None


def trace_arm(trace: Trace, baseline_model: str, canary_model: str) -> Variant | None:
    """The canary when any LLM call of the request was served by the canary model, else the baseline when one
    was served by the baseline model, else None (the request cannot be attributed)."""
    arms = {call_arm(s, baseline_model, canary_model) for s in trace.llm_calls}
    if "canary" in arms:
        return "canary"
    if "baseline" in arms:
        return "baseline"
    return None


def _span_ok(span: Span) -> bool:
    if not span.ok:
        return False
    for key in HTTP_STATUS_ATTRIBUTES:
        try:
            if int(span.attributes.get(key) or 0) >= 500:
                return False
        except (TypeError, ValueError):
            continue
    return True


def top_spans(trace: Trace) -> list[Span]:
    """The request's own span, or its top-level spans when it has no single root (a synthetic root spans them)."""
    if any(s is trace.root for s in trace.spans):
        return [trace.root]
    return trace.children(trace.root)


def trace_ok(trace: Trace) -> bool:
    """Whether the request succeeded: its top span(s) ended without an error status or a 5xx answer.

    Why the top span and not every span: agents retry failed model and tool calls; a request that recovered
    succeeded for its user.
    """
    return all(_span_ok(s) for s in top_spans(trace))


def trace_quality(trace: Trace, attribute: str, problems: list[str] | None = None) -> float | None:
    """The request's quality score: the first span (top first) carrying ``attribute`` with a number in [0, 1]."""
    ordered = [*top_spans(trace), *(s for s in trace.spans if s not in top_spans(trace))]
    for span in ordered:
        value = span.attributes.get(attribute)
        if value is None:
            continue
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = float("nan")
        if 0.0 <= score <= 1.0:
            return score
        if problems is not None:
            problems.append(f"trace {trace.trace_id}: {attribute}={value!r} is not a score in [0, 1]; ignored")
    return None


@dataclass
class TrafficCounts:
    """How the traces of a window split: by arm, not attributable, outside the window."""

    traces: int = 0  # every trace read
    in_window: int = 0
    canary: int = 0
    baseline: int = 0
    unattributed: int = 0  # in the window, but no LLM call of either model
    unattributed_failed: int = 0
    canary_llm_calls: int = 0
    baseline_llm_calls: int = 0
    other_models: dict[str, int] = field(default_factory=dict)  # LLM calls of other models in the window

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


@dataclass
class ObservedTraffic:
    """The observations of one window: per request and per LLM call of the two models, with the counts."""

    workflows: list[Observation]
    llm_calls: list[Observation]
    counts: TrafficCounts
    problems: list[str] = field(default_factory=list)


def observe(
    traces: Iterable[Trace],
    baseline_model: str,
    canary_model: str,
    start_s: float,
    end_s: float,
    *,
    origin_s: float | None = None,
    quality_attribute: str | None = None,
) -> ObservedTraffic:
    """Observations of the requests that started in ``[start_s, end_s)`` (epoch seconds), split by model.

    Why: the rollout rules judge ``(t_s, variant, ok, latency_s, quality)`` rows; here they come from what the
    agent really did for its users, not from traffic the check drives itself. ``t_s`` counts from ``origin_s``
    (default ``start_s``).
    """
    if baseline_model == canary_model:
        raise ValueError(f"the baseline and the canary are the same model ({canary_model!r})")
    origin = start_s if origin_s is None else origin_s
    counts = TrafficCounts()
    workflows: list[Observation] = []
    calls: list[Observation] = []
    problems: list[str] = []
    for trace in traces:
        counts.traces += 1
        if not start_s <= trace.root.start_s < end_s:
            continue
        counts.in_window += 1
        arm = trace_arm(trace, baseline_model, canary_model)
        ok = trace_ok(trace)
        for span in trace.llm_calls:
            call = call_arm(span, baseline_model, canary_model)
            if call is None:
                name = span.model or "(no model)"
                counts.other_models[name] = counts.other_models.get(name, 0) + 1
                continue
            calls.append(Observation(span.start_s - origin, call, _span_ok(span), span.duration_s))
            if call == "canary":
                counts.canary_llm_calls += 1
            else:
                counts.baseline_llm_calls += 1
        if arm is None:
            counts.unattributed += 1
            counts.unattributed_failed += not ok
            continue
        if arm == "canary":
            counts.canary += 1
        else:
            counts.baseline += 1
        quality = trace_quality(trace, quality_attribute, problems) if quality_attribute else None
        workflows.append(Observation(trace.root.start_s - origin, arm, ok, trace.duration_s, quality))
    return ObservedTraffic(workflows, calls, counts, problems)


def time_range(traces: Sequence[Trace]) -> tuple[float, float] | None:
    """(earliest request start, a hair after the latest end): a window holding every trace; None if empty."""
    if not traces:
        return None
    first = min(t.root.start_s for t in traces)
    last = max(max(t.root.start_s, t.root.end_s) for t in traces)
    return first, last + 1e-6
