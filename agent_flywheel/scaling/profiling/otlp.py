"""Spans from OpenTelemetry OTLP JSON documents (``{"resourceSpans": [...]}``).

A file holds one such document, or one per line (JSONL: what the demo agent and most collectors' file exporters
write). Trace and span ids may be hex (the OTLP/JSON rule) or base64 (protobuf's generic JSON mapping); times are
Unix nanoseconds as strings or integers. What a span is (an LLM call, a tool call, ...), its model and its
tokens come from the GenAI, OpenInference or toolkit attributes it carries (:mod:`.conventions`).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from agent_flywheel.scaling.profiling.conventions import (
    input_tokens_of,
    model_of,
    output_tokens_of,
    provider_of,
    span_kind,
)
from agent_flywheel.scaling.profiling.spans import Span

_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def parse_id(value: Any) -> str | None:
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
    trace_id = parse_id(raw.get("traceId"))
    span_id = parse_id(raw.get("spanId"))
    if trace_id is None or span_id is None:
        raise ValueError("missing traceId or spanId")
    attrs = _attributes(raw.get("attributes"))
    start = _nanos_to_s(raw.get("startTimeUnixNano"))
    end = _nanos_to_s(raw.get("endTimeUnixNano"))
    if end < start:
        raise ValueError(f"ends before it starts ({end - start:.3f} s)")
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parse_id(raw.get("parentSpanId")),
        name=str(raw.get("name") or "(unnamed)"),
        start_s=start,
        end_s=end,
        kind=span_kind(attrs),
        ok=_otlp_status_ok(raw.get("status")),
        model=model_of(attrs),
        provider=provider_of(attrs),
        input_tokens=input_tokens_of(attrs),
        output_tokens=output_tokens_of(attrs),
        attributes=attrs,
    )
