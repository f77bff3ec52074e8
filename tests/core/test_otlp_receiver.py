"""The OTLP/HTTP JSON receiver: what it accepts and refuses, what it keeps, and waiting for expected traces."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from agent_flywheel.otlp_receiver import OtlpReceiver, TraceStore, create_receiver_app
from agent_flywheel.profiling import Trace, analyze

TRACE_A = "5b8efff798038103d269b633813fc60c"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


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
def client() -> tuple[TestClient, TraceStore]:
    store = TraceStore()
    return TestClient(create_receiver_app(store)), store


def test_accepts_otlp_json_and_keeps_the_spans(client: tuple[TestClient, TraceStore]) -> None:
    http, store = client
    answer = http.post("/v1/traces", json=DOC_A)
    assert answer.status_code == 200 and answer.json() == {}
    assert store.trace_ids() == {TRACE_A}
    spans = store.spans()
    assert {s.name for s in spans} == {"agent.chat", "chat m"}
    report = analyze([Trace(TRACE_A, spans)])
    assert report.llm["count"] == 1 and report.workflow["p50_s"] == pytest.approx(0.1)


def test_accepts_gzip_bodies(client: tuple[TestClient, TraceStore]) -> None:
    http, store = client
    body = gzip.compress(json.dumps(DOC_B).encode())
    answer = http.post(
        "/v1/traces", content=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert answer.status_code == 200
    assert store.trace_ids() == {TRACE_B}


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"\x0a\x02", {"Content-Type": "application/x-protobuf"}, 415),
        (b"{not json", {"Content-Type": "application/json"}, 400),
        (b'{"spans": []}', {"Content-Type": "application/json"}, 400),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400),
        (b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}, 400),
    ],
)
def test_refuses_what_it_cannot_read(
    client: tuple[TestClient, TraceStore], content: bytes, headers: dict[str, str], status: int
) -> None:
    http, store = client
    answer = http.post("/v1/traces", content=content, headers=headers)
    assert answer.status_code == status
    assert answer.json()["message"]
    assert store.received == 0 and store.rejected == 1


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


def test_health_reports_counts(client: tuple[TestClient, TraceStore]) -> None:
    http, _ = client
    http.post("/v1/traces", json=DOC_A)
    assert http.get("/health").json() == {"status": "ok", "received": 1, "dropped": 0, "rejected": 0}


@pytest.mark.integration
def test_receiver_serves_on_loopback() -> None:
    with OtlpReceiver() as receiver:
        assert receiver.traces_url == receiver.endpoint + "/v1/traces"
        assert httpx.post(receiver.traces_url, json=DOC_A, timeout=5).status_code == 200
        assert receiver.store.wait_for([TRACE_A], timeout_s=1) == set()
    with pytest.raises(httpx.ConnectError):
        httpx.post(receiver.traces_url, json=DOC_B, timeout=2)
