"""The agent loop against a fake NIM: tool calls, direct answers, NIM failures, and what gets logged."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.agent.chat import ChatAgent, ChatFailed, SessionStore
from simulators.agent.logship import LogShipper
from simulators.agent.otel import STATUS_ERROR, SpanExporter
from simulators.agent.routing import Router
from simulators.agent.settings import AgentSettings


class RecordingShipper(LogShipper):
    def __init__(self) -> None:
        super().__init__("http://unused", "flywheel")
        self.records: list[tuple[str, dict[str, Any]]] = []

    def add(self, doc_id: str, record: dict[str, Any]) -> None:
        self.records.append((doc_id, record))


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "served",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
    }


class FakeNim:
    """Calls a tool when offered tools and the user mentions an order, otherwise answers in text."""

    def __init__(self, arguments: Any = '{"order_id": "ORD-10001"}', status: int = 200) -> None:
        self.arguments = arguments
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(request.headers)
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "model not loaded"})
        last = body["messages"][-1]
        if "tools" in body and "order" in last["content"]:
            calls = [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_order_status", "arguments": self.arguments},
                }
            ]
            return httpx.Response(200, json=completion({"content": None, "tool_calls": calls}, "tool_calls"))
        if last["role"] == "tool":
            return httpx.Response(200, json=completion({"content": "Your order is on its way."}))
        return httpx.Response(200, json=completion({"content": "Hello! How can I help?"}))


def make_agent(tmp_path: Path, nim: Any, **settings: Any) -> tuple[ChatAgent, RecordingShipper, SpanExporter]:
    cfg = AgentSettings(tool_latency_scale=0, **settings)
    shipper = RecordingShipper()
    exporter = SpanExporter(tmp_path / "spans.jsonl")
    http = httpx.AsyncClient(transport=httpx.MockTransport(nim))
    agent = ChatAgent(
        cfg, "http://nim.test", http, Router(cfg.model, cfg.canary_model, cfg.canary_weight), shipper, exporter
    )
    return agent, shipper, exporter


def spans_of(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()
    return json.loads(lines[-1])["resourceSpans"][0]["scopeSpans"][0]["spans"]


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


async def test_tool_call_then_reply_logs_two_calls_with_their_workloads(tmp_path: Path) -> None:
    nim = FakeNim()
    agent, shipper, _ = make_agent(tmp_path, nim)
    outcome = await agent.chat("where is order ORD-10001?", "u1", "s1")
    assert outcome.reply == "Your order is on its way."
    assert outcome.model == "meta/llama-3.3-70b-instruct"
    assert [t.name for t in outcome.tool_calls] == ["get_order_status"]
    assert outcome.tool_calls[0].ok and outcome.tool_calls[0].output["order_id"] == "ORD-10001"
    assert [c.workload_id for c in outcome.llm_calls] == ["customer-support", "customer-support-reply"]
    assert all(c.input_tokens == 30 and c.output_tokens == 5 and c.end_s >= c.start_s for c in outcome.llm_calls)

    first, second = nim.requests
    assert first["tools"] and first["tool_choice"] == "auto"
    assert "tools" not in second
    assert second["messages"][-2]["tool_calls"][0] == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_order_status", "arguments": '{"order_id": "ORD-10001"}'},
    }
    assert second["messages"][-1]["role"] == "tool" and second["messages"][-1]["tool_call_id"] == "call_a"

    assert [doc_id for doc_id, _ in shipper.records] == [f"{outcome.trace_id}-1", f"{outcome.trace_id}-2"]
    for (_, record), sent in zip(shipper.records, nim.requests, strict=True):
        assert set(record) == {"timestamp", "workload_id", "client_id", "request", "response"}  # the blueprint's
        assert record["request"] == sent and record["client_id"] == "demo"
        assert datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%SZ")  # ISO 8601, UTC
    assert shipper.records[0][1]["response"]["choices"][0]["message"]["tool_calls"]

    spans = spans_of(tmp_path / "spans.jsonl")
    root = spans[0]
    assert root["name"] == "agent.chat" and root["traceId"] == outcome.trace_id
    children = spans[1:]
    assert [s["name"] for s in children] == [
        "chat meta/llama-3.3-70b-instruct",
        "execute_tool get_order_status",
        "chat meta/llama-3.3-70b-instruct",
    ]
    assert all(s["parentSpanId"] == root["spanId"] for s in children)
    assert attrs(children[0])["gen_ai.usage.input_tokens"] == "30"
    assert attrs(children[1])["gen_ai.tool.name"] == "get_order_status"
    assert attrs(children[1])["gen_ai.operation.name"] == "execute_tool"
    assert nim.headers[0]["traceparent"] == f"00-{outcome.trace_id}-{children[0]['spanId']}-01"


async def test_chit_chat_is_one_call_and_sessions_keep_history(tmp_path: Path) -> None:
    nim = FakeNim()
    agent, shipper, _ = make_agent(tmp_path, nim)
    outcome = await agent.chat("hi there", "u1", "s1")
    assert outcome.reply == "Hello! How can I help?" and not outcome.tool_calls and len(outcome.llm_calls) == 1
    assert [r["workload_id"] for _, r in shipper.records] == ["customer-support"]
    await agent.chat("thanks", "u1", "s1")
    roles = [m["role"] for m in nim.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    await agent.chat("thanks", "u1", None)
    assert [m["role"] for m in nim.requests[-1]["messages"]] == ["system", "user"]


async def test_arguments_as_an_object_are_sent_back_as_a_json_string(tmp_path: Path) -> None:
    nim = FakeNim(arguments={"order_id": "ORD-10001"})
    agent, shipper, _ = make_agent(tmp_path, nim)
    outcome = await agent.chat("order ORD-10001 status", "u1")
    assert outcome.tool_calls[0].ok
    assert json.loads(nim.requests[1]["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == {
        "order_id": "ORD-10001"
    }
    assert shipper.records[0][1]["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == {
        "order_id": "ORD-10001"
    }


async def test_bad_tool_arguments_reach_the_model_as_an_error(tmp_path: Path) -> None:
    nim = FakeNim(arguments='{"order_id": "yesterday"}')
    agent, _, _ = make_agent(tmp_path, nim)
    outcome = await agent.chat("my order is late", "u1")
    assert not outcome.tool_calls[0].ok
    assert "error" in json.loads(nim.requests[1]["messages"][-1]["content"])
    tool_span = spans_of(tmp_path / "spans.jsonl")[2]
    assert tool_span["status"]["code"] == STATUS_ERROR
    assert agent.stats.tool_errors == 1


async def test_nim_failure_raises_with_a_clear_error_and_still_writes_the_trace(tmp_path: Path) -> None:
    agent, shipper, _ = make_agent(tmp_path, FakeNim(status=503))
    with pytest.raises(ChatFailed) as failed:
        await agent.chat("hello", "u1")
    assert failed.value.error.kind == "http_status" and failed.value.error.status == 503
    assert "503" in failed.value.error.message
    assert shipper.records == []
    spans = spans_of(tmp_path / "spans.jsonl")
    assert spans[0]["traceId"] == failed.value.trace_id
    assert spans[0]["status"]["code"] == STATUS_ERROR and spans[1]["status"]["code"] == STATUS_ERROR
    assert agent.stats.errors == {"http_status": 1}


async def test_a_dropped_connection_or_a_5xx_is_sent_again_as_an_openai_client_does(tmp_path: Path) -> None:
    nim = FakeNim()
    failures: list[int | None] = [503, None]  # a 5xx, then a connection dropped by the server

    def flaky(request: httpx.Request) -> httpx.Response:
        if failures:
            status = failures.pop(0)
            if status is None:
                raise httpx.ReadError("connection reset", request=request)
            return httpx.Response(status, json={"detail": "busy"})
        return nim(request)

    agent, shipper, _ = make_agent(tmp_path, flaky)
    outcome = await agent.chat("hello", "u1")
    assert outcome.reply == "Hello! How can I help?" and len(outcome.llm_calls) == 1
    assert len(nim.requests) == 1 and not failures and len(shipper.records) == 1
    assert agent.stats.errors == {}

    refused = FakeNim(status=404)  # a client error is final: sent once
    agent, _, _ = make_agent(tmp_path, refused)
    with pytest.raises(ChatFailed):
        await agent.chat("hello", "u1")
    assert len(refused.requests) == 1


async def test_unreachable_and_malformed_nim(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    agent, _, _ = make_agent(tmp_path, refuse)
    with pytest.raises(ChatFailed) as failed:
        await agent.chat("hello", "u1")
    assert failed.value.error.kind == "connect"

    agent, _, _ = make_agent(tmp_path, lambda request: httpx.Response(200, json={"choices": []}))
    with pytest.raises(ChatFailed) as failed:
        await agent.chat("hello", "u1")
    assert failed.value.error.kind == "bad_response"


async def test_canary_users_get_the_canary_model(tmp_path: Path) -> None:
    nim = FakeNim()
    agent, _, _ = make_agent(tmp_path, nim, canary_model="small", canary_weight=1.0)
    outcome = await agent.chat("hi", "u1")
    assert outcome.model == "small" and outcome.route == "canary" and nim.requests[0]["model"] == "small"


def test_session_store_is_bounded() -> None:
    store = SessionStore(max_messages=2, max_sessions=2)
    store.append("a", {"role": "user", "content": "1"}, {"role": "assistant", "content": "2"})
    store.append("a", {"role": "user", "content": "3"})
    assert [m["content"] for m in store.history("a")] == ["2", "3"]
    store.append("b", {"role": "user", "content": "x"})
    store.append("c", {"role": "user", "content": "y"})
    assert store.history("a") == [] and store.history("c")
