"""A profile run against a live agent: the example inputs one at a time, each with its own trace, then the spans.

Why here, above :mod:`.profiling`, :mod:`.loadgen` and :mod:`.otlp`: it uses all three (the load generator's
request, the run's span sources, the profiler), and those must not import one another in a cycle.

Why one at a time: at concurrency 1 a request's latency is its own work, not queueing, so the per-step
figures and the critical path say where the time of one request goes. Each request carries a fresh W3C
``traceparent``; its spans are found by that trace id among what the run's sources received (its OTLP
receiver, a traces file), never by the agent's answer, so traffic from other users never mixes in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent_flywheel.config import ProfileConfig
from agent_flywheel.scaling.inputs import Input
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.loadgen.requests import read_reply
from agent_flywheel.scaling.loadgen.template import RequestTemplate
from agent_flywheel.scaling.loadgen.tracecontext import new_trace_context
from agent_flywheel.scaling.otlp.sources import SpanSources
from agent_flywheel.scaling.profiling.gantt import gantt_png
from agent_flywheel.scaling.profiling.report import ProfileReport, analyze, representative_trace
from agent_flywheel.scaling.profiling.spans import Trace


@dataclass
class ProfileRun:
    """What a profile run sent and collected."""

    requests: int
    failures: list[str]
    traces: list[Trace]
    documents: list[dict[str, Any]]
    source: str  # otlp-receiver | traces-file | otlp-receiver+traces-file | none
    without_spans: int  # answered requests whose spans never arrived
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Requests that failed (HTTP error, timeout, no answer where the template says)."""
        return len(self.failures)

    def counts(self) -> dict[str, int | str]:
        """The request counts ``profile run --json`` prints beside the report."""
        return {
            "requests": self.requests,
            "failed": self.failed,
            "traces": len(self.traces),
            "without_spans": self.without_spans,
            "source": self.source,
        }


def drive_profile(
    http: httpx.Client,
    template: RequestTemplate,
    inputs: Sequence[Input],
    num_requests: int,
    sources: SpanSources,
    span_wait_s: float,
    on_request: Callable[[int, int], None] | None = None,
) -> ProfileRun:
    """Send ``num_requests`` example inputs (in turn) one at a time, then collect the spans of their traces.

    ``http`` is the agent's client (base URL and credentials set); ``on_request(i, failures)`` is called after
    each request, for progress. Failed requests are counted and named, never raised; their spans are kept when
    they arrive (a failure inside the agent is worth seeing), but only answered requests are waited for.
    """
    failures: list[str] = []
    answered: dict[str, str | None] = {}
    sent: list[str] = []
    for i in range(num_requests):
        trace = new_trace_context()
        sent.append(trace.trace_id)
        body = template.body_for(inputs[i % len(inputs)], i, "profile-user") if template.method != "GET" else None
        try:
            answer = http.request(
                template.method,
                template.path,
                json=body,
                headers={**template.headers, "traceparent": trace.traceparent},
            )
        except httpx.HTTPError as exc:
            failures.append(f"request {i}: {type(exc).__name__}: {exc}")
        else:
            result = read_reply(template, answer.status_code, answer.content, trace)
            if result.trace is not None and result.trace.trace_id != trace.trace_id:
                sent.append(result.trace.trace_id)
            if result.ok and result.trace is not None:
                answered[result.trace.trace_id] = result.trace.span_id
            else:
                failures.append(f"request {i}: {result.error_kind} (HTTP {answer.status_code})")
        if on_request is not None:
            on_request(i, len(failures))
    missing = sources.wait_for(answered, span_wait_s)
    problems: list[str] = []
    traces = sources.traces(sent, problems)
    documents, source = sources.documents([t.trace_id for t in traces])
    return ProfileRun(
        requests=num_requests,
        failures=failures,
        traces=traces,
        documents=documents,
        source=source if traces else "none",
        without_spans=len(missing),
        problems=[*sources.problems, *problems],
    )


@dataclass(frozen=True)
class ProfileFiles:
    """The files a profile run writes."""

    report_json: Path
    report_md: Path
    gantt_png: Path
    traces_jsonl: Path


def profile_report(run: ProfileRun, extra_problems: Sequence[str] = ()) -> ProfileReport:
    """The report of a run with traces (failures and span problems listed among its problems)."""
    problems = [*extra_problems, *run.failures[:20], *run.problems]
    return analyze(run.traces, problems, "otlp")


def write_profile(run: ProfileRun, report: ProfileReport, out_dir: str | Path) -> ProfileFiles:
    """``profile.json`` (the report and the request counts), ``profile.md``, ``gantt.png`` (a median request) and
    ``traces.jsonl`` (the OTLP documents that held the run's spans)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traces_file = out / "traces.jsonl"
    traces_file.write_text(
        "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in run.documents), encoding="utf-8"
    )
    report_json = out / "profile.json"
    report_json.write_text(json.dumps(json_safe(report.to_dict() | run.counts()), indent=2), encoding="utf-8")
    report_md = out / "profile.md"
    report_md.write_text(report.to_markdown(), encoding="utf-8")
    gantt = gantt_png(representative_trace(run.traces), out / "gantt.png")
    return ProfileFiles(report_json, report_md, gantt, traces_file)


def profile_timeout_s(cfg: ProfileConfig, span_wait_s: float, request_timeout_s: float = 60.0) -> float:
    """An upper bound on a profile's duration: every request timing out, the wait for spans, and a minute's slack."""
    return cfg.num_requests * request_timeout_s + span_wait_s + 60.0
