"""A NeMo Agent Toolkit 1.9 profiler run, written three ways from the same events: ``all_requests_profiler_traces.json``,
``standardized_data_all.csv`` and the OTLP document its ``otelcollector`` exporter sends (OpenInference and ``nat.*``
attributes).

The shapes NAT 1.9 really produces are in it: a ReAct agent whose LLM calls run one after another and take about
92 % of each request; a later LLM call (or a tool call) whose ``parent_id`` is the LLM call before it, a sibling that
has already finished (the step manager's stack was not popped in the callback's context); and requests whose tool
calls left no TOOL steps at all (only a gap between two LLM calls). The CSV has what the toolkit's
``create_standardized_dataframe`` writes: one row per event, no parent id, the text columns empty except where the
toolkit fills them, token counts 0 on START rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

T0 = 1_750_000_000.0
AGENT = "react_agent"
BIG = "meta/llama-3.3-70b-instruct"
SMALL = "meta/llama-3.1-8b-instruct"
CSV_COLUMNS = [
    "event_type",
    "event_timestamp",
    "example_number",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "llm_text_input",
    "llm_text_output",
    "llm_new_token",
    "llm_name",
    "tool_name",
    "function_name",
    "function_id",
    "parent_function_name",
    "parent_function_id",
    "UUID",
    "framework",
]


@dataclass
class NatProfilerRun:
    """The three files' contents and what they must give."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    csv_text: str = ""
    otlp: dict[str, Any] = field(default_factory=dict)
    sibling_parents: int = 0  # steps whose parent_id is a sibling that had already finished
    llm_calls: int = 0
    calls_by_model: dict[str, int] = field(default_factory=dict)
    llm_seconds: float = 0.0
    request_seconds: float = 0.0
    llm_latencies: list[float] = field(default_factory=list)

    @property
    def llm_share(self) -> float:
        """The share of request time spent in (sequential) LLM calls: what the critical path must give."""
        return self.llm_seconds / self.request_seconds


@dataclass
class _Step:
    category: str
    uuid: str
    parent: str  # the parent_id the toolkit wrote ("root" for the workflow)
    name: str
    start: float
    end: float
    ancestry: dict[str, Any]
    tokens: tuple[int, int] | None = None
    first_token: float | None = None
    text_in: str = ""
    text_out: str = ""


def _uuid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _span_id(uuid: str) -> str:
    return hashlib.sha256(uuid.encode()).hexdigest()[:16]


def _request_steps(k: int) -> tuple[list[_Step], int]:
    """The steps of request ``k`` and how many of them name a finished sibling as parent."""
    t = T0 + 100.0 * k
    wf, fn = _uuid(k, "workflow"), _uuid(k, "agent")
    root_ancestry = {"function_id": "root", "function_name": "root", "parent_id": None, "parent_name": None}
    fn_ancestry = {"function_id": fn, "function_name": AGENT, "parent_id": "root", "parent_name": "root"}
    calls = 3 if k % 2 == 0 else 2
    with_tool_spans = k % 2 == 1  # even requests: the tool calls left no TOOL steps at all
    steps: list[_Step] = []
    cursor = t + 0.03
    previous_llm: str | None = None
    wrong = 0
    for j in range(calls):
        model = SMALL if (j == calls - 1 and k % 4 == 0) else BIG
        duration = 0.8 + 0.05 * ((7 * k + 3 * j) % 5)
        llm = _uuid(k, "llm", j)
        parent = fn
        if previous_llm is not None and k % 3 != 0:
            parent, wrong = previous_llm, wrong + 1
        steps.append(
            _Step(
                "LLM",
                llm,
                parent,
                model,
                cursor,
                cursor + duration,
                fn_ancestry,
                tokens=(900 + 40 * j + k, 30 + 5 * j),
                first_token=cursor + 0.12 if j == 0 else None,
                text_in=f'Question: "order {k}", step {j}\nThought:',
                text_out=f"Action: lookup_order\nAction Input: {{'id': {k}}}, call {j}",
            )
        )
        previous_llm = llm
        cursor += duration
        if j < calls - 1:  # a tool call between two model calls
            if with_tool_spans:
                tool = _uuid(k, "tool", j)
                tool_parent = fn
                if k % 4 == 1:
                    tool_parent, wrong = llm, wrong + 1
                steps.append(
                    _Step("TOOL", tool, tool_parent, "lookup_order", cursor + 0.02, cursor + 0.05, fn_ancestry)
                )
            cursor += 0.07
    steps.insert(0, _Step("FUNCTION", fn, wf, AGENT, t + 0.02, cursor + 0.04, fn_ancestry))
    steps.insert(0, _Step("WORKFLOW", wf, "root", AGENT, t, cursor + 0.07, root_ancestry))
    return steps, wrong


