"""Span building: ids, parent/child links, GenAI attributes and the OTLP JSON shape collectors accept."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from simulators.agent.otel import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    SpanExporter,
    Trace,
    build_otlp,
    otlp_value,
    traces_url,
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _trace() -> tuple[Trace, dict[str, Any]]:
    trace = Trace()
    root = trace.start_span(
        "agent.chat", SPAN_KIND_SERVER, start_ns=1_000, attributes={"gen_ai.operation.name": "invoke_agent"}
    )
    llm = trace.start_span(
        "chat m",
        SPAN_KIND_CLIENT,
        parent=root,
        start_ns=1_100,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "gen_ai.system": "nvidia.nim"},
    )
    llm.set("gen_ai.usage.input_tokens", 12)
    llm.set("gen_ai.usage.output_tokens", 7)
    llm.set("gen_ai.response.finish_reasons", ["tool_calls"])
    llm.end(2_000)
    tool = trace.start_span("execute_tool t", parent=root, start_ns=2_100, attributes={"gen_ai.tool.name": "t"})
    tool.end(2_500, error="bad arguments")
    root.end(3_000)
    return trace, build_otlp(trace.spans)


def test_ids_are_hex_and_children_point_at_the_root() -> None:
    trace, payload = _trace()
    spans = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert len(spans) == 3
    root, llm, tool = spans
    assert HEX32.match(trace.trace_id) and all(s["traceId"] == trace.trace_id for s in spans)
    assert all(HEX16.match(s["spanId"]) for s in spans)
    assert len({s["spanId"] for s in spans}) == 3
    assert "parentSpanId" not in root
    assert llm["parentSpanId"] == root["spanId"] and tool["parentSpanId"] == root["spanId"]
    assert trace.traceparent(trace.spans[1]) == f"00-{trace.trace_id}-{llm['spanId']}-01"


def test_otlp_shape_times_kinds_status_and_attributes() -> None:
    _, payload = _trace()
    resource_spans = payload["resourceSpans"][0]
    assert {"key": "service.name", "value": {"stringValue": "demo-agent"}} in resource_spans["resource"]["attributes"]
    assert resource_spans["scopeSpans"][0]["scope"]["name"]
    root, llm, tool = resource_spans["scopeSpans"][0]["spans"]
    assert (root["startTimeUnixNano"], root["endTimeUnixNano"]) == ("1000", "3000")
    assert (llm["kind"], root["kind"], tool["kind"]) == (SPAN_KIND_CLIENT, SPAN_KIND_SERVER, 1)
    assert llm["status"] == {"code": STATUS_OK}
    assert tool["status"] == {"code": STATUS_ERROR, "message": "bad arguments"}
    attrs = {a["key"]: a["value"] for a in llm["attributes"]}
    assert attrs["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert attrs["gen_ai.request.model"] == {"stringValue": "m"}
    assert attrs["gen_ai.system"] == {"stringValue": "nvidia.nim"}
    assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "12"}
    assert attrs["gen_ai.usage.output_tokens"] == {"intValue": "7"}
    assert attrs["gen_ai.response.finish_reasons"] == {"arrayValue": {"values": [{"stringValue": "tool_calls"}]}}
    json.dumps(payload)


def test_attribute_values_and_nulls() -> None:
    assert otlp_value(True) == {"boolValue": True}
    assert otlp_value(3) == {"intValue": "3"}
    assert otlp_value(0.5) == {"doubleValue": 0.5}
    assert otlp_value("x") == {"stringValue": "x"}
    trace = Trace()
    span = trace.start_span("s", attributes={"kept": "v", "dropped": None})
    span.end()
    assert [a["key"] for a in span.to_otlp()["attributes"]] == ["kept"]


def test_end_is_idempotent_and_never_before_start() -> None:
    span = Trace().start_span("s", start_ns=5_000)
    span.end(4_000)
    assert span.end_ns == 5_000
    span.end(9_000)
    assert span.end_ns == 5_000 and span.duration_s == 0.0


def test_payload_parses_as_an_otlp_export_request() -> None:
    """The official protobuf schema accepts our JSON (after the OTLP hex-id rule is mapped to base64)."""
    trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    json_format = pytest.importorskip("google.protobuf.json_format")
    _, payload = _trace()
    for span in payload["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    message = json_format.ParseDict(payload, trace_service.ExportTraceServiceRequest())
    spans = message.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["agent.chat", "chat m", "execute_tool t"]
    assert spans[1].parent_span_id == spans[0].span_id
    assert spans[1].end_time_unix_nano == 2_000


def test_exporter_appends_one_line_per_trace(tmp_path: Path) -> None:
    exporter = SpanExporter(tmp_path / "agent" / "spans.jsonl")
    _, first = _trace()
    _, second = _trace()
    exporter.write(first)
    exporter.write(second)
    lines = (tmp_path / "agent" / "spans.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]
    assert exporter.stats()["traces_written"] == 2


def test_traces_url() -> None:
    assert traces_url("http://c:4318") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
