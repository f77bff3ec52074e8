"""Profiling one agent application from its traces: span trees, per-step statistics, critical path, Gantt chart.

Two inputs are read:

- **OpenTelemetry OTLP JSON**: a file holding one ``{"resourceSpans": [...]}`` document, or a JSONL file with
  one such document per line (what the demo agent and most collectors' file exporters write). Trace and span
  ids may be hex (the OTLP/JSON rule) or base64 (protobuf's generic JSON mapping); times are Unix nanoseconds
  as strings or integers.
- **NeMo Agent Toolkit** ``all_requests_profiler_traces.json``: ``[{request_number, intermediate_steps: [...]}]``
  with ``*_START`` / ``*_END`` events. Unlike the toolkit, which pairs an ``LLM_END`` with whichever
  ``LLM_START`` came just before it, we pair START and END **by their shared UUID**, so overlapping LLM calls
  each keep their own latency. The tree comes from each step's ``parent_id`` (the UUID of the enclosing START),
  not from a LIFO stack that would nest parallel siblings inside each other.

LLM calls are recognised by the OpenTelemetry GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``); toolkit LLM events are mapped onto
the same fields, so one code path serves both formats.

The **critical path** of a trace is the chain of spans that determines when the root ends: walking back from
the root's end, the child that finished last is the one the parent waited for; the time before that child
started belongs to whatever finished before it, or to the parent itself. Parallel children that finished
earlier are off the path. Each instant of the root's duration is attributed to exactly one span, so the
per-step shares of the critical path add up to 100 % and answer "what would make the workflow faster".
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# GenAI semantic-convention operation names that are model calls (embeddings and tools are not).
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})
_EPS = 1e-9
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_SYNTHETIC_ROOT_ID = "__trace_root__"
SYNTHETIC_ROOT_NAME = "(between top-level spans)"


class TraceFormatError(ValueError):
    """A trace file cannot be read at all (as opposed to single bad records, which become ``problems``)."""


# --------------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One timed operation; times are seconds (epoch or any common origin within a trace)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_s: float
    end_s: float
    kind: str = "span"
    ok: bool = True
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_s: float | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Wall time of the span (never negative, even with a skewed clock)."""
        return max(0.0, self.end_s - self.start_s)

    @property
    def is_llm(self) -> bool:
        """True for model calls (GenAI chat / completion, or a toolkit LLM event)."""
        return self.kind == "llm"


@dataclass(frozen=True)
class PathSegment:
    """A slice ``[start_s, end_s]`` of the root's duration during which ``span`` was what the trace waited on."""

    span: Span
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        """Length of the slice."""
        return self.end_s - self.start_s


