"""The demo agent over real HTTP: a stub NIM, the log server (real one when present, else a stub), spans.

Checks a chat end to end (reply, both LLM calls logged in the blueprint's record format, a trace whose
children point at the root), the admin API (routing, OTLP, flush, stats), and that a log-server outage
or a NIM failure never breaks the service.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from simulators.agent.server import create_app
from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port

pytestmark = pytest.mark.integration

TEACHER = "meta/llama-3.3-70b-instruct"
REAL_LOGSERVER = importlib.util.find_spec("simulators.logserver.server") is not None


# --------------------------------------------------------------------------------------------------
# Stubs
# --------------------------------------------------------------------------------------------------


def _completion(model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
    }


class StubNim:
    """Calls get_order_status when offered tools and an order is mentioned, then writes a text reply.

    Also collects OTLP posts on ``/v1/traces``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], str | None]] = []
        self.traces: list[dict[str, Any]] = []
        self.app = FastAPI()

        @self.app.post("/v1/chat/completions")
        async def completions(request: Request) -> Response:
            body = await request.json()
            self.calls.append((body, request.headers.get("traceparent")))
            last = body["messages"][-1]
            if "FAIL" in str(last.get("content")):
                return JSONResponse(status_code=500, content={"error": "the model crashed"})
            if "tools" in body and "ORD-" in last["content"]:
                order = "ORD-" + last["content"].split("ORD-")[1][:5]
                call = {"id": "call_1", "type": "function",
                        "function": {"name": "get_order_status", "arguments": json.dumps({"order_id": order})}}  # fmt: skip
                return JSONResponse(_completion(body["model"], {"content": None, "tool_calls": [call]}, "tool_calls"))
            if last["role"] == "tool":
                status = json.loads(last["content"]).get("status", "unknown")
                return JSONResponse(_completion(body["model"], {"content": f"Your order is {status}."}, "stop"))
            return JSONResponse(_completion(body["model"], {"content": "Hi! How can I help you today?"}, "stop"))

        @self.app.post("/v1/traces")
        async def traces(request: Request) -> dict[str, Any]:
            self.traces.append(await request.json())
            return {}


