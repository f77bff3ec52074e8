"""The OTLP/HTTP receiver: real OpenTelemetry exporters (protobuf, gzip), JSON posts, partial success, refusals,
what it keeps, and waiting for expected traces."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agent_flywheel.config import SpansConfig
from agent_flywheel.scaling.otlp.jsonl import FileTail, JsonlSink
from agent_flywheel.scaling.otlp.receiver import OtlpReceiver
from agent_flywheel.scaling.otlp.sources import collecting_spans, span_sources
from agent_flywheel.scaling.otlp.store import TraceStore
from agent_flywheel.scaling.profiling.report import analyze
from agent_flywheel.scaling.profiling.spans import Trace
from simulators.threaded import free_port

TRACE_A = "5b8efff798038103d269b633813fc60c"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
T0_NS = 1_700_000_000_000_000_000


def _doc(trace_id: str, spans: list[tuple[str, str | None, str, int, int]]) -> dict[str, Any]:
    """One OTLP document; spans are (span id, parent id, name, start ms, end ms)."""
    out = []
    for span_id, parent, name, start, end in spans:
        span: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": span_id,
            "name": name,
            "startTimeUnixNano": str(start * 1_000_000),
            "endTimeUnixNano": str(end * 1_000_000),
            "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]
            if name.startswith("chat")
            else [],
        }
        if parent:
            span["parentSpanId"] = parent
        out.append(span)
    return {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "t"}, "spans": out}]}]}


DOC_A = _doc(
    TRACE_A,
    [("a000000000000001", None, "agent.chat", 0, 100), ("a000000000000002", "a000000000000001", "chat m", 10, 90)],
)
DOC_B = _doc(TRACE_B, [("b000000000000001", None, "agent.chat", 0, 50)])


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


# --------------------------------------------------------------------------------------------------
# The OpenTelemetry SDK's own protobuf exporter
# --------------------------------------------------------------------------------------------------


def _finished_spans() -> list[ReadableSpan]:
    """Spans as the SDK finishes them: an agent span with an LLM call (GenAI attributes, explicit times) in one
    trace, a failed tool call in another."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "test-agent"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.otlp")
    root = tracer.start_span("agent.chat", start_time=T0_NS)
    with trace.use_span(root, end_on_exit=False):
        llm = tracer.start_span(
            "chat meta/llama-3.3-70b-instruct",
            start_time=T0_NS + 10_000_000,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "meta/llama-3.3-70b-instruct",
                "gen_ai.usage.input_tokens": 321,
                "gen_ai.usage.output_tokens": 45,
                "flywheel.score": 0.75,
                "flywheel.cached": True,
                "flywheel.tags": ["a", "b"],
            },
        )
        llm.end(end_time=T0_NS + 90_000_000)
    root.end(end_time=T0_NS + 100_000_000)
    tool = tracer.start_span("execute_tool lookup_order", start_time=T0_NS, attributes={"gen_ai.tool.name": "x"})
    tool.set_status(Status(StatusCode.ERROR, "boom"))
    tool.end(end_time=T0_NS + 5_000_000)
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_spans_from_the_sdk_exporter_arrive_intact(receiver: OtlpReceiver, compression: Compression) -> None:
    sent = _finished_spans()
    exporter = OTLPSpanExporter(endpoint=receiver.traces_url, compression=compression)
    assert exporter.export(sent) == SpanExportResult.SUCCESS
    exporter.shutdown()
    by_name = {s.name: s for s in sent}
    trace_ids = {format(s.context.trace_id, "032x") for s in sent}
    assert receiver.store.wait_for(trace_ids, timeout_s=5) == set()
    assert receiver.store.trace_ids() == trace_ids
    problems: list[str] = []
    got = {s.name: s for s in receiver.store.spans(problems)}
    assert problems == []
    assert set(got) == set(by_name)
    for name, span in by_name.items():
        mine = got[name]
        assert mine.trace_id == format(span.context.trace_id, "032x")
        assert mine.span_id == format(span.context.span_id, "016x")
        expected_parent = format(span.parent.span_id, "016x") if span.parent else None
        assert mine.parent_id == expected_parent
        assert span.start_time is not None and span.end_time is not None
        assert mine.start_s == span.start_time / 1e9 and mine.end_s == span.end_time / 1e9
    llm = got["chat meta/llama-3.3-70b-instruct"]
    assert (llm.kind, llm.model, llm.input_tokens, llm.output_tokens) == ("llm", "meta/llama-3.3-70b-instruct", 321, 45)
    assert llm.attributes["flywheel.score"] == 0.75
    assert llm.attributes["flywheel.cached"] is True
    assert llm.attributes["flywheel.tags"] == ["a", "b"]
    assert llm.duration_s == pytest.approx(0.08)
    assert got["execute_tool lookup_order"].ok is False
    assert got["agent.chat"].ok is True
    # the documents keep the OTLP/JSON shape: hex ids, the resource and its attributes
    doc = receiver.store.documents()[0]
    resource = doc["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "test-agent"}} in resource
    agent_trace = llm.trace_id
    report = analyze([Trace(agent_trace, [s for s in got.values() if s.trace_id == agent_trace])])
    assert report.llm["count"] == 1 and report.workflow["p50_s"] == pytest.approx(0.1)


def test_a_json_post_is_kept_as_sent(receiver: OtlpReceiver) -> None:
    answer = httpx.post(receiver.traces_url, json=DOC_A, timeout=5)
    assert answer.status_code == 200 and answer.json() == {}
    assert answer.headers["content-type"] == "application/json"
    store = receiver.store
    assert store.trace_ids() == {TRACE_A}
    spans = store.spans()
    assert {s.name for s in spans} == {"agent.chat", "chat m"}
    report = analyze([Trace(TRACE_A, spans)])
    assert report.llm["count"] == 1 and report.workflow["p50_s"] == pytest.approx(0.1)


def test_a_gzip_json_post_is_accepted(receiver: OtlpReceiver) -> None:
    body = gzip.compress(json.dumps(DOC_B).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    answer = httpx.post(receiver.traces_url, content=body, headers=headers, timeout=5)
    assert answer.status_code == 200
    assert receiver.store.trace_ids() == {TRACE_B}


def test_unusable_spans_are_a_partial_success_in_the_requests_encoding(receiver: OtlpReceiver) -> None:
    doc = _doc(TRACE_A, [("a000000000000001", None, "root", 0, 100), ("a000000000000002", None, "late", 90, 10)])
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"].append({"traceId": TRACE_A, "name": "no span id"})
    answer = httpx.post(receiver.traces_url, json=doc, timeout=5)
    assert answer.status_code == 200
    partial = answer.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 2
    assert "2 of 3 spans cannot be used" in partial["errorMessage"]

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.name = bytes.fromhex(TRACE_B), "no span id"
    span.start_time_unix_nano, span.end_time_unix_nano = T0_NS, T0_NS + 1
    answer = httpx.post(
        receiver.traces_url,
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=5,
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-protobuf"
    response = ExportTraceServiceResponse.FromString(answer.content)
    assert response.partial_success.rejected_spans == 1
    assert "missing traceId or spanId" in response.partial_success.error_message
    assert receiver.store.received == 2  # the documents are kept; the profiler skips the bad spans again


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"spans": []}', {"Content-Type": "application/json"}, 400),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400),
        (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"{}", {"Content-Type": "application/json", "Content-Encoding": "br"}, 415),
    ],
)
def test_refuses_what_it_cannot_read(
    receiver: OtlpReceiver, content: bytes, headers: dict[str, str], status: int
) -> None:
    answer = httpx.post(receiver.traces_url, content=content, headers=headers, timeout=5)
    assert answer.status_code == status
    assert answer.json()["message"]
    assert receiver.store.received == 0 and receiver.store.rejected == 1


