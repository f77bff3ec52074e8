"""The product's in-context-example prompts, read by the NIM simulator: the examples are counted and the
conversation under them still finds what the teacher answered (the simulator parses the documented format on
its own, so this checks the product's writer against an independent reader)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from elasticsearch import Elasticsearch

from agent_flywheel.records.conversation import inject_examples, render_example
from simulators.pytest_plugin import StackFactory

pytestmark = pytest.mark.integration

TEACHER = "meta/llama-3.3-70b-instruct"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_products",
            "description": "Search the product catalogue.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
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


def _chat(nim: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"model": TEACHER, "messages": messages, "tools": TOOLS}
    response = httpx.post(f"{nim}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_injected_examples_are_counted_and_the_logged_answer_found(start_stack: StackFactory) -> None:
    cfg = start_stack({"nim": {"models": {TEACHER: {"p_base": 1.0}}, "log_refresh_min_interval_s": 0}})
    with Elasticsearch(cfg.url("logserver")) as es:
        record = {
            "timestamp": "2026-01-01T00:00:00Z",
            "workload_id": "support",
            "client_id": "test",
            "request": {"model": TEACHER, "messages": LOGGED_MESSAGES, "tools": TOOLS},
            "response": {"choices": [{"message": LOGGED_ANSWER}]},
        }
        es.index(index="flywheel", id="teacher-1", document=record, refresh=True)

    examples = [
        render_example(1, [{"role": "user", "content": "hi"}], {"content": "Hello!"}),
        render_example(2, [{"role": "user", "content": "show me mugs"}], LOGGED_ANSWER),
    ]
    for system in ([], [{"role": "system", "content": "You are a shop assistant."}]):
        with_icl = inject_examples(
            [*system, {"role": "user", "content": "hello  there, anything new for me?"}], examples
        )
        answer = _chat(cfg.url("nim"), with_icl)
        quality = answer["nvext"]["quality"]
        if system:  # the system prompt is part of the conversation, so this one was never logged
            assert (quality["reference"], quality["icl_examples"]) == ("policy", 2)
            continue
        assert quality | {"p": None} == {
            "reference": "log", "icl_examples": 2, "p": None, "followed_reference": True, "mistake": None}  # fmt: skip
        arguments = answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        assert json.loads(arguments) == {"query": "new arrivals"}
