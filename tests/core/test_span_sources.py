"""Spans from the instrumentations people use, and the shapes the NeMo Agent Toolkit 1.9 really produces.

- GenAI semantic conventions (current and older names), OpenInference, the toolkit's own ``nat.*`` attributes;
- the toolkit's ``all_requests_profiler_traces.json``, ``standardized_data_all.csv`` and OTLP export of the same
  run, where a later LLM call names the finished LLM call before it as its parent and some tool calls left no
  span: the critical path must give the LLM calls their real share (about 92 %), and the report must say how
  many spans it re-parented;
- the repair itself: a parent must contain its child in time.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from agent_flywheel.scaling.profiling.critical_path import critical_path
from agent_flywheel.scaling.profiling.files import TraceFormatError, load_traces, parse_traces
from agent_flywheel.scaling.profiling.otlp import spans_from_otlp
from agent_flywheel.scaling.profiling.report import analyze
from agent_flywheel.scaling.profiling.spans import CLOCK_TOLERANCE_S, Span, Trace
from tests.support.nat_profiler import BIG, CSV_COLUMNS, SMALL, nat_profiler_run


def _llm_share(text: str) -> tuple[float, int, dict[str, int], int]:
    ts = parse_traces(text)
    report = analyze(ts.traces, ts.problems, ts.source_format)
    assert report.problems == []
    share = sum(s.critical_path_share for s in report.steps if s.kind == "llm")
    by_model = {m: int(v["count"] or 0) for m, v in report.llm_by_model.items()}
    return share, report.repaired_spans, by_model, int(report.llm["count"] or 0)


@pytest.mark.parametrize("form", ["json", "otlp"])
def test_nat_19_sequential_llm_calls_get_their_real_critical_path_share(form: str) -> None:
    run = nat_profiler_run()
    assert 0.91 <= run.llm_share <= 0.93 and run.sibling_parents >= 10  # the shape of the reported run
    text = json.dumps(run.requests if form == "json" else run.otlp)
    share, repaired, by_model, calls = _llm_share(text)
    assert share == pytest.approx(run.llm_share, abs=1e-6)
    assert repaired == run.sibling_parents
    assert calls == run.llm_calls and by_model == run.calls_by_model == {BIG: 36, SMALL: 4}


def test_nat_standardized_csv_gives_the_same_profile_as_the_json(tmp_path: Path) -> None:
    run = nat_profiler_run()
    path = tmp_path / "standardized_data_all.csv"
    path.write_text(run.csv_text, encoding="utf-8")
    ts = load_traces(path)
    assert ts.source_format == "nat-csv" and ts.problems == []
    from_csv = analyze(ts.traces, ts.problems, ts.source_format)
    json_set = parse_traces(json.dumps(run.requests))
    from_json = analyze(json_set.traces, json_set.problems, json_set.source_format)
    llm_share = sum(s.critical_path_share for s in from_csv.steps if s.kind == "llm")
    assert llm_share == pytest.approx(run.llm_share, abs=1e-6)
    assert from_csv.repaired_spans == 0  # the CSV has no parent ids: the tree comes from the function ancestry
    assert from_csv.num_traces == from_json.num_traces == 16
    assert sorted(c.latency_s for c in from_csv.llm_calls) == pytest.approx(sorted(run.llm_latencies))
    assert from_csv.tokens == from_json.tokens
    assert [c.ttft_s for c in from_csv.llm_calls if c.ttft_s is not None] == pytest.approx([0.12] * 16)
    trace = next(t for t in ts.traces if t.trace_id == "request-1")
    agent = next(s for s in trace.spans if s.kind == "function")
    assert agent.name == "react_agent" and trace.root.kind == "workflow"
    assert {c.kind for c in trace.children(agent)} == {"llm", "tool"}


def test_nat_csv_without_text_columns_and_with_bad_rows() -> None:
    """``csv_exclude_io_text`` drops the text columns; a row without a usable timestamp is named and skipped."""
    run = nat_profiler_run(2)
    rows = list(csv.DictReader(io.StringIO(run.csv_text)))
    columns = [c for c in CSV_COLUMNS if c not in ("llm_text_input", "llm_text_output", "llm_new_token")]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    writer.writerow({"event_type": "LLM_START", "event_timestamp": "not-a-time", "example_number": 1, "UUID": "x"})
    ts = parse_traces(out.getvalue())
    assert ts.source_format == "nat-csv" and len(ts.traces) == 2
    assert ts.problems == [f"request-1: line {len(rows) + 2} has no event_type, UUID or event_timestamp; skipped"]
    assert analyze(ts.traces).llm["count"] == run.llm_calls
    with pytest.raises(TraceFormatError, match="no spans"):
        parse_traces("event_type,event_timestamp,example_number,UUID\n")


def test_a_finished_sibling_named_as_parent_is_re_parented_to_the_innermost_container() -> None:
    spans = [
        Span("t", "wf", None, "workflow", 0, 10, kind="workflow"),
        Span("t", "fn", "wf", "agent", 0.5, 9.5, kind="function"),
        Span("t", "a", "fn", "llm a", 1, 4, kind="llm"),
        Span("t", "b", "a", "llm b", 5, 9, kind="llm"),  # a had finished at 4
    ]
    trace = Trace("t", spans)
    assert trace.repaired == ["b"]
    assert [c.span_id for c in trace.children(trace.root)] == ["fn"]
    assert {c.span_id for c in trace.children(spans[1])} == {"a", "b"}
    on_path = {s.span.span_id: 0.0 for s in critical_path(trace)}
    for seg in critical_path(trace):
        on_path[seg.span.span_id] += seg.duration_s
    assert on_path["a"] + on_path["b"] == pytest.approx(7.0)  # both calls whole on the critical path


def test_a_missing_parent_is_replaced_by_the_container_and_a_remote_one_is_the_top() -> None:
    spans = [
        Span("t", "root", "caller0000000000", "server", 0, 10),  # parent = the caller's span: not exported
        Span("t", "llm", "tool-never-exported", "llm", 2, 3, kind="llm"),
        Span("t", "late", None, "background", 11, 12),  # says it has no parent: stays at the top
    ]
    trace = Trace("t", spans)
    assert trace.repaired == ["llm"]
    assert [c.span_id for c in trace.children(spans[0])] == ["llm"]
    assert {s.span_id for s in trace.children(trace.root)} == {"root", "late"}  # synthetic root over both


def test_clock_skew_within_tolerance_keeps_the_stated_parent_and_equal_spans_do_not_cycle() -> None:
    skew = CLOCK_TOLERANCE_S / 2
    spans = [
        Span("t", "client", None, "http client", 1.0, 2.0),
        Span("t", "server", "client", "http server", 1.0 - skew, 2.0 + skew),
        Span("t", "twin-a", "twin-b", "twin a", 3.0, 4.0),
        Span("t", "twin-b", "twin-a", "twin b", 3.0, 4.0),
    ]
    trace = Trace("t", spans)
    assert [c.span_id for c in trace.children(spans[0])] == ["server"]
    assert "server" not in trace.repaired
    walked = [s.span_id for s, _ in trace.walk()]
    assert sorted(walked) == sorted(["__trace_root__", "client", "server", "twin-a", "twin-b"])


def test_report_says_how_many_spans_it_repaired() -> None:
    run = nat_profiler_run(3)
    ts = parse_traces(json.dumps(run.requests))
    report = analyze(ts.traces, ts.problems, ts.source_format)
    data = report.to_dict()
    assert data["repaired_spans"] == run.sibling_parents > 0
    assert f"**{run.sibling_parents} spans repaired:**" in report.to_markdown()
    clean = analyze(parse_traces(run.csv_text).traces)
    assert clean.repaired_spans == 0 and "spans repaired" not in clean.to_markdown()


def _doc(*spans: tuple[str, dict[str, object]]) -> dict[str, object]:
    def value(v: object) -> dict[str, object]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": str(v)}

    out = [
        {
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": f"{i + 1:016x}",
            "name": name,
            "startTimeUnixNano": str(1_000_000_000 * (i + 1)),
            "endTimeUnixNano": str(1_000_000_000 * (i + 2)),
            "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
        }
        for i, (name, attrs) in enumerate(spans)
    ]
    return {"resourceSpans": [{"scopeSpans": [{"spans": out}]}]}


def test_llm_tool_and_agent_spans_in_every_convention() -> None:
    doc = _doc(
        (
            "genai current",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "m-req",
                "gen_ai.response.model": "m-resp",
                "gen_ai.usage.input_tokens": 11,
                "gen_ai.usage.output_tokens": 3,
            },
        ),
        (
            "genai older",
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "m-old",
                "gen_ai.usage.prompt_tokens": 12,
                "gen_ai.usage.completion_tokens": 4,
            },
        ),
        (
            "openinference",
            {
                "openinference.span.kind": "LLM",
                "llm.model_name": "m-oi",
                "llm.provider": "langchain",
                "llm.token_count.prompt": 13,
                "llm.token_count.completion": 5,
                "llm.token_count.total": 18,
            },
        ),
        ("oi tool", {"openinference.span.kind": "TOOL", "tool.name": "search"}),
        ("oi chain", {"openinference.span.kind": "CHAIN"}),
        ("nat function", {"openinference.span.kind": "CHAIN", "nat.span.kind": "FUNCTION"}),
        ("nat event only", {"nat.event_type": "TOOL_START"}),
        ("oi agent", {"openinference.span.kind": "AGENT"}),
        ("genai tool", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"}),
        ("genai embeddings", {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"}),
        ("oi retriever", {"openinference.span.kind": "RETRIEVER"}),
        ("plain", {}),
    )
    problems: list[str] = []
    spans = {s.name: s for s in spans_from_otlp(doc, problems)}
    assert problems == []
    assert {n: s.kind for n, s in spans.items()} == {
        "genai current": "llm",
        "genai older": "llm",
        "openinference": "llm",
        "oi tool": "tool",
        "oi chain": "chain",
        "nat function": "function",
        "nat event only": "tool",
        "oi agent": "agent",
        "genai tool": "tool",
        "genai embeddings": "embedding",
        "oi retriever": "retriever",
        "plain": "span",
    }
    got = {n: (s.model, s.provider, s.input_tokens, s.output_tokens) for n, s in spans.items() if s.is_llm}
    assert got == {
        "genai current": ("m-resp", "openai", 11, 3),
        "genai older": ("m-old", "openai", 12, 4),
        "openinference": ("m-oi", "langchain", 13, 5),
    }
    report = analyze([Trace("t", list(spans.values()))])
    assert report.llm["count"] == 3 and set(report.llm_by_model) == {"m-resp", "m-old", "m-oi"}
    assert {c.provider for c in report.llm_calls} == {"openai", "langchain"}