class StubLogServer:
    """Enough of Elasticsearch for the official client: ``GET/HEAD /``, index exists/create, ``_bulk``, ``_refresh``."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.indices: dict[str, dict[str, Any]] = {}
        self.app = FastAPI()

        @self.app.middleware("http")
        async def product(request: Request, call_next: Callable[[Request], Any]) -> Response:
            response: Response = await call_next(request)
            response.headers["X-Elastic-Product"] = "Elasticsearch"
            return response

        @self.app.api_route("/", methods=["GET", "HEAD"])
        async def info() -> dict[str, Any]:
            return {
                "name": "stub",
                "cluster_name": "stub",
                "version": {"number": "9.0.0"},
                "tagline": "You Know, for Search",
            }

        @self.app.api_route("/_bulk", methods=["POST", "PUT"])
        async def bulk(request: Request) -> dict[str, Any]:
            lines = [json.loads(line) for line in (await request.body()).decode().splitlines() if line.strip()]
            items = []
            for action, source in zip(lines[::2], lines[1::2], strict=True):
                meta = action["index"]
                self.docs[meta["_id"]] = source
                items.append(
                    {"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 201, "result": "created"}}
                )
            return {"took": 1, "errors": False, "items": items}

        @self.app.head("/{index}")
        async def exists(index: str) -> Response:
            return Response(status_code=200 if index in self.indices else 404)

        @self.app.put("/{index}")
        async def create(index: str, request: Request) -> dict[str, Any]:
            self.indices[index] = await request.json()
            return {"acknowledged": True, "shards_acknowledged": True, "index": index}

        @self.app.post("/{index}/_refresh")
        async def refresh(index: str) -> dict[str, Any]:
            return {"_shards": {"total": 1, "successful": 1, "failed": 0}}


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nim() -> Iterator[tuple[StubNim, ThreadedServer]]:
    stub = StubNim()
    with ThreadedServer(stub.app) as server:
        yield stub, server


def _config(tmp: Path, nim_port: int, logserver_port: int, **agent: Any) -> LocalStackConfig:
    return LocalStackConfig(
        state_dir=str(tmp),
        ports=Ports(nim=nim_port, logserver=logserver_port, agent=free_port()),
        agent={"tool_latency_scale": 0, "log_flush_interval_s": 0.1, **agent},
    )


@dataclass
class LogStore:
    """The log server under test, its stored documents by id, and the mapping of the log index."""

    server: ThreadedServer
    docs: Callable[[], dict[str, Any]]
    mapping: Callable[[], dict[str, Any]]


@pytest.fixture(scope="module")
def logstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogStore]:
    if REAL_LOGSERVER:
        from elasticsearch import Elasticsearch

        from simulators.logserver.server import create_app as create_logserver

        cfg = LocalStackConfig(state_dir=str(tmp_path_factory.mktemp("logserver")))
        with ThreadedServer(create_logserver(cfg)) as server, Elasticsearch(server.url) as client:

            def docs() -> dict[str, Any]:
                client.indices.refresh(index="flywheel")
                hits = client.search(index="flywheel", query={"match_all": {}}, size=1000)["hits"]["hits"]
                return {hit["_id"]: hit["_source"] for hit in hits}

            def mapping() -> dict[str, Any]:
                return dict(client.indices.get_mapping(index="flywheel")["flywheel"]["mappings"])

            yield LogStore(server, docs, mapping)
    else:
        stub = StubLogServer()
        with ThreadedServer(stub.app) as server:
            yield LogStore(server, lambda: dict(stub.docs), lambda: stub.indices["flywheel"]["mappings"])


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    nim: tuple[StubNim, ThreadedServer],
    logstore: LogStore,
) -> Iterator[tuple[ThreadedServer, LocalStackConfig]]:
    cfg = _config(tmp_path_factory.mktemp("agent"), nim[1].port, logstore.server.port)
    with ThreadedServer(create_app(cfg), port=cfg.ports.agent) as server:
        yield server, cfg


def _last_trace(cfg: LocalStackConfig) -> list[dict[str, Any]]:
    lines = (cfg.state_path() / "agent" / "spans.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["resourceSpans"][0]["scopeSpans"][0]["spans"]


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_chat_end_to_end(
    agent: tuple[ThreadedServer, LocalStackConfig],
    nim: tuple[StubNim, ThreadedServer],
    logstore: LogStore,
) -> None:
    server, cfg = agent
    before = len(nim[0].calls)
    response = httpx.post(
        f"{server.url}/v1/chat", json={"message": "Where is ORD-10001?", "user_id": "u-1"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Flywheel-Simulated"] == "true"
    answer = response.json()
    assert answer["simulated"] is True and answer["model"] == TEACHER
    assert answer["reply"].startswith("Your order is ") and "unknown" not in answer["reply"]
    assert [c["name"] for c in answer["tool_calls"]] == ["get_order_status"]
    assert answer["tool_calls"][0]["result"]["order_id"] == "ORD-10001"
    assert len(answer["llm_calls"]) == 2
    for call in answer["llm_calls"]:
        assert set(call) >= {"model", "latency_s", "input_tokens", "output_tokens", "start_s", "end_s"}
        assert call["input_tokens"] == 40 and call["output_tokens"] == 9 and call["end_s"] >= call["start_s"]

    flushed = httpx.post(f"{server.url}/admin/flush", timeout=10)
    assert flushed.status_code == 200 and flushed.json()["ok"] is True
    trace_id = answer["trace_id"]
    docs = {k: v for k, v in logstore.docs().items() if k.startswith(trace_id)}
    assert sorted(docs) == [f"{trace_id}-1", f"{trace_id}-2"]
    sent = [body for body, _ in nim[0].calls[before:]]
    first, second = docs[f"{trace_id}-1"], docs[f"{trace_id}-2"]
    for record, request in ((first, sent[0]), (second, sent[1])):
        assert set(record) == {"timestamp", "workload_id", "client_id", "request", "response"}
        logged_at = datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert record["client_id"] == "demo" and abs(logged_at.timestamp() - time.time()) < 60
        assert record["request"] == request
        assert record["response"]["object"] == "chat.completion"
    assert (first["workload_id"], second["workload_id"]) == ("customer-support", "customer-support-reply")
    mapping = logstore.mapping()  # created before the first write, as the blueprint creates it
    assert mapping["dynamic"] == "strict" and mapping["properties"]["timestamp"] == {"type": "date"}
    assert first["request"]["tool_choice"] == "auto" and first["request"]["tools"]
    assert first["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_order_status"

    spans = _last_trace(cfg)
    root = spans[0]
    assert root["name"] == "agent.chat" and root["traceId"] == trace_id and "parentSpanId" not in root
    children = spans[1:]
    assert [_attrs(s)["gen_ai.operation.name"] for s in children] == ["chat", "execute_tool", "chat"]
    assert all(s["parentSpanId"] == root["spanId"] and s["traceId"] == trace_id for s in children)
    llm = _attrs(children[0])
    assert llm["gen_ai.request.model"] == TEACHER and llm["gen_ai.usage.input_tokens"] == "40"
    assert llm["gen_ai.system"] and llm["gen_ai.usage.output_tokens"] == "9"
    assert _attrs(children[1])["gen_ai.tool.name"] == "get_order_status"
    assert nim[0].calls[before][1] == f"00-{trace_id}-{children[0]['spanId']}-01"


def test_chit_chat_is_one_call_and_a_nim_failure_is_a_502(
    agent: tuple[ThreadedServer, LocalStackConfig], nim: tuple[StubNim, ThreadedServer]
) -> None:
    server, cfg = agent
    hello = httpx.post(
        f"{server.url}/v1/chat", json={"message": "hello!", "user_id": "u-2", "session_id": "s"}, timeout=10
    )
    assert hello.status_code == 200
    assert hello.json()["reply"] == "Hi! How can I help you today?" and len(hello.json()["llm_calls"]) == 1
    assert hello.json()["tool_calls"] == []

    failed = httpx.post(f"{server.url}/v1/chat", json={"message": "FAIL please", "user_id": "u-2"}, timeout=10)
    assert failed.status_code == 502
    error = failed.json()
    assert error["error"]["type"] == "nim_error" and error["error"]["kind"] == "http_status"
    assert error["error"]["upstream_status"] == 500 and "Traceback" not in failed.text
    assert _last_trace(cfg)[0]["traceId"] == error["trace_id"]

    invalid = httpx.post(f"{server.url}/v1/chat", json={"message": "", "user_id": "u-2"}, timeout=10)
    assert invalid.status_code == 422
    stats = httpx.get(f"{server.url}/admin/stats", timeout=10).json()
    assert stats["chat"]["errors"].get("http_status", 0) >= 1 and stats["log"]["write_failures"] == 0


def test_routing_splits_users_and_can_be_cleared(agent: tuple[ThreadedServer, LocalStackConfig]) -> None:
    server, _ = agent
    url = server.url
    assert httpx.get(f"{url}/admin/routing").json() == {
        "teacher_model": TEACHER,
        "canary_model": None,
        "canary_weight": 0.0,
    }
    state = httpx.post(f"{url}/admin/routing", json={"canary_model": "small-1b", "canary_weight": 0.5}).json()
    assert state["canary_model"] == "small-1b" and state["canary_weight"] == 0.5
    models = {
        u: httpx.post(f"{url}/v1/chat", json={"message": "hi", "user_id": f"user-{u}"}, timeout=10).json()["model"]
        for u in range(16)
    }
    assert set(models.values()) == {TEACHER, "small-1b"}
    again = httpx.post(f"{url}/v1/chat", json={"message": "hi", "user_id": "user-3"}, timeout=10).json()
    assert again["model"] == models[3] and again["route"] == ("canary" if models[3] == "small-1b" else "baseline")
    assert httpx.post(f"{url}/admin/routing", json={"canary_model": "x", "canary_weight": 1.5}).status_code == 422
    cleared = httpx.post(f"{url}/admin/routing", json={"canary_model": None, "canary_weight": 0}).json()
    assert cleared["canary_model"] is None
    assert (
        httpx.post(f"{url}/v1/chat", json={"message": "hi", "user_id": "user-3"}, timeout=10).json()["model"] == TEACHER
    )


def test_otlp_export_can_be_switched_on_at_run_time(
    agent: tuple[ThreadedServer, LocalStackConfig], nim: tuple[StubNim, ThreadedServer]
) -> None:
    server, _ = agent
    assert httpx.post(f"{server.url}/admin/otlp", json={"endpoint": nim[1].url}).json()["endpoint"] == nim[1].url
    answer = httpx.post(f"{server.url}/v1/chat", json={"message": "hi", "user_id": "u-9"}, timeout=10).json()
    httpx.post(f"{server.url}/admin/flush", timeout=10)  # also waits for OTLP posts in flight
    httpx.post(f"{server.url}/admin/otlp", json={"endpoint": None})
    exported = [
        t for t in nim[0].traces if t["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == answer["trace_id"]
    ]
    assert len(exported) == 1
    resource = exported[0]["resourceSpans"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "demo-agent"}} in resource
    assert httpx.get(f"{server.url}/admin/stats").json()["spans"]["otlp_sent"] >= 1


def test_traffic_generator_against_the_agent(
    agent: tuple[ThreadedServer, LocalStackConfig], logstore: LogStore
) -> None:
    server, _ = agent
    report = run_traffic(server.url, requests=24, concurrency=4, seed=5)
    assert report.ok == 24 and report.errors == {}
    assert report.by_model == {TEACHER: 24} and report.llm_calls >= 24
    assert report.to_dict()["latency_s"]["max"] > 0
    assert httpx.post(f"{server.url}/admin/flush", timeout=10).json()["ok"] is True
    stats = httpx.get(f"{server.url}/admin/stats").json()["log"]
    assert stats["pending"] == 0 and stats["records_indexed"] == stats["records_queued"]


def test_log_server_outage_does_not_break_chats(tmp_path: Path, nim: tuple[StubNim, ThreadedServer]) -> None:
    cfg = _config(tmp_path, nim[1].port, free_port(), log_timeout_s=1.0)
    with ThreadedServer(create_app(cfg), port=cfg.ports.agent) as server:
        answer = httpx.post(
            f"{server.url}/v1/chat", json={"message": "Where is ORD-10002?", "user_id": "u"}, timeout=10
        )
        assert answer.status_code == 200 and len(answer.json()["llm_calls"]) == 2
        flushed = httpx.post(f"{server.url}/admin/flush", timeout=10)
        assert flushed.status_code == 503
        assert flushed.json()["error"]["type"] == "log_write_failed" and flushed.json()["pending"] == 2
        log = httpx.get(f"{server.url}/admin/stats").json()["log"]
        assert log["write_failures"] >= 1 and log["records_failed"] >= 2 and log["pending"] == 2
        assert log["last_error"]


def test_buffered_records_are_written_at_shutdown(
    tmp_path: Path,
    nim: tuple[StubNim, ThreadedServer],
    logstore: LogStore,
) -> None:
    cfg = _config(tmp_path, nim[1].port, logstore.server.port, log_flush_interval_s=60, log_batch_size=1000)
    server = ThreadedServer(create_app(cfg), port=cfg.ports.agent).start()
    try:
        answer = httpx.post(
            f"{server.url}/v1/chat", json={"message": "Where is ORD-10003?", "user_id": "u"}, timeout=10
        )
        trace_id = answer.json()["trace_id"]
        assert httpx.get(f"{server.url}/admin/stats").json()["log"]["pending"] == 2
    finally:
        server.stop()
    assert sorted(k for k in logstore.docs() if k.startswith(trace_id)) == [f"{trace_id}-1", f"{trace_id}-2"]


def test_module_entry_point_serves_health(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path)}
    config = tmp_path / "local.yaml"
    config.write_text(f"state_dir: {tmp_path}\nagent:\n  log_enabled: false\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.agent", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120  # a Python process starting on a busy machine
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "agent did not start"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["X-Flywheel-Simulated"] == "true"
    finally:
        process.terminate()
        process.wait(timeout=10)