def test_an_undecodable_protobuf_body_is_refused_with_a_protobuf_status(receiver: OtlpReceiver) -> None:
    answer = httpx.post(
        receiver.traces_url, content=b"\x0a\x05ab", headers={"Content-Type": "application/x-protobuf"}, timeout=5
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(answer.content)
    assert "not a protobuf ExportTraceServiceRequest" in status.message
    assert receiver.store.rejected == 1 and receiver.store.received == 0


def test_other_methods_and_paths(receiver: OtlpReceiver) -> None:
    wrong_method = httpx.get(receiver.traces_url, timeout=5)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert httpx.put(receiver.traces_url, content=b"{}", timeout=5).status_code == 405
    assert httpx.post(receiver.endpoint + "/v1/metrics", json={}, timeout=5).status_code == 404
    assert httpx.get(receiver.endpoint + "/nothing", timeout=5).status_code == 404
    assert receiver.store.rejected == 0


def test_health_reports_counts(receiver: OtlpReceiver) -> None:
    httpx.post(receiver.traces_url, json=DOC_A, timeout=5)
    httpx.post(receiver.traces_url, content=b"{", headers={"Content-Type": "application/json"}, timeout=5)
    health = httpx.get(receiver.endpoint + "/health", timeout=5).json()
    assert health == {"status": "ok", "received": 1, "dropped": 0, "rejected": 1}


def test_stopping_closes_the_port() -> None:
    with OtlpReceiver() as receiver:
        assert receiver.traces_url == receiver.endpoint + "/v1/traces"
        assert httpx.post(receiver.traces_url, json=DOC_A, timeout=5).status_code == 200
        assert receiver.store.wait_for([TRACE_A], timeout_s=1) == set()
        url = receiver.traces_url
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, json=DOC_B, timeout=2)
    with pytest.raises(RuntimeError, match="not running"):
        _ = receiver.endpoint


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