class Trace:
    """The spans of one request, arranged as a tree by parent id.

    When the spans have more than one top-level span (no single workflow span), a synthetic root spans them
    all, so that a trace always has one root whose duration is the workflow latency (earliest start to latest
    end, as the toolkit defines workflow runtime).
    """

    def __init__(self, trace_id: str, spans: Sequence[Span], problems: list[str] | None = None) -> None:
        if not spans:
            raise ValueError(f"trace {trace_id} has no spans")
        self.trace_id = trace_id
        self.problems: list[str] = problems if problems is not None else []
        by_id: dict[str, Span] = {}
        for span in spans:
            if span.span_id in by_id:
                self.problems.append(f"trace {trace_id}: duplicate span id {span.span_id}; kept the first")
                continue
            by_id[span.span_id] = span
        self.spans: list[Span] = list(by_id.values())
        self._children: dict[str, list[Span]] = defaultdict(list)
        tops: list[Span] = []
        for span in self.spans:
            if span.parent_id is not None and span.parent_id in by_id and span.parent_id != span.span_id:
                self._children[span.parent_id].append(span)
            else:
                tops.append(span)
        reached = self._reachable(tops)
        for span in self.spans:  # spans caught in a parent cycle: cut the cycle, keep the span
            if span.span_id not in reached:
                self.problems.append(f"trace {trace_id}: span {span.span_id} is in a parent cycle; made top-level")
                self._children[span.parent_id or ""].remove(span)
                tops.append(span)
                reached |= self._reachable([span])
        if len(tops) == 1:
            self.root = tops[0]
        else:
            self.root = Span(
                trace_id=trace_id,
                span_id=_SYNTHETIC_ROOT_ID,
                parent_id=None,
                name=SYNTHETIC_ROOT_NAME,
                start_s=min(s.start_s for s in tops),
                end_s=max(s.end_s for s in tops),
                kind="workflow",
            )
            self._children[_SYNTHETIC_ROOT_ID] = list(tops)
        for kids in self._children.values():
            kids.sort(key=lambda s: (s.start_s, s.end_s))

    def _reachable(self, tops: Iterable[Span]) -> set[str]:
        seen: set[str] = set()
        stack = [s.span_id for s in tops]
        while stack:
            sid = stack.pop()
            if sid in seen:
                continue
            seen.add(sid)
            stack.extend(c.span_id for c in self._children.get(sid, []))
        return seen

    def children(self, span: Span) -> list[Span]:
        """Direct children of ``span`` ordered by start time."""
        return list(self._children.get(span.span_id, []))

    @property
    def duration_s(self) -> float:
        """Workflow latency of this request: the root's duration."""
        return self.root.duration_s

    @property
    def llm_calls(self) -> list[Span]:
        """The model calls of this request, by start time."""
        return sorted((s for s in self.spans if s.is_llm), key=lambda s: s.start_s)

    def walk(self) -> Iterator[tuple[Span, int]]:
        """Depth-first (span, depth) from the root, children by start time: the Gantt chart's row order."""
        stack: list[tuple[Span, int]] = [(self.root, 0)]
        while stack:
            span, depth = stack.pop()
            yield span, depth
            stack.extend((c, depth + 1) for c in reversed(self._children.get(span.span_id, [])))


# --------------------------------------------------------------------------------------------------
# Critical path
# --------------------------------------------------------------------------------------------------


def critical_path(trace: Trace) -> list[PathSegment]:
    """Split the root's duration into the slices that determined its end, in time order.

    Why: the step that dominates the critical path is the one worth optimising; a slow step that runs in
    parallel with a slower one is not. Children are clipped to their parent's interval (clock skew), and a
    child that overlaps the one already chosen is off the path.
    """
    segments: list[PathSegment] = []

    def visit(span: Span, lo: float, hi: float) -> None:
        cursor = hi
        kids = []
        for child in trace.children(span):
            c_lo, c_hi = max(child.start_s, lo), min(child.end_s, hi)
            if c_hi > c_lo + _EPS:
                kids.append((c_hi, c_lo, child))
        kids.sort(key=lambda k: k[0], reverse=True)
        for c_hi, c_lo, child in kids:
            if cursor <= lo + _EPS:
                break
            if c_hi > cursor + _EPS:
                continue  # overlaps the child already on the path: it finished later than it started
            if c_hi < cursor - _EPS:
                segments.append(PathSegment(span, c_hi, cursor))
            visit(child, c_lo, min(c_hi, cursor))
            cursor = c_lo
        if cursor > lo + _EPS:
            segments.append(PathSegment(span, lo, cursor))

    visit(trace.root, trace.root.start_s, trace.root.end_s)
    segments.reverse()
    return segments


