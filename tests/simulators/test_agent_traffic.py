"""Synthetic customers: reproducible and varied messages, bounded concurrency, honest counts."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from simulators.agent.tools import normalise_order_id
from simulators.agent.traffic import percentile, send_traffic, synthetic_messages


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    assert synthetic_messages(50, seed=7) == synthetic_messages(50, seed=7)
    assert synthetic_messages(50, seed=7) != synthetic_messages(50, seed=8)
    assert synthetic_messages(10, seed=7) == synthetic_messages(50, seed=7)[:10]
    assert synthetic_messages(0) == []


def test_messages_are_valid_chat_bodies_and_varied() -> None:
    bodies = synthetic_messages(400, seed=3)
    assert all(set(b) == {"message", "user_id", "session_id"} and b["message"].strip() for b in bodies)
    assert len({b["session_id"] for b in bodies}) == 400
    assert len({b["user_id"] for b in bodies}) > 50
    assert len({b["message"] for b in bodies}) > 250
    text = " ".join(b["message"] for b in bodies).lower()
    for topic in ("return", "refund", "warranty", "hi", "human", "order"):
        assert topic in text
    ids = re.findall(r"(?:ord-|#|ord )?\b\d{5}\b", text)
    assert ids and all(normalise_order_id(i) for i in ids)


def test_percentile_interpolates() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 100) == 2.0


def fake_agent() -> tuple[FastAPI, dict[str, int]]:
    app = FastAPI()
    state = {"in_flight": 0, "peak": 0}

    @app.post("/v1/chat", response_model=None)
    async def chat(body: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        await asyncio.sleep(0.005)
        state["in_flight"] -= 1
        if "refund" in body["message"].lower():
            return JSONResponse(status_code=502, content={"error": {"type": "nim_error"}})
        return {"reply": "ok", "model": "m", "tool_calls": [{}], "llm_calls": [{}, {}], "trace_id": "t"}

    return app, state


async def test_send_traffic_counts_outcomes_and_respects_concurrency() -> None:
    app, state = fake_agent()
    bodies = synthetic_messages(60, seed=1)
    refunds = sum("refund" in b["message"].lower() for b in bodies)
    seen: list[int] = []
    report = await send_traffic(
        "http://agent.test",
        bodies,
        concurrency=3,
        transport=httpx.ASGITransport(app=app),
        on_result=lambda i, _: seen.append(i),
    )
    assert sorted(seen) == list(range(60))
    assert state["peak"] <= 3
    assert report.requests == 60 and report.ok == 60 - refunds
    assert report.errors == ({"http_502": refunds} if refunds else {})
    assert report.by_model == {"m": report.ok}
    assert report.llm_calls == 2 * report.ok and report.tool_calls == report.ok
    summary = report.to_dict()
    assert summary["failed"] == refunds and summary["latency_s"]["p95"] >= summary["latency_s"]["p50"] > 0


async def test_unreachable_agent_is_counted_not_raised() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    report = await send_traffic(
        "http://agent.test", synthetic_messages(5), concurrency=2, transport=httpx.MockTransport(refuse)
    )
    assert report.ok == 0 and report.errors == {"connect": 5}
