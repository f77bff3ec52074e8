"""Spans from the NeMo Agent Toolkit's ``all_requests_profiler_traces.json``.

The file is ``[{request_number, intermediate_steps: [...]}]`` with ``*_START`` / ``*_END`` events. Unlike the
toolkit, which pairs an ``LLM_END`` with whichever ``LLM_START`` came just before it, we pair START and END **by
their shared UUID**, so overlapping LLM calls each keep their own latency. The tree comes from each step's
``parent_id`` (the UUID of the enclosing START), not from a LIFO stack that would nest parallel siblings inside
each other. Toolkit LLM events are mapped onto the same fields as GenAI spans, so one code path serves both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agent_flywheel.scaling.profiling.spans import Span, token_count


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
                input_tokens=token_count(usage.get("prompt_tokens")) if is_llm else None,
                output_tokens=token_count(usage.get("completion_tokens")) if is_llm else None,
                ttft_s=(ttft - start_ts) if (is_llm and ttft is not None) else None,
                attributes={"nat.event_category": category, "nat.framework": start_payload.get("framework")},
            )
        )
    return spans