def _events(steps: list[_Step]) -> list[tuple[float, str, _Step]]:
    events: list[tuple[float, str, _Step]] = []
    for step in steps:
        events.append((step.start, "START", step))
        if step.first_token is not None:
            events.append((step.first_token, "NEW_TOKEN", step))
        events.append((step.end, "END", step))
    return sorted(events, key=lambda e: (e[0], {"START": 0, "NEW_TOKEN": 1, "END": 2}[e[1]]))


def _json_step(ts: float, state: str, step: _Step) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event_type": f"{step.category}_{state}",
        "event_timestamp": ts,
        "framework": "langchain" if step.category in ("LLM", "TOOL") else None,
        "name": step.name,
        "tags": None,
        "metadata": None,
        "data": None,
        "usage_info": None,
        "UUID": step.uuid,
    }
    if state == "END":
        payload["span_event_timestamp"] = step.start
    if step.category == "LLM":
        prompt, completion = step.tokens if (state == "END" and step.tokens) else (0, 0)
        payload["usage_info"] = {
            "token_usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached_tokens": 0,
                "reasoning_tokens": 0,
                "total_tokens": prompt + completion,
            },
            "num_llm_calls": 1 if state == "START" else 0,
            "seconds_between_calls": 0,
        }
        payload["data"] = {
            "input": step.text_in if state == "START" else None,
            "output": step.text_out if state == "END" else None,
            "chunk": "Action" if state == "NEW_TOKEN" else None,
        }
    return {"parent_id": step.parent, "function_ancestry": step.ancestry, "payload": payload}


def _csv_row(ts: float, state: str, step: _Step, example: int) -> dict[str, Any]:
    event_type = f"{step.category}_{state}"
    prompt, completion = step.tokens if (state == "END" and step.tokens) else (0, 0)
    ancestry = step.ancestry
    return {
        "event_type": event_type,
        "event_timestamp": repr(ts),
        "example_number": example,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "llm_text_input": step.text_in if event_type == "LLM_START" else "",
        "llm_text_output": step.text_out if event_type == "LLM_END" else "",
        "llm_new_token": "Action" if event_type == "LLM_NEW_TOKEN" else "",
        "llm_name": step.name if event_type in ("LLM_START", "LLM_END") else "",
        "tool_name": step.name if step.category == "TOOL" else "",
        "function_name": ancestry["function_name"],
        "function_id": ancestry["function_id"],
        "parent_function_name": ancestry["parent_name"] or "",
        "parent_function_id": ancestry["parent_id"] or "",
        "UUID": step.uuid,
        "framework": "langchain" if step.category in ("LLM", "TOOL") else "",
    }


def _otlp_span(trace_id: str, step: _Step) -> dict[str, Any]:
    kinds = {"LLM": "LLM", "TOOL": "TOOL", "FUNCTION": "CHAIN", "WORKFLOW": "CHAIN"}
    attrs: dict[str, Any] = {
        "nat.event_type": f"{step.category}_START",
        "nat.span.kind": step.category,
        "nat.function.name": step.ancestry["function_name"],
        "openinference.span.kind": kinds[step.category],
    }
    if step.category == "LLM" and step.tokens:
        attrs |= {
            "llm.model_name": step.name,
            "llm.provider": "langchain",
            "llm.token_count.prompt": step.tokens[0],
            "llm.token_count.completion": step.tokens[1],
            "llm.token_count.total": sum(step.tokens),
        }
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": _span_id(step.uuid),
        "name": step.name,
        "kind": 1,
        "startTimeUnixNano": str(round(step.start * 1e9)),
        "endTimeUnixNano": str(round(step.end * 1e9)),
        "attributes": [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in attrs.items()
        ],
        "status": {"code": 1},
    }
    if step.parent != "root":
        span["parentSpanId"] = _span_id(step.parent)
    return span


def nat_profiler_run(num_requests: int = 16) -> NatProfilerRun:
    """The same ``num_requests`` requests as the toolkit's JSON, its CSV and an OTLP document."""
    run = NatProfilerRun()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    spans: list[dict[str, Any]] = []
    for k in range(num_requests):
        steps, wrong = _request_steps(k)
        run.sibling_parents += wrong
        events = _events(steps)
        run.requests.append(
            {"request_number": k, "intermediate_steps": [_json_step(ts, state, step) for ts, state, step in events]}
        )
        for ts, state, step in events:
            writer.writerow(_csv_row(ts, state, step, k))
        trace_id = hashlib.sha256(f"trace-{k}".encode()).hexdigest()[:32]
        spans.extend(_otlp_span(trace_id, step) for step in steps)
        workflow = steps[0]
        run.request_seconds += workflow.end - workflow.start
        for step in steps:
            if step.category == "LLM":
                run.llm_calls += 1
                run.llm_seconds += step.end - step.start
                run.llm_latencies.append(step.end - step.start)
                run.calls_by_model[step.name] = run.calls_by_model.get(step.name, 0) + 1
    run.csv_text = buffer.getvalue()
    run.otlp = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "nat"}}]},
                "scopeSpans": [{"scope": {"name": "nat", "version": "1.0.0"}, "spans": spans}],
            }
        ]
    }
    return run
