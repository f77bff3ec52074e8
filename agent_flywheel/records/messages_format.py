"""The blueprint's other input format: ``{"messages": [...], "tools": [...]}`` lines, turned into log records.

The Data Flywheel Blueprint's loader (``load_test_data.py``) accepts, besides log records, one conversation per
line as NeMo's training files hold them. It wraps each: the messages but the last become the request, the
last message (the assistant's) becomes the answer, ``tools`` go into the request. We do the same at import
(``flywheel logs import``), with these differences, on purpose:

- no ``model`` is written (the blueprint writes ``"not-a-model"``, which the teacher filter would skip: a
  record that names no model is kept by ``extraction.teacher_only``);
- no made-up sampling parameters or word-count ``usage``;
- the last message must be the assistant's answer; a line whose last message is not is quarantined
  (``bad_messages``) instead of being learned from backwards;
- ``workload_id`` and ``client_id`` must come from the import (``--workload-id``/``--client-id``) or the line;
  the timestamp, when the line has none, is the import time (see :func:`~agent_flywheel.records.validation.parse_jsonl_line`).
"""

from __future__ import annotations

from typing import Any

from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, quarantined


def is_messages_line(raw: Any) -> bool:
    """Whether a parsed line is in the messages format: an object with ``messages`` and no ``request``/``response``."""
    return isinstance(raw, dict) and "messages" in raw and "request" not in raw and "response" not in raw


def messages_to_record(raw: dict[str, Any], source: str) -> dict[str, Any] | Quarantined:
    """The log record a messages-format line stands for, or why it cannot be one.

    Keys of the line other than ``messages`` and ``tools`` (``workload_id``, ``client_id``, ``timestamp``,
    anything else) stay at the top level of the record.
    """
    messages = raw["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        problem = "the messages format needs a list of at least two messages (the conversation, then the answer)"
        return quarantined(Reason.BAD_MESSAGES, source, "messages", problem, raw)
    answer = messages[-1]
    if not isinstance(answer, dict) or answer.get("role") != "assistant":
        problem = "the last message must be the assistant's answer (the messages format's response)"
        return quarantined(Reason.BAD_MESSAGES, source, f"messages.{len(messages) - 1}", problem, raw)
    request: dict[str, Any] = {"messages": messages[:-1]}
    tools = raw.get("tools")
    if tools:
        request["tools"] = tools
    record = {key: value for key, value in raw.items() if key not in ("messages", "tools")}
    record["request"] = request
    finish_reason = "tool_calls" if answer.get("tool_calls") else "stop"
    record["response"] = {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": answer, "finish_reason": finish_reason}],
    }
    return record
