"""Profiling: both trace formats, spans paired by id, trees by parent id, critical path, report, Gantt chart."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.profiling import (
    SYNTHETIC_ROOT_NAME,
    Span,
    Trace,
    TraceFormatError,
    analyze,
    analyze_file,
    critical_chain,
    critical_path,
    gantt_png,
    load_traces,
    parse_traces,
)

T0 = 1_700_000_000.0  # epoch seconds of the trace start
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _ns(t: float) -> str:
    return str(round((T0 + t) * 1e9))


def _attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _span(span_id: str, parent: str, name: str, start: float, end: float, **attrs: Any) -> dict[str, Any]:
    return {
        "traceId": TRACE_ID,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "startTimeUnixNano": _ns(start),
        "endTimeUnixNano": int(_ns(end)),  # ints and strings both occur in the wild
        "attributes": [_attr(k.replace("__", "."), v) for k, v in attrs.items()],
        "status": {},
    }


def _llm(span_id: str, parent: str, start: float, end: float, model: str, tin: int, tout: int) -> dict[str, Any]:
    return _span(
        span_id,
        parent,
        f"chat {model}",
        start,
        end,
        gen_ai__operation__name="chat",
        gen_ai__request__model=model,
        gen_ai__usage__input_tokens=tin,
        gen_ai__usage__output_tokens=tout,
    )


ROOT, PLAN, CALL_A, CALL_B, TOOL = (f"{i:016x}" for i in range(1, 6))


def otlp_document(b64_ids: bool = False) -> dict[str, Any]:
    """One request: plan (LLM) -> two overlapping LLM calls A and B -> a tool. A (3..8 s) finishes after B."""
    spans = [
        _span(ROOT, "", "agent.run", 0.0, 10.0),
        _llm(PLAN, ROOT, 0.5, 2.5, "llama-70b", 900, 40),
        _llm(CALL_A, ROOT, 3.0, 8.0, "llama-70b", 1200, 300),
        _llm(CALL_B, ROOT, 3.5, 6.0, "llama-8b", 500, 80),
        _span(TOOL, ROOT, "tool get_order", 8.2, 9.5, gen_ai__operation__name="execute_tool"),
    ]
    if b64_ids:
        for s in spans:
            s["traceId"] = base64.b64encode(bytes.fromhex(s["traceId"])).decode()
            s["spanId"] = base64.b64encode(bytes.fromhex(s["spanId"])).decode()
            if s["parentSpanId"]:
                s["parentSpanId"] = base64.b64encode(bytes.fromhex(s["parentSpanId"])).decode()
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}


def _step(event: str, uuid: str, ts: float, parent: str, name: str, span_ts: float | None = None, **usage: int) -> dict:
    payload: dict[str, Any] = {"event_type": event, "event_timestamp": T0 + ts, "name": name, "UUID": uuid}
    if span_ts is not None:
        payload["span_event_timestamp"] = T0 + span_ts
    if usage:
        payload["usage_info"] = {"token_usage": usage, "num_llm_calls": 1}
    return {
        "parent_id": parent,
        "function_ancestry": {"function_id": "f", "function_name": "agent"},
        "payload": payload,
    }


def nat_traces() -> list[dict[str, Any]]:
    """Toolkit events with overlapping LLM calls: START A, START B, END A, END B.

    The toolkit's positional pairing would give A = END A - START B = 2.5 s and lose B; by UUID A is 3.0 s
    and B is 4.5 s.
    """
    steps = [
        _step("WORKFLOW_START", "wf", 0.0, "root", "agent"),
        _step("LLM_START", "a", 3.0, "wf", "llama-70b"),
        _step("LLM_START", "b", 3.5, "wf", "llama-8b"),
        _step("LLM_NEW_TOKEN", "a", 3.4, "wf", "llama-70b"),
        _step("LLM_END", "a", 6.0, "wf", "llama-70b", 3.0, prompt_tokens=1000, completion_tokens=200),
        _step("LLM_END", "b", 8.0, "wf", "llama-8b", 3.5, prompt_tokens=400, completion_tokens=50),
        _step("TOOL_START", "t", 8.1, "wf", "get_order"),
        _step("TOOL_END", "t", 9.0, "wf", "get_order", 8.1),
        _step("WORKFLOW_END", "wf", 9.5, "root", "agent", 0.0),
    ]
    return [{"request_number": 0, "intermediate_steps": steps}]


def test_otlp_overlapping_llm_calls_keep_their_own_latency() -> None:
    ts = parse_traces(json.dumps(otlp_document()))
    assert ts.source_format == "otlp" and len(ts.traces) == 1
    calls = {s.span_id: s for s in ts.traces[0].llm_calls}
    assert calls[CALL_A].duration_s == pytest.approx(5.0)
    assert calls[CALL_B].duration_s == pytest.approx(2.5)
    assert calls[CALL_A].model == "llama-70b" and calls[CALL_A].input_tokens == 1200
    assert calls[CALL_A].output_tokens == 300
    tool = next(s for s in ts.traces[0].spans if s.span_id == TOOL)
    assert tool.kind == "tool"


def test_nat_overlapping_llm_calls_are_paired_by_uuid() -> None:
    ts = parse_traces(json.dumps(nat_traces()))
    assert ts.source_format == "nat" and ts.problems == []
    trace = ts.traces[0]
    calls = {s.span_id: s for s in trace.llm_calls}
    assert calls["a"].duration_s == pytest.approx(3.0)
    assert calls["b"].duration_s == pytest.approx(4.5)
    assert calls["a"].input_tokens == 1000 and calls["b"].output_tokens == 50
    assert calls["a"].ttft_s == pytest.approx(0.4)
    assert trace.root.name == "agent" and trace.duration_s == pytest.approx(9.5)
    assert {c.span_id for c in trace.children(trace.root)} == {"a", "b", "t"}


def test_base64_and_hex_ids_give_the_same_tree() -> None:
    hex_trace = parse_traces(json.dumps(otlp_document())).traces[0]
    b64_trace = parse_traces(json.dumps(otlp_document(b64_ids=True))).traces[0]
    assert b64_trace.trace_id == TRACE_ID
    assert {s.span_id for s in b64_trace.spans} == {s.span_id for s in hex_trace.spans}
    assert b64_trace.root.span_id == ROOT
    assert [s.span_id for s in critical_chain(b64_trace)] == [s.span_id for s in critical_chain(hex_trace)]


def test_critical_path_with_parallel_children() -> None:
    trace = parse_traces(json.dumps(otlp_document())).traces[0]
    segs = [(s.span.span_id, round(s.start_s - T0, 6), round(s.end_s - T0, 6)) for s in critical_path(trace)]
    assert segs == [
        (ROOT, 0.0, 0.5),
        (PLAN, 0.5, 2.5),
        (ROOT, 2.5, 3.0),
        (CALL_A, 3.0, 8.0),  # B (3.5..6.0) ran in parallel and finished earlier: off the path
        (ROOT, 8.0, 8.2),
        (TOOL, 8.2, 9.5),
        (ROOT, 9.5, 10.0),
    ]
    assert sum(s.duration_s for s in critical_path(trace)) == pytest.approx(trace.duration_s)
    assert CALL_B not in {s.span_id for s in critical_chain(trace)}


def test_critical_path_descends_into_nested_parallel_work() -> None:
    spans = [
        Span("t", "r", None, "root", 0, 10),
        Span("t", "x", "r", "fan-out", 1, 9),
        Span("t", "x1", "x", "worker-1", 1, 4),
        Span("t", "x2", "x", "worker-2", 1, 8.5),
        Span("t", "x2a", "x2", "llm", 2, 8, kind="llm"),
    ]
    trace = Trace("t", spans)
    chain = [s.span_id for s in critical_chain(trace)]
    # In time order of first appearance: the fan-out's own time (8.5..9) comes after worker-2 returns.
    assert chain == ["r", "x2", "x2a", "x"]
    path = critical_path(trace)
    assert sum(s.duration_s for s in path if s.span.span_id == "x2a") == pytest.approx(6.0)
    assert sum(s.duration_s for s in path if s.span.span_id == "x1") == 0


def test_synthetic_root_when_there_is_no_single_top_span() -> None:
    spans = [Span("t", "a", None, "step-a", 0, 2), Span("t", "b", None, "step-b", 3, 4)]
    trace = Trace("t", spans)
    assert trace.root.name == SYNTHETIC_ROOT_NAME and trace.duration_s == pytest.approx(4.0)
    shares = {s.span.name: s.duration_s for s in critical_path(trace)}
    assert shares == {"step-a": 2.0, SYNTHETIC_ROOT_NAME: 1.0, "step-b": 1.0}


def test_report_steps_shares_and_bottleneck() -> None:
    ts = parse_traces(json.dumps(otlp_document()))
    report = analyze(ts.traces, ts.problems, ts.source_format)
    data = json.loads(report.to_json())
    assert data["workflow"]["count"] == 1 and data["workflow"]["p95_s"] == pytest.approx(10.0)
    assert data["llm"]["count"] == 3 and data["llm"]["max_s"] == pytest.approx(5.0)
    for key in ("count", "min_s", "max_s", "p50_s", "p95_s"):
        assert key in data["workflow"] and key in data["llm"]
    steps = {s["name"]: s for s in data["steps"]}
    assert set(steps["chat llama-70b"]) >= {"name", "count", "p50_s", "p95_s", "critical_path_share"}
    assert steps["chat llama-70b"]["count"] == 2
    assert steps["chat llama-70b"]["critical_path_share"] == pytest.approx(0.7)  # 2 s plan + 5 s call A of 10 s
    assert steps["chat llama-8b"]["critical_path_share"] == 0.0
    assert sum(s["critical_path_share"] for s in data["steps"]) == pytest.approx(1.0)
    assert "chat llama-70b" in data["bottleneck"] and "70%" in data["bottleneck"]
    assert data["llm_by_model"]["llama-8b"]["count"] == 1
    md = report.to_markdown()
    assert "Bottleneck" in md and "chat llama-70b" in md


def test_jsonl_with_a_bad_line_is_read_and_the_line_reported(tmp_path: Path) -> None:
    doc = otlp_document()
    other = json.loads(json.dumps(doc))
    for s in other["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        s["traceId"] = "0af7651916cd43dd8448eb211c80319c"
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(doc) + "\n{not json\n" + json.dumps(other) + "\n", encoding="utf-8")
    ts = load_traces(path)
    assert len(ts.traces) == 2
    assert any("line 2" in p for p in ts.problems)


def test_nat_start_without_end_is_kept_and_reported() -> None:
    data = nat_traces()
    data[0]["intermediate_steps"] = [
        s for s in data[0]["intermediate_steps"] if s["payload"]["event_type"] != "TOOL_END"
    ]
    ts = parse_traces(json.dumps(data))
    assert any("TOOL_START t has no END" in p for p in ts.problems)
    tool = next(s for s in ts.traces[0].spans if s.span_id == "t")
    assert not tool.ok and tool.end_s == pytest.approx(T0 + 9.5)


def test_unreadable_files_raise_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(TraceFormatError, match="empty"):
        load_traces(empty)
    with pytest.raises(TraceFormatError, match="no such file"):
        load_traces(tmp_path / "missing.json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"hello": 1}), encoding="utf-8")
    with pytest.raises(TraceFormatError, match="no spans"):
        load_traces(wrong)


def test_gantt_png_and_analyze_file(tmp_path: Path) -> None:
    path = tmp_path / "nat.json"
    path.write_text(json.dumps(nat_traces()), encoding="utf-8")
    report = analyze_file(path)
    assert report.num_traces == 1 and report.llm["count"] == 2
    trace = load_traces(path).traces[0]
    out = gantt_png(trace, tmp_path / "charts" / "gantt.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