def test_base64_trace_ids_are_normalised_to_hex() -> None:
    store = TraceStore()
    doc = _doc(base64.b64encode(bytes.fromhex(TRACE_A)).decode(), [("a000000000000001", None, "root", 0, 10)])
    store.add(doc)
    assert store.trace_ids() == {TRACE_A}


def test_oldest_documents_are_dropped_and_counted() -> None:
    store = TraceStore(max_documents=1)
    store.add(DOC_A)
    store.add(DOC_B)
    assert store.dropped == 1 and store.received == 2
    assert store.trace_ids() == {TRACE_B}
    assert len(store.documents()) == 1


def test_wait_for_returns_once_the_traces_arrive() -> None:
    store = TraceStore()
    threading.Timer(0.1, store.add, args=(DOC_A,)).start()
    started = time.monotonic()
    assert store.wait_for([TRACE_A.upper()], timeout_s=5) == set()
    assert time.monotonic() - started < 4
    assert store.wait_for([TRACE_A, TRACE_B], timeout_s=0.2) == {TRACE_B}


def test_a_span_already_held_is_not_kept_twice_and_entry_spans_mark_arrival() -> None:
    store = TraceStore()
    store.add(DOC_A, origin="otlp-receiver")
    store.add(DOC_A, origin="traces-file")  # the same spans again, from a second source
    assert store.received == 2 and len(store.documents()) == 1
    assert len(store.spans_of(TRACE_A)) == 2
    docs, origins = store.documents_of([TRACE_A])
    assert docs == [DOC_A] and origins == {"otlp-receiver"}
    child_only = _doc(TRACE_B, [("b000000000000002", "b000000000000001", "chat m", 1, 2)])
    store.add(child_only)
    # a trace has arrived once its entry span is there: no parent, or the caller's span as parent
    assert store.missing({TRACE_A: None, TRACE_B: None}) == {TRACE_B}
    assert store.missing({TRACE_B: "b000000000000001"}) == set()


# --------------------------------------------------------------------------------------------------
# OTLP JSON lines: the file sink and the tail
# --------------------------------------------------------------------------------------------------


def test_the_receiver_can_append_every_document_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "spans.jsonl"
    sink = JsonlSink(path)
    with OtlpReceiver(sink=sink) as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.traces_url)
        assert exporter.export(_finished_spans()) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert httpx.post(receiver.traces_url, json=DOC_A, timeout=5).status_code == 200
        assert httpx.post(receiver.traces_url, content=b"{", headers={"Content-Type": "application/json"}).status_code
        health = httpx.get(receiver.endpoint + "/health", timeout=5).json()
        with pytest.raises(TypeError):
            _ = receiver.store
    sink.close()
    assert health == {"status": "ok", "received": 2, "dropped": 0, "rejected": 1}
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[1]) == DOC_A
    first = json.loads(lines[0])  # protobuf in, OTLP/JSON out: hex ids
    assert all(len(s["traceId"]) == 32 for sc in first["resourceSpans"][0]["scopeSpans"] for s in sc["spans"])
    assert sink.spans == 5
    sink.add(DOC_B)  # after close: counted, not written
    assert sink.dropped == 1 and len(path.read_text(encoding="utf-8").splitlines()) == 2


