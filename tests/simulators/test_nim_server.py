"""The NIM simulator over HTTP: OpenAI shapes, errors, streaming, admin models, references from the log server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from simulators.nim.server import create_app
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port

pytestmark = pytest.mark.integration

TEACHER = "meta/llama-3.3-70b-instruct"
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Look up where an order is.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_products",
        "description": "Search the product catalogue.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
TOOLS = [ORDER_TOOL, SEARCH_TOOL]


def _fake_logserver(records: list[dict[str, Any]]) -> FastAPI:
    """The two Elasticsearch endpoints the NIM simulator reads: ``_count`` and ``_search`` (range + sort)."""
    app = FastAPI()

    @app.get("/{index}/_count", response_model=None)
    async def count(index: str) -> dict[str, int] | JSONResponse:
        if index != "flywheel":
            return JSONResponse({"error": "index_not_found_exception"}, status_code=404)
        return {"count": len(records)}

    @app.post("/{index}/_search", response_model=None)
    async def search(index: str, request: Request) -> dict[str, Any] | JSONResponse:
        if index != "flywheel":
            return JSONResponse({"error": "index_not_found_exception"}, status_code=404)
        body = await request.json()
        hits = [{"_id": str(i), "_source": r, "sort": [r["timestamp"]]} for i, r in enumerate(records)]
        floor = body.get("query", {}).get("range", {}).get("timestamp", {}).get("gte")
        if floor is not None:
            hits = [h for h in hits if h["_source"]["timestamp"] >= floor]
        hits.sort(key=lambda h: h["_source"]["timestamp"])
        return {"hits": {"total": {"value": len(hits)}, "hits": hits[: body.get("size", 10)]}}

    return app


def _record(
    timestamp: float, messages: list[dict[str, Any]], answer: dict[str, Any], model: str = TEACHER
) -> dict[str, Any]:
    return {
        "timestamp": timestamp,
        "workload_id": "support",
        "client_id": "test",
        "request": {"model": model, "messages": messages, "tools": TOOLS},
        "response": {"choices": [{"message": answer}]},
    }


LOGGED_MESSAGES = [{"role": "user", "content": "hello there, anything new for me?"}]
LOGGED_ANSWER = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {
            "id": "x",
            "type": "function",
            "function": {"name": "search_products", "arguments": '{"query": "new arrivals"}'},
        }
    ],
}


@pytest.fixture
def stack() -> Iterator[tuple[httpx.Client, list[dict[str, Any]]]]:
    records = [
        _record(1.0, LOGGED_MESSAGES, LOGGED_ANSWER),
        _record(1.0, [{"role": "user", "content": "other"}], LOGGED_ANSWER, model="x/y-1b"),
    ]
    with ThreadedServer(_fake_logserver(records)) as logserver:
        cfg = LocalStackConfig(
            ports=Ports(logserver=logserver.port, nim=free_port()),
            nim={
                "models": {TEACHER: {"p_base": 1.0}},
                "log_refresh_min_interval_s": 0,
                "log_page_size": 1,
                "latency": {"time_scale": 0},
                "embedding_dim": 64,
            },
        )
        with ThreadedServer(create_app(cfg)) as nim, httpx.Client(base_url=nim.url, timeout=10) as client:
            yield client, records


def _chat(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": TEACHER, **body})


def test_models_health_and_openai_errors(stack: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, _ = stack
    assert client.get("/v1/health/ready").status_code == 200
    assert client.get("/v1/health/live").status_code == 200
    models = client.get("/v1/models")
    assert models.headers["X-Flywheel-Simulated"] == "true"
    entries = {m["id"]: m for m in models.json()["data"]}
    assert set(entries) == {TEACHER, "nvidia/llama-3.2-nv-embedqa-1b-v2"}
    assert set(entries[TEACHER]) == {"id", "object", "created", "owned_by", "root", "parent"}

    missing = _chat(client, model="nope/x-1b", messages=[{"role": "user", "content": "hi"}])
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404 and "nope/x-1b" in missing.json()["error"]["message"]
    bad_json = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    for body in ({"messages": []}, {"messages": [{"role": "wizard", "content": "x"}]}, {"messages": "hi"}):
        response = _chat(client, **body)
        assert response.status_code == 400, body
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    forced = _chat(
        client,
        messages=[{"role": "user", "content": "x"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "nope"}},
    )
    assert forced.status_code == 400
    wrong_kind = client.post("/v1/embeddings", json={"model": TEACHER, "input": "x"})
    assert wrong_kind.status_code == 400


def test_tool_call_response_shape(stack: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, _ = stack
    response = _chat(
        client, messages=[{"role": "user", "content": "Where is my order ORD-10234?"}], tools=TOOLS, tool_choice="auto"
    )
    assert response.status_code == 200
    body = response.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"]
    assert isinstance(call["function"]["arguments"], str)
    assert json.loads(call["function"]["arguments"]) == {"order_id": "ORD-10234"}
    assert choice["message"]["content"] is None
    usage = body["usage"]
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"] > 0
    )
    assert body["nvext"]["simulated"] is True
    assert body["nvext"]["quality"]["reference"] == "policy"
    assert body["object"] == "chat.completion" and body["model"] == TEACHER

    text = _chat(client, messages=[{"role": "user", "content": "hi"}], tools=TOOLS, tool_choice="none", max_tokens=3)
    assert text.json()["choices"][0]["finish_reason"] == "length"
    assert text.json()["usage"]["completion_tokens"] == 3


def _events(response: httpx.Response) -> list[Any]:
    lines = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_streaming_text_and_tool_calls(stack: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, _ = stack
    response = _chat(
        client,
        messages=[{"role": "user", "content": "Where is my order ORD-10234?"}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    arguments = "".join(
        c["function"].get("arguments", "")
        for e in events
        if e["choices"]
        for c in e["choices"][0]["delta"].get("tool_calls", [])
    )
    assert json.loads(arguments) == {"order_id": "ORD-10234"}
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finishes[-1] == "tool_calls"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0

    text = _events(_chat(client, messages=[{"role": "user", "content": "hi"}], stream=True))
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in text)
    assert content == "Hello! How can I help you today?"
    assert text[-1]["choices"][0]["finish_reason"] == "stop"


def test_logged_teacher_answers_are_the_reference(stack: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, records = stack
    first = _chat(client, messages=LOGGED_MESSAGES, tools=TOOLS).json()
    assert first["nvext"]["quality"]["reference"] == "log"
    assert json.loads(first["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {
        "query": "new arrivals"
    }

    # The same conversation with an ICL block (docs/development.md's format) and other whitespace still finds
    # the logged answer.
    block = "\n\n".join(
        [
            "### In-context examples",
            "Here are examples of how you should respond.",
            "Example 1:\nuser: hi\nassistant: Hello!",
            'Example 2:\nuser: where is ORD-1?\nassistant: \ntool calls: [{"arguments": {}, "name": "x"}]',
            "### End of in-context examples",
        ]
    )
    with_icl = [
        {"role": "system", "content": block},
        {"role": "user", "content": "hello  there, anything new for me?"},
    ]
    icl = _chat(client, messages=with_icl, tools=TOOLS).json()
    assert icl["nvext"]["quality"] | {"p": None} == {
        "reference": "log", "icl_examples": 2, "p": None, "followed_reference": True, "mistake": None}  # fmt: skip

    # Answers logged by other models are not references; a record logged later is found on a miss.
    other = _chat(client, messages=[{"role": "user", "content": "other"}], tools=TOOLS).json()
    assert other["nvext"]["quality"]["reference"] == "policy"
    later = [{"role": "user", "content": "a brand new question"}]
    records.append(_record(2.0, later, {"role": "assistant", "content": "A logged reply."}))
    assert _chat(client, messages=later, tools=TOOLS).json()["choices"][0]["message"]["content"] == "A logged reply."
    stats = client.get("/admin/models").json()["references"]
    assert stats == {"conversations": 2, "records_read": 3, "errors": 0}


def test_admin_models_make_lora_adapters_servable(stack: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, _ = stack
    lora_id = "dfwbp/customized-meta-llama-3.2-1b-instruct@cust-abc123"
    base = client.post(
        "/admin/models", json={"id": "meta/llama-3.2-1b-instruct", "root": None, "parent": None, "lora": None}
    )
    assert base.status_code == 201
    created = client.post(
        "/admin/models",
        json={
            "id": lora_id,
            "root": "meta/llama-3.2-1b-instruct",
            "parent": "meta/llama-3.2-1b-instruct",
            "lora": {"train_records": 800, "epochs": 2},
        },
    )
    assert created.status_code == 201
    described = created.json()
    assert described["quality"]["size_b"] == 1.0 and described["quality"]["p"] > 0.98
    assert described["latency"]["server"] == "meta/llama-3.2-1b-instruct"
    assert client.post("/admin/models", json={"id": lora_id, "lora": {"train_records": 10}}).status_code == 200
    assert client.post("/admin/models", json={"id": "x", "bogus": 1}).status_code == 422

    listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert listed[lora_id]["root"] == "meta/llama-3.2-1b-instruct"
    answer = client.post(
        "/v1/chat/completions", json={"model": lora_id, "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status_code == 200
    admin = {m["id"]: m for m in client.get("/admin/models").json()["data"]}
    assert admin["meta/llama-3.2-1b-instruct"]["quality"]["p"] == pytest.approx(0.60)

    assert client.delete(f"/admin/models/{lora_id}").status_code == 200
    assert client.delete(f"/admin/models/{lora_id}").status_code == 404
    gone = client.post("/v1/chat/completions", json={"model": lora_id, "messages": [{"role": "user", "content": "hi"}]})
    assert gone.status_code == 404


def test_judge_prompts_and_embeddings(stack: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, _ = stack
    truth = [{"function": {"name": "get_order_status", "arguments": '{"order_id": "ORD-1"}'}}]
    judge = _chat(
        client,
        messages=[
            {"role": "system", "content": "Judge the tool call. Output RATING: 0 or 1 and EXPLANATION."},
            {"role": "user", "content": f"*Ground Truth*: {truth}\n*Prediction*: {truth}"},
        ],
    ).json()
    assert judge["choices"][0]["message"]["content"].startswith("RATING: 1")
    assert judge["nvext"]["quality"] == {"judge": "tool_calling"}

    embedded = client.post(
        "/v1/embeddings",
        json={"model": "nvidia/llama-3.2-nv-embedqa-1b-v2", "input": ["a b", "c"], "input_type": "query"},
    ).json()
    assert [d["index"] for d in embedded["data"]] == [0, 1]
    assert len(embedded["data"][0]["embedding"]) == 64
    assert embedded["usage"]["prompt_tokens"] == embedded["usage"]["total_tokens"] > 0
    encoded = client.post(
        "/v1/embeddings",
        json={
            "model": "nvidia/llama-3.2-nv-embedqa-1b-v2",
            "input": "a b",
            "encoding_format": "base64",
            "dimensions": 32,
        },
    ).json()
    assert isinstance(encoded["data"][0]["embedding"], str)


def test_works_without_a_log_server_and_paces_requests() -> None:
    cfg = LocalStackConfig(
        ports=Ports(logserver=free_port(), nim=free_port()),
        nim={
            "log_timeout_s": 0.5,
            "latency": {
                "time_scale": 1.0,
                "default": {
                    "overhead_s": 0.0,
                    "prefill_s_per_token": 0.0,
                    "decode_s_per_token": 0.01,
                    "decode_s_per_token_per_request": 0.0,
                    "max_batch": 1,
                },
            },
        },
    )
    with ThreadedServer(create_app(cfg)) as nim, httpx.Client(base_url=nim.url, timeout=10) as client:
        body = {"model": TEACHER, "messages": [{"role": "user", "content": "hi"}]}
        first = client.post("/v1/chat/completions", json=body).json()
        assert first["nvext"]["quality"]["reference"] == "policy"
        assert first["nvext"]["timing"]["decode_s"] > 0

        async def three_at_once() -> list[dict[str, Any]]:
            # sent together from one event loop, so they arrive together however busy the machine is
            async with httpx.AsyncClient(base_url=nim.url, timeout=60) as together:
                answers = await asyncio.gather(*(together.post("/v1/chat/completions", json=body) for _ in range(3)))
            return [answer.json()["nvext"]["timing"] for answer in answers]

        timings = asyncio.run(three_at_once())
        assert max(t["queue_s"] for t in timings) > 0.05  # one slot: the others waited in the FIFO queue