def critical_chain(trace: Trace) -> list[Span]:
    """The distinct spans on the critical path, in the order they first appear."""
    seen: set[str] = set()
    chain: list[Span] = []
    for seg in critical_path(trace):
        if seg.span.span_id not in seen:
            seen.add(seg.span.span_id)
            chain.append(seg.span)
    return chain


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def _parse_id(value: Any) -> str | None:
    """Hex ids stay hex (lower case); base64 ids of 8 or 16 bytes become hex; all-zero ids mean "none"."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) in (16, 32) and _HEX_RE.fullmatch(text):
        hexid = text.lower()
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return text
        hexid = raw.hex() if len(raw) in (8, 16) else text
    return None if set(hexid) == {"0"} else hexid


def _nanos_to_s(value: Any) -> float:
    if value is None or value == "":
        raise ValueError("missing timestamp")
    if isinstance(value, str):
        value = value.strip()
        return int(value) / 1e9 if value.isdigit() else float(value) / 1e9
    return float(value) / 1e9


def _any_value(value: Any) -> Any:
    """Decode an OTLP ``AnyValue`` (``{"stringValue": ...}`` etc.) into a plain Python value."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return value["doubleValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return _attributes((value["kvlistValue"] or {}).get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if isinstance(items, dict):  # some writers emit a plain mapping
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or []:
        if isinstance(item, dict) and "key" in item:
            out[str(item["key"])] = _any_value(item.get("value"))
    return out


def _as_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _classify(attrs: Mapping[str, Any]) -> str:
    """Span kind from GenAI conventions: ``llm`` for model calls, ``tool`` for tool calls, else ``span``."""
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        op = str(operation).lower()
        if op in LLM_OPERATIONS:
            return "llm"
        if op == "execute_tool":
            return "tool"
        if op in ("invoke_agent", "create_agent"):
            return "agent"
        return "span"
    if attrs.get("gen_ai.request.model") is not None:
        return "llm"
    if attrs.get("gen_ai.tool.name") is not None:
        return "tool"
    return str(attrs.get("flywheel.span.kind", "span"))


def _otlp_status_ok(status: Any) -> bool:
    if not isinstance(status, dict):
        return True
    code = status.get("code")
    return code not in (2, "2", "STATUS_CODE_ERROR", "ERROR")


def spans_from_otlp(document: Mapping[str, Any], problems: list[str], where: str = "") -> list[Span]:
    """Spans of one OTLP ``{"resourceSpans": [...]}`` document; bad spans are skipped and named in ``problems``."""
    out: list[Span] = []
    resource_spans = document.get("resourceSpans")
    if resource_spans is None and "scopeSpans" in document:
        resource_spans = [document]
    if not isinstance(resource_spans, list):
        problems.append(f"{where}no resourceSpans list")
        return out
    for rs in resource_spans:
        if not isinstance(rs, dict):
            continue
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            for raw in (scope or {}).get("spans", []) or []:
                try:
                    out.append(_otlp_span(raw))
                except (KeyError, TypeError, ValueError) as exc:
                    name = raw.get("name", "?") if isinstance(raw, dict) else "?"
                    problems.append(f"{where}span {name!r} skipped: {exc}")
    return out


def _otlp_span(raw: Mapping[str, Any]) -> Span:
    trace_id = _parse_id(raw.get("traceId"))
    span_id = _parse_id(raw.get("spanId"))
    if trace_id is None or span_id is None:
        raise ValueError("missing traceId or spanId")
    attrs = _attributes(raw.get("attributes"))
    start = _nanos_to_s(raw.get("startTimeUnixNano"))
    end = _nanos_to_s(raw.get("endTimeUnixNano"))
    if end < start:
        raise ValueError(f"ends before it starts ({end - start:.3f} s)")
    kind = _classify(attrs)
    model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=_parse_id(raw.get("parentSpanId")),
        name=str(raw.get("name") or "(unnamed)"),
        start_s=start,
        end_s=end,
        kind=kind,
        ok=_otlp_status_ok(raw.get("status")),
        model=str(model) if model is not None else None,
        input_tokens=_as_int(attrs.get("gen_ai.usage.input_tokens", attrs.get("gen_ai.usage.prompt_tokens"))),
        output_tokens=_as_int(attrs.get("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.completion_tokens"))),
        attributes=attrs,
    )


def _event_type(payload: Mapping[str, Any]) -> tuple[str, str]:
    """``("LLM", "START")`` from ``LLM_START`` (also accepts ``IntermediateStepType.LLM_START``)."""
    text = str(payload.get("event_type", "")).rsplit(".", 1)[-1].upper()
    category, _, state = text.rpartition("_")
    if category.endswith("_NEW"):  # LLM_NEW_TOKEN
        return category[: -len("_NEW")], "CHUNK"
    return category, state