def test_the_tail_reads_complete_lines_only_and_starts_over_on_truncation(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(DOC_B) + "\n", encoding="utf-8")
    tail = FileTail(path)  # from the current end: the old line is not this run's
    assert tail.read_new() == []
    line = json.dumps(DOC_A)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line[:20])
        handle.flush()
        assert tail.read_new() == []  # half a document: wait for the rest
        handle.write(line[20:] + "\nnot json\n" + json.dumps({"hello": 1}) + "\n")
    assert tail.read_new() == [DOC_A]
    assert len(tail.problems) == 2
    path.write_text(json.dumps(DOC_B) + "\n", encoding="utf-8")  # truncated and rewritten (rotation)
    assert tail.read_new() == [DOC_B]
    assert FileTail(tmp_path / "later.jsonl").read_new() == []  # not there yet: nothing, no error
    assert FileTail(path, from_start=True).read_new() == [DOC_B]


def test_sources_wait_for_traces_from_a_growing_file(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    with span_sources(None, path) as sources:
        assert sources.receiver is None and str(path) in sources.describe

        def write() -> None:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(DOC_A) + "\n")

        threading.Timer(0.2, write).start()
        assert sources.wait_for({TRACE_A: None}, timeout_s=10, poll_s=0.05) == set()
        traces = sources.traces([TRACE_A, TRACE_B], [])
        assert [t.trace_id for t in traces] == [TRACE_A]
        docs, origin = sources.documents([TRACE_A])
        assert docs == [DOC_A] and origin == "traces-file"
        assert sources.wait_for({TRACE_B: None}, timeout_s=0.1) == {TRACE_B}


def test_sources_with_a_receiver_on_a_chosen_address() -> None:
    port = free_port()
    with span_sources(("127.0.0.1", port), None) as sources:
        assert sources.receiver is not None and sources.receiver.endpoint == f"http://127.0.0.1:{port}"
        httpx.post(sources.receiver.traces_url, json=DOC_A, timeout=5)
        assert sources.wait_for({TRACE_A: None}, timeout_s=5) == set()
        assert sources.documents([TRACE_A])[1] == "otlp-receiver"


def test_a_kept_alive_connection_does_not_outlive_the_receiver() -> None:
    """An exporter keeps its connection open between exports; after a stop, its next export must reach the
    receiver now on that port (the sweep's, after the profile's), not the stopped one."""
    port = free_port()
    with httpx.Client(timeout=5) as exporter:
        with OtlpReceiver(port=port) as first:
            assert exporter.post(first.traces_url, json=DOC_A).status_code == 200
        with OtlpReceiver(port=port) as second:
            for _ in range(3):  # the first try may meet the closed connection; an exporter retries
                try:
                    exporter.post(second.traces_url, json=DOC_B)
                    break
                except httpx.TransportError:
                    continue
            assert second.store.trace_ids() == {TRACE_B}
        assert first.store.trace_ids() == {TRACE_A}


# --------------------------------------------------------------------------------------------------
# The demo agent's /admin/otlp: used only when the AgentTarget says so, always pointed back
# --------------------------------------------------------------------------------------------------


def _admin(has_endpoint: bool, posts: list[Any]) -> httpx.Client:
    state = {"endpoint": "http://collector:4318"}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/admin/otlp" or not has_endpoint:
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.method == "POST":
            posts.append(json.loads(request.content)["endpoint"])
            state["endpoint"] = posts[-1]
        return httpx.Response(200, json=dict(state))

    return httpx.Client(base_url="http://agent.test", transport=httpx.MockTransport(handle))


def test_an_agent_with_admin_otlp_is_pointed_at_the_receiver_and_back_even_on_failure() -> None:
    posts: list[Any] = []
    settings = SpansConfig()
    with (
        _admin(True, posts) as http,
        pytest.raises(RuntimeError, match="boom"),
        collecting_spans(settings, http) as sources,
    ):
        assert sources.pointed and "/admin/otlp" in sources.describe
        assert sources.receiver is not None and posts == [sources.receiver.endpoint]
        raise RuntimeError("boom")
    assert posts[-1] == "http://collector:4318"  # put back where it was
    untouched: list[Any] = []
    with _admin(False, untouched) as http, collecting_spans(settings, http) as sources:
        assert not sources.pointed and sources.receiver is not None  # no /admin/otlp: nothing asked of the agent
    assert untouched == []
