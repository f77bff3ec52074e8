"""Synthetic tool-calling log records for the dataset-build tests."""

from __future__ import annotations

from typing import Any

TOOLS = ["get_order", "return_item", "search_products", "track_shipment"]


def tool_spec(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}


def record(i: int, tool: str | None, *, question: str | None = None, ts: float | None = None, pad: int = 0) -> dict:
    """A log record; ``tool=None`` answers in text. ``pad`` lengthens the question (and the example)."""
    answer: dict[str, Any] = {"role": "assistant", "content": None}
    if tool:
        answer["tool_calls"] = [
            {"id": f"call-{i}", "type": "function", "function": {"name": tool, "arguments": {"order_id": str(i)}}}
        ]
    else:
        answer["content"] = f"Happy to help with {i}."
    return {
        "timestamp": 1_700_000_000 + i if ts is None else ts,
        "workload_id": "support",
        "client_id": "dev",
        "request": {
            "model": "meta/llama-3.3-70b-instruct",
            "messages": [
                {"role": "system", "content": "You are a support agent."},
                {"role": "user", "content": (question or f"Question number {i}") + " x" * pad},
            ],
            "tools": [tool_spec(t) for t in TOOLS],
        },
        "response": {"choices": [{"index": 0, "message": answer}]},
    }


def mixed(n: int, no_call_every: int = 5) -> list[dict]:
    return [record(i, None if i % no_call_every == 0 else TOOLS[i % len(TOOLS)]) for i in range(n)]
