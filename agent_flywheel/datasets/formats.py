"""The NeMo dataset lines: a Customizer training example and a full log record for ``eval_data.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent_flywheel.records.keys import request_messages, request_tools, response_message
from agent_flywheel.records.tool_arguments import call_with_string_arguments, is_mapping, with_string_arguments


def to_training_example(record: Mapping[str, Any], tool_calling: bool) -> dict[str, Any]:
    """A NeMo Customizer line: request messages plus the answer, ``tools`` for tool-calling workloads.

    Assistant ``content`` is ``""`` rather than null and tool-call ``arguments`` are JSON strings, as
    Customizer requires. Only ``role``, ``content`` and ``tool_calls`` of the answer are kept. Messages
    that need no change are shared with ``record``, not copied.
    """
    messages = [
        with_string_arguments(m, empty_content=m.get("role") == "assistant") if is_mapping(m) else m
        for m in request_messages(record) or []
    ]
    answer = response_message(record) or {}
    out_answer: dict[str, Any] = {"role": "assistant", "content": answer.get("content") or ""}
    calls = answer.get("tool_calls")
    if calls:
        out_answer["tool_calls"] = [call_with_string_arguments(c) for c in calls] if isinstance(calls, list) else calls
    line: dict[str, Any] = {"messages": [*messages, out_answer]}
    if tool_calling:
        line["tools"] = request_tools(record)
    return line


def to_eval_record(record: Mapping[str, Any], messages: Sequence[Any] | None = None) -> dict[str, Any]:
    """The full log record for ``eval_data.jsonl``, request tool-call arguments as JSON strings.

    ``messages`` replaces the request messages (the ICL set passes the messages with examples injected).
    """
    out = dict(record)
    request = dict(record.get("request") or {})
    source = messages if messages is not None else request.get("messages") or []
    request["messages"] = [with_string_arguments(m, empty_content=False) if is_mapping(m) else m for m in source]
    out["request"] = request
    return out
