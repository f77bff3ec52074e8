"""Spans from the NeMo Agent Toolkit's profiler files: ``all_requests_profiler_traces.json`` and
``standardized_data_all.csv``.

Both hold the toolkit's intermediate steps, ``*_START`` / ``*_END`` (and ``LLM_NEW_TOKEN``) events:

- the JSON is ``[{request_number, intermediate_steps: [{parent_id, function_ancestry, payload}]}]``;
- the CSV (written by the toolkit's ``create_standardized_dataframe``) has one row per event with the columns
  ``event_type, event_timestamp, example_number, prompt_tokens, completion_tokens, total_tokens,
  llm_text_input, llm_text_output, llm_new_token, llm_name, tool_name, function_name, function_id,
  parent_function_name, parent_function_id, UUID, framework`` (the text columns are left out with
  ``csv_exclude_io_text``; ``compute_llm_metrics`` adds ``NOVA-*`` columns; both are accepted). It has no
  ``parent_id``: a step's parent is the toolkit function it ran in (``function_id``; a function's own row
  names its caller in ``parent_function_id``), the workflow step when that is the root.

Unlike the toolkit, which pairs an ``LLM_END`` with whichever ``LLM_START`` came just before it, we pair START
and END **by their shared UUID**, so overlapping LLM calls each keep their own latency. Parent ids the toolkit
got wrong (a sibling that had already finished) are repaired by time containment in :class:`.spans.Trace`.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent_flywheel.scaling.profiling.conventions import kind_of_category
from agent_flywheel.scaling.profiling.spans import Span, token_count

CSV_REQUIRED_COLUMNS = ("event_type", "event_timestamp", "example_number", "UUID")
_ROOT_FUNCTION = "root"


@dataclass(frozen=True)
class NatEvent:
    """One toolkit event, whichever file it came from."""

    category: str  # LLM, TOOL, WORKFLOW, FUNCTION, ...
    state: str  # START, CHUNK, END
    uuid: str
    timestamp: float
    parent_id: str | None
    name: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    framework: str | None = None
    span_timestamp: float | None = None  # an END event's START time


def split_event_type(value: Any) -> tuple[str, str]:
    """``("LLM", "START")`` from ``LLM_START`` (also accepts ``IntermediateStepType.LLM_START``)."""
    text = str(value or "").rsplit(".", 1)[-1].upper()
    category, _, state = text.rpartition("_")
    if category.endswith("_NEW"):  # LLM_NEW_TOKEN
        return category[: -len("_NEW")], "CHUNK"
    return category, state


def spans_from_nat_events(trace_id: str, events: Iterable[NatEvent], problems: list[str]) -> list[Span]:
    """Spans of one request from its events, START and END paired by UUID (never by position).

    A START without an END is closed at the request's last event and marked failed; an END without a START
    takes its start from ``span_event_timestamp``.
    """
    starts: dict[str, NatEvent] = {}
    ends: dict[str, NatEvent] = {}
    first_token: dict[str, float] = {}
    order: list[str] = []
    last_ts = -math.inf
    for event in events:
        last_ts = max(last_ts, event.timestamp)
        if event.state == "START":
            if event.uuid not in starts:
                order.append(event.uuid)
            starts[event.uuid] = event
        elif event.state == "END":
            ends[event.uuid] = event
            if event.uuid not in starts:
                if event.span_timestamp is None:
                    problems.append(f"{trace_id}: {event.category}_END {event.uuid} has no START; skipped")
                    continue
                order.append(event.uuid)
                starts[event.uuid] = NatEvent(
                    event.category, "START", event.uuid, event.span_timestamp, event.parent_id, event.name
                )
        elif event.state == "CHUNK" and event.uuid not in first_token:
            first_token[event.uuid] = event.timestamp
    spans: list[Span] = []
    for uuid in order:
        start = starts[uuid]
        end = ends.get(uuid)
        if end is None:
            problems.append(f"{trace_id}: {start.category}_START {uuid} has no END; closed at the request's last event")
        end_ts = end.timestamp if end is not None else last_ts
        usage = end if end is not None else start
        name = start.name or (end.name if end is not None else None) or start.category.lower()
        is_llm = start.category == "LLM"
        ttft = first_token.get(uuid)
        spans.append(
            Span(
                trace_id=trace_id,
                span_id=uuid,
                parent_id=start.parent_id,
                name=name,
                start_s=start.timestamp,
                end_s=max(end_ts, start.timestamp),
                kind=kind_of_category(start.category),
                ok=end is not None,
                model=name if is_llm else None,
                input_tokens=usage.prompt_tokens if is_llm else None,
                output_tokens=usage.completion_tokens if is_llm else None,
                ttft_s=(ttft - start.timestamp) if (is_llm and ttft is not None) else None,
                attributes={"nat.event_category": start.category, "nat.framework": start.framework},
            )
        )
    return spans


# --------------------------------------------------------------------------------------------------
# all_requests_profiler_traces.json
# --------------------------------------------------------------------------------------------------


def spans_from_nat_request(request: Mapping[str, Any], problems: list[str]) -> list[Span]:
    """Spans of one request of ``all_requests_profiler_traces.json``."""
    trace_id = f"request-{request.get('request_number', '?')}"
    steps = request.get("intermediate_steps")
    if not isinstance(steps, list):
        problems.append(f"{trace_id}: no intermediate_steps list")
        return []
    events: list[NatEvent] = []
    for i, step in enumerate(steps):
        payload = step.get("payload") if isinstance(step, dict) else None
        if not isinstance(payload, dict):
            problems.append(f"{trace_id}: step {i} has no payload; skipped")
            continue
        try:
            ts = float(payload["event_timestamp"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{trace_id}: step {i} has no event_timestamp; skipped")
            continue
        category, state = split_event_type(payload.get("event_type"))
        uuid = payload.get("UUID")
        if not uuid or not category:
            problems.append(f"{trace_id}: step {i} has no UUID or event_type; skipped")
            continue
        parent = step.get("parent_id")
        usage = ((payload.get("usage_info") or {}).get("token_usage")) or {}
        span_ts = payload.get("span_event_timestamp")
        events.append(
            NatEvent(
                category=category,
                state=state,
                uuid=str(uuid),
                timestamp=ts,
                parent_id=None if parent in (None, "", _ROOT_FUNCTION) else str(parent),
                name=str(payload["name"]) if payload.get("name") else None,
                prompt_tokens=token_count(usage.get("prompt_tokens")),
                completion_tokens=token_count(usage.get("completion_tokens")),
                framework=str(payload["framework"]) if payload.get("framework") else None,
                span_timestamp=float(span_ts) if isinstance(span_ts, int | float) else None,
            )
        )
    return spans_from_nat_events(trace_id, events, problems)


# --------------------------------------------------------------------------------------------------
# standardized_data_all.csv
# --------------------------------------------------------------------------------------------------


def looks_like_nat_csv(text: str) -> bool:
    """True when the first line is a header with the toolkit's required columns."""
    header = text.lstrip().split("\n", 1)[0]
    columns = {c.strip().strip('"') for c in header.split(",")}
    return all(c in columns for c in CSV_REQUIRED_COLUMNS)


