"""Records shaped as NeMo Agent Toolkit's data-flywheel exporter writes them (``nvidia-nat-data-flywheel`` 1.9).

What the exporter does, read from its source (schema ``DFWESRecord``, serialised with
``model_dump_json(by_alias=True)``, so every optional field is present, ``null`` when unset):

- top level: ``contract_version`` (``"1.0"`` by default, ``"1.1"`` possible), ``request``, ``response``,
  ``client_id``, ``workload_id`` (the span attribute ``nat.function.name``: in practice ``"<workflow>"``),
  ``timestamp`` (int epoch **seconds**, 0 when the span had none) and ``error_details`` (``null`` or a string);
- ``request``: ``tools`` (``null`` when none; each ``{"type": "function", "function": {name, description,
  parameters: {properties, required, type: "object"}}}``), ``messages`` (roles mapped to
  system/user/assistant/tool/function; an assistant turn that called tools has ``content: null``), ``model``
  (``nat.subspan.name``), ``temperature: null`` and ``max_tokens: null`` (the span does not carry them);
- ``response``: ``choices`` (``message`` = ``{role: "assistant", content, tool_calls}``, tool calls without an
  ``id``, their ``arguments`` as a JSON **object**; ``finish_reason`` ``"stop"``/``"length"``/``"tool_calls"``
  or ``null``; ``index``), ``id`` (``response-<span name>-<timestamp>`` when the span has none),
  ``object: "chat.completion"``, ``created`` (= timestamp), ``model`` and ``usage`` in NAT's own shape
  ``{"token_usage": {prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens},
  "num_llm_calls", "seconds_between_calls"}`` (not OpenAI's);
- with LangChain 1.x the tool calls are no longer in ``additional_kwargs``, where the converter looks for them,
  so a tool-calling turn arrives as ``finish_reason: "tool_calls"``, ``tool_calls: null``, ``content: ""``.
"""

from __future__ import annotations

import copy
from typing import Any

NAT_WORKLOAD_ID = "<workflow>"
NAT_CLIENT_ID = "nat-support-agent"
NAT_MODEL = "meta/llama-3.1-70b-instruct"

_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up the status of an order.",
            "parameters": {
                "properties": {"order_id": {"type": "string", "description": "The order number"}},
                "required": ["order_id"],
                "type": "object",
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_products",
            "description": "Search the product catalogue.",
            "parameters": {
                "properties": {"query": {"type": "string"}, "max_results": {"type": "integer"}},
                "required": ["query"],
                "type": "object",
            },
        },
    },
]


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "token_usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "total_tokens": prompt + completion,
        },
        "num_llm_calls": 1,
        "seconds_between_calls": 0,
    }


def nat_record(
    i: int,
    *,
    tool_calls: list[dict[str, Any]] | None,
    content: str | None,
    finish_reason: str | None,
    timestamp: int = 1765000000,
    with_tools: bool = True,
    contract_version: str = "1.0",
    history: bool = False,
) -> dict[str, Any]:
    """One exported record; ``history`` adds an earlier tool-calling turn and its tool result to the request."""
    messages: list[dict[str, Any]] = [
        {"content": "You are a customer-support agent for an online shop.", "role": "system"},
        {"content": f"Where is my order {1000 + i}?", "role": "user"},
    ]
    if history:
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "function": {"name": "get_order_status", "arguments": {"order_id": str(1000 + i)}},
                        "type": "function",
                    }
                ],
            },
            {"content": '{"status": "shipped"}', "role": "tool", "tool_call_id": ""},
            {"content": "And can you find me a phone case?", "role": "user"},
        ]
    ts = timestamp + i
    return {
        "contract_version": contract_version,
        "request": {
            "tools": copy.deepcopy(_TOOLS) if with_tools else None,
            "messages": messages,
            "model": NAT_MODEL,
            "temperature": None,
            "max_tokens": None,
        },
        "response": {
            "choices": [
                {
                    "message": {"role": "assistant", "content": content, "tool_calls": tool_calls},
                    "finish_reason": finish_reason,
                    "index": 0,
                }
            ],
            "id": f"response-{NAT_MODEL}-{ts}",
            "object": "chat.completion",
            "created": ts,
            "model": NAT_MODEL,
            "usage": _usage(120 + i, 18),
        },
        "client_id": NAT_CLIENT_ID,
        "workload_id": NAT_WORKLOAD_ID,
        "timestamp": ts,
        "error_details": None,
    }


def nat_tool_call(i: int) -> dict[str, Any]:
    """A well-formed tool-calling turn (LangChain 0.3, where the converter finds the calls): ``content: null``."""
    calls = [{"function": {"name": "get_order_status", "arguments": {"order_id": str(1000 + i)}}, "type": "function"}]
    return nat_record(i, tool_calls=calls, content=None, finish_reason="tool_calls")


def nat_answer(i: int) -> dict[str, Any]:
    """A text answer without a tool call."""
    return nat_record(i, tool_calls=None, content=f"Order {1000 + i} was shipped yesterday.", finish_reason="stop")


def nat_lost_tool_call(i: int) -> dict[str, Any]:
    """NAT 1.9 with LangChain 1.x: a tool-calling turn whose calls were lost (the record contradicts itself)."""
    return nat_record(i, tool_calls=None, content="", finish_reason="tool_calls")


def nat_empty_answer(i: int) -> dict[str, Any]:
    """An answer with neither text nor tool calls."""
    return nat_record(i, tool_calls=None, content="", finish_reason="stop")