def spans_from_nat_request(request: Mapping[str, Any], problems: list[str]) -> list[Span]:
    """Spans of one toolkit request, START and END paired by UUID (never by position)."""
    number = request.get("request_number", "?")
    trace_id = f"request-{number}"
    steps = request.get("intermediate_steps")
    if not isinstance(steps, list):
        problems.append(f"{trace_id}: no intermediate_steps list")
        return []
    starts: dict[str, tuple[Mapping[str, Any], str | None, float]] = {}
    ends: dict[str, Mapping[str, Any]] = {}
    first_token: dict[str, float] = {}
    order: list[str] = []
    last_ts = -math.inf
    for i, step in enumerate(steps):
        payload = step.get("payload") if isinstance(step, dict) else None
        if not isinstance(payload, dict):
            problems.append(f"{trace_id}: step {i} has no payload; skipped")
            continue
        uuid = payload.get("UUID")
        try:
            ts = float(payload["event_timestamp"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{trace_id}: step {i} has no event_timestamp; skipped")
            continue
        last_ts = max(last_ts, ts)
        category, state = _event_type(payload)
        if not uuid or not category:
            problems.append(f"{trace_id}: step {i} has no UUID or event_type; skipped")
            continue
        uuid = str(uuid)
        parent = step.get("parent_id")
        parent_id = None if parent in (None, "", "root") else str(parent)
        if state == "START":
            if uuid not in starts:
                order.append(uuid)
            starts[uuid] = (payload, parent_id, ts)
        elif state == "END":
            ends[uuid] = payload
            if uuid not in starts:  # the START may be missing; its time travels on the END event
                span_ts = payload.get("span_event_timestamp")
                if span_ts is None:
                    problems.append(f"{trace_id}: {category}_END {uuid} has no START; skipped")
                    continue
                order.append(uuid)
                starts[uuid] = (payload, parent_id, float(span_ts))
        elif state == "CHUNK" and uuid not in first_token:
            first_token[uuid] = ts
    spans: list[Span] = []
    for uuid in order:
        start_payload, parent_id, start_ts = starts[uuid]
        end_payload = ends.get(uuid)
        category, _ = _event_type(start_payload)
        if end_payload is None:
            problems.append(f"{trace_id}: {category}_START {uuid} has no END; closed at the request's last event")
            end_ts, ok, usage_src = last_ts, False, start_payload
        else:
            end_ts, ok, usage_src = float(end_payload["event_timestamp"]), True, end_payload
        usage = ((usage_src.get("usage_info") or {}).get("token_usage")) or {}
        name = str(start_payload.get("name") or (end_payload or {}).get("name") or category.lower())
        is_llm = category == "LLM"
        ttft = first_token.get(uuid)
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=uuid,
                parent_id=parent_id,
                name=name,
                start_s=start_ts,
                end_s=max(end_ts, start_ts),
                kind=category.lower(),
                ok=ok,
                model=name if is_llm else None,
                input_tokens=_as_int(usage.get("prompt_tokens")) if is_llm else None,
                output_tokens=_as_int(usage.get("completion_tokens")) if is_llm else None,
                ttft_s=(ttft - start_ts) if (is_llm and ttft is not None) else None,
                attributes={"nat.event_category": category, "nat.framework": start_payload.get("framework")},
            )
        )
    return spans


@dataclass
class TraceSet:
    """Traces read from a file, plus every record that could not be used and why."""

    traces: list[Trace]
    problems: list[str]
    source_format: str


def _group(spans: Iterable[Span], problems: list[str]) -> list[Trace]:
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    return [Trace(tid, group, problems) for tid, group in by_trace.items()]