def _cell(row: Mapping[str, str | None], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    value = value.strip()
    return value if value and value.lower() != "nan" else None


def _tokens(row: Mapping[str, str | None], key: str) -> int | None:
    value = _cell(row, key)
    try:
        return None if value is None else int(float(value))
    except ValueError:
        return None


def spans_from_nat_csv(text: str, problems: list[str]) -> list[Span]:
    """Spans of every request (``example_number``) of a ``standardized_data_all.csv``; bad rows are named in
    ``problems`` with their line number and skipped."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        problems.append(f"the CSV has no column {', '.join(missing)}")
        return []
    rows: dict[str, list[tuple[int, dict[str, str | None]]]] = defaultdict(list)
    for row in reader:
        line = reader.line_num
        example = _cell(row, "example_number")
        if example is None:
            problems.append(f"line {line}: no example_number; skipped")
            continue
        try:
            number = str(int(float(example)))
        except ValueError:
            problems.append(f"line {line}: example_number {example!r} is not a number; skipped")
            continue
        rows[number].append((line, row))
    spans: list[Span] = []
    for number, group in rows.items():
        trace_id = f"request-{number}"
        spans.extend(spans_from_nat_events(trace_id, _csv_events(trace_id, group, problems), problems))
    return spans


def _csv_events(trace_id: str, rows: list[tuple[int, dict[str, str | None]]], problems: list[str]) -> list[NatEvent]:
    """One request's rows as events, each with the parent its function ancestry gives."""
    uuids = {u for _, row in rows if (u := _cell(row, "UUID"))}
    workflow = next(
        (_cell(row, "UUID") for _, row in rows if split_event_type(_cell(row, "event_type"))[0] == "WORKFLOW"), None
    )
    events: list[NatEvent] = []
    for line, row in rows:
        category, state = split_event_type(_cell(row, "event_type"))
        uuid = _cell(row, "UUID")
        stamp = _cell(row, "event_timestamp")
        try:
            ts = float(stamp) if stamp is not None else math.nan
        except ValueError:
            ts = math.nan
        if not category or not uuid or math.isnan(ts):
            problems.append(f"{trace_id}: line {line} has no event_type, UUID or event_timestamp; skipped")
            continue
        parent: str | None = None
        for key in ("function_id", "parent_function_id"):
            candidate = _cell(row, key)
            if candidate and candidate != uuid and candidate in uuids:
                parent = candidate
                break
        if parent is None and category != "WORKFLOW" and workflow != uuid:
            parent = workflow
        name = _cell(row, "llm_name") or _cell(row, "tool_name")
        if name is None and category == "FUNCTION":  # a function's own row: its ancestry is itself
            name = _cell(row, "function_name")
        events.append(
            NatEvent(
                category=category,
                state=state,
                uuid=uuid,
                timestamp=ts,
                parent_id=parent,
                name=name,
                prompt_tokens=_tokens(row, "prompt_tokens"),
                completion_tokens=_tokens(row, "completion_tokens"),
                framework=_cell(row, "framework"),
            )
        )
    return events
