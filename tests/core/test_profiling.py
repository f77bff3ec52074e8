"""Profiling: both trace formats, spans paired by id, trees by parent id, critical path, report, Gantt chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_flywheel.scaling.profiling.critical_path import critical_chain, critical_path
from agent_flywheel.scaling.profiling.files import TraceFormatError, load_traces, parse_traces
from agent_flywheel.scaling.profiling.gantt import MAX_LABEL_CHARS, gantt_figure, gantt_png
from agent_flywheel.scaling.profiling.report import analyze, analyze_file
from agent_flywheel.scaling.profiling.spans import SYNTHETIC_ROOT_NAME, Span, Trace
from tests.support.traces import CALL_A, CALL_B, PLAN, ROOT, T0, TOOL, TRACE_ID, nat_traces, otlp_document


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


def test_gantt_labels_title_and_legend_are_inside_the_picture() -> None:
    """Long span names used to be cut off at the left edge: every text must lie within the figure."""
    names = ["customer_support_workflow", "agent.plan_next_step_with_tools_and_a_very_long_function_name_indeed"]
    names += [f"llm meta/llama-3.3-70b-instruct chat.completions (call {i})" + "x" * 20 * i for i in range(4)]
    spans = [Span("t", "s0", None, names[0], 0.0, 4.0, kind="workflow")]
    spans += [
        Span("t", f"s{i}", "s0" if i == 1 else "s1", n, 0.1 * i, 0.1 * i + 1.5, kind="llm")
        for i, n in enumerate(names[1:], 1)
    ]
    fig = gantt_figure(Trace("t", spans))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == names[0] and labels[1].startswith("└ agent.plan_next_step")
    assert any(label.endswith("…") and len(label.lstrip(" └")) == MAX_LABEL_CHARS for label in labels)
    # everything drawn (row labels, bar annotations, ticks, title, axis label; the legend) is inside the figure
    box = fig.bbox
    for part in (fig.axes[0].get_tightbbox(renderer), fig.legends[0].get_window_extent(renderer)):
        assert part is not None
        assert box.x0 - 1 <= part.x0 and part.x1 <= box.x1 + 1, (part, box)
        assert box.y0 - 1 <= part.y0 and part.y1 <= box.y1 + 1, (part, box)