def parse_traces(text: str, source: str = "<traces>") -> TraceSet:
    """Parse OTLP JSON / JSONL or toolkit traces from text, detecting the format.

    Why: the same ``profile analyze`` command must accept what the demo agent writes (OTLP JSONL) and what
    ``nat eval`` writes, without a flag the user could get wrong.
    """
    problems: list[str] = []
    stripped = text.strip()
    if not stripped:
        raise TraceFormatError(f"{source}: the file is empty")
    documents: list[tuple[str, Any]] = []
    try:
        documents.append(("", json.loads(stripped)))
    except json.JSONDecodeError:
        for lineno, line in enumerate(stripped.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append((f"line {lineno}: ", json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not JSON ({exc.msg}); skipped")
        if not documents:
            raise TraceFormatError(f"{source}: neither JSON nor JSON lines") from None
    spans: list[Span] = []
    formats: set[str] = set()
    for where, doc in documents:
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                problems.append(f"{where}expected an object, got {type(item).__name__}; skipped")
            elif "intermediate_steps" in item:
                formats.add("nat")
                spans.extend(spans_from_nat_request(item, problems))
            elif "resourceSpans" in item or "scopeSpans" in item:
                formats.add("otlp")
                spans.extend(spans_from_otlp(item, problems, where))
            else:
                problems.append(f"{where}neither an OTLP document nor a toolkit request; skipped")
    if not spans:
        detail = f" ({problems[0]})" if problems else ""
        raise TraceFormatError(f"{source}: no spans found{detail}")
    return TraceSet(_group(spans, problems), problems, "+".join(sorted(formats)))


def load_traces(path: str | Path) -> TraceSet:
    """Read a trace file (OTLP JSON, OTLP JSONL or the toolkit's ``all_requests_profiler_traces.json``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{path}: cannot read: {exc}") from None
    return parse_traces(text, str(path))


# --------------------------------------------------------------------------------------------------
# Statistics and the report
# --------------------------------------------------------------------------------------------------


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
    for trace in traces:
        workflow.append(trace.duration_s)
        for span in trace.spans:
            durations[(span.name, span.kind)].append(span.duration_s)
            if span.is_llm:
                calls.append(
                    LLMCall(
                        trace.trace_id,
                        span.span_id,
                        span.model,
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


# --------------------------------------------------------------------------------------------------
# Gantt chart
# --------------------------------------------------------------------------------------------------

_KIND_COLOURS = {
    "llm": "#4C72B0",
    "tool": "#55A868",
    "function": "#DD8452",
    "workflow": "#8C8C8C",
    "agent": "#8172B3",
    "span": "#CCB974",
}


def gantt_png(trace: Trace, path: str | Path, max_rows: int = 80) -> Path:
    """Draw one request as a Gantt chart: one bar per span, nested by the tree, critical path outlined in red.

    Why: the picture shows at a glance which calls ran in parallel and which one the workflow waited on.
    Uses matplotlib's Agg canvas directly, so it works headless and never touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(trace.walk())[:max_rows]
    origin = trace.root.start_s
    on_path = critical_path(trace)
    row_of = {span.span_id: i for i, (span, _) in enumerate(rows)}
    height = max(2.5, 0.32 * len(rows) + 1.2)
    fig = Figure(figsize=(11, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (span, depth) in enumerate(rows):
        colour = _KIND_COLOURS.get(span.kind, "#999999")
        ax.barh(i, span.duration_s, left=span.start_s - origin, height=0.6, color=colour, alpha=0.85)
        label = f"{'  ' * depth}{span.name}"
        ax.text(-0.01, i, label, ha="right", va="center", fontsize=7, transform=ax.get_yaxis_transform())
        ax.text(
            span.end_s - origin, i, f" {span.duration_s:.3f}s", va="center", fontsize=6, color="#333333", clip_on=True
        )
    for seg in on_path:
        row = row_of.get(seg.span.span_id)
        if row is not None:
            ax.barh(row, seg.duration_s, left=seg.start_s - origin, height=0.6, fill=False, edgecolor="red", lw=1.4)
    ax.set_yticks([])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("seconds since the request started")
    ax.set_title(f"trace {trace.trace_id}: {trace.duration_s:.3f} s (critical path outlined in red)", fontsize=9)
    kinds = sorted({s.kind for s, _ in rows})
    ax.legend(
        handles=[Patch(color=_KIND_COLOURS.get(k, "#999999"), label=k) for k in kinds]
        + [Patch(fill=False, edgecolor="red", label="critical path")],
        loc="lower right",
        fontsize=7,
    )
    fig.subplots_adjust(left=0.28, right=0.97)
    fig.savefig(path)
    return path
