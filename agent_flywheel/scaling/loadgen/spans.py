"""Per-LLM-call figures of a sweep, from the spans of each measured request (matched by trace id).

Why from spans: the answer body of an agent we did not write says nothing about its model calls. Every request
carried a ``traceparent`` with a fresh trace id; the agent's spans continue that trace, so each request's LLM
calls (model, latency, tokens) are the LLM spans of its trace, failed calls left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_flywheel.scaling.loadgen.requests import LlmCallTiming
from agent_flywheel.scaling.loadgen.sweep import SweepResult
from agent_flywheel.scaling.profiling.spans import Span


@dataclass(frozen=True)
class SpanMatch:
    """How many measured requests had a trace, and how many of those traces had spans."""

    requests: int
    with_spans: int
    llm_calls: int

    @property
    def without_spans(self) -> int:
        """Measured requests whose trace never showed up in the spans."""
        return self.requests - self.with_spans

    def to_dict(self) -> dict[str, int]:
        """Plain-JSON form."""
        return {
            "requests": self.requests,
            "with_spans": self.with_spans,
            "without_spans": self.without_spans,
            "llm_calls": self.llm_calls,
        }


def expected_traces(result: SweepResult) -> dict[str, str | None]:
    """Every measured request's trace id -> the span id it was sent with (None when the agent named the trace)."""
    return {
        rec.result.trace.trace_id: rec.result.trace.span_id
        for run in result.runs
        for rec in run.records
        if rec.result.trace is not None
    }


def llm_calls_of(spans: Sequence[Span]) -> list[LlmCallTiming]:
    """The successful LLM calls among a request's spans, in the order they started."""
    calls = sorted((s for s in spans if s.is_llm and s.ok), key=lambda s: s.start_s)
    return [LlmCallTiming(s.model, s.duration_s, s.input_tokens, s.output_tokens) for s in calls]


def _total(values: Sequence[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def attach_llm_calls(result: SweepResult, spans_of: Callable[[str], list[Span]]) -> SpanMatch:
    """Give every measured request the LLM calls (and token totals) of its trace's spans; says how many matched."""
    requests = with_spans = calls = 0
    for run in result.runs:
        for rec in run.records:
            if rec.result.trace is None:
                continue
            requests += 1
            spans = spans_of(rec.result.trace.trace_id)
            if not spans:
                continue
            with_spans += 1
            rec.result.llm_calls = llm_calls_of(spans)
            rec.result.input_tokens = _total([c.input_tokens for c in rec.result.llm_calls])
            rec.result.output_tokens = _total([c.output_tokens for c in rec.result.llm_calls])
            calls += len(rec.result.llm_calls)
    return SpanMatch(requests, with_spans, calls)
