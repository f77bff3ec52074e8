"""How the NIM simulator recognises a conversation, and the in-context examples written into a prompt.

**The conversation key.** A model answers like "the reference" for a conversation, and the reference is
what the teacher answered when the same conversation was logged. The simulator computes the key both
when it reads the log and when a request comes in, so the key only has to agree with itself: a BLAKE2b
digest of each message's role, its text with runs of whitespace collapsed, and its tool calls as (name,
decoded arguments), plus the sorted names of the offered tools. Tool-call ids, whitespace and whether
arguments came as a JSON string or an object do not change it, and neither do in-context examples.

**In-context examples** (the format in ``docs/development.md``): a block at the start of the system
message, opened by the line ``### In-context examples`` and closed by ``### End of in-context examples``,
in which every example starts with a line ``Example <n>:``. :func:`split_examples` removes the block and
counts the examples; a system message that held nothing else goes with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.nim.text import content_text

EXAMPLES_OPEN = "### In-context examples"
EXAMPLES_CLOSE = "### End of in-context examples"
_EXAMPLE_LINE = re.compile(r"^Example \d+:[ \t]*$", re.MULTILINE)


def decoded_arguments(arguments: Any) -> Any:
    """Tool-call arguments as a value: a JSON string is decoded, text that is not JSON stays text."""
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments


def tool_calls_of(message: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(function name, decoded arguments)`` of each well-formed OpenAI tool call of a message."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    result = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            result.append((function["name"], decoded_arguments(function.get("arguments"))))
    return result


def split_examples(messages: Sequence[Any]) -> tuple[list[Any], int]:
    """The messages without an in-context-example block in the leading system message, and how many examples it held."""
    if not messages or not isinstance(messages[0], Mapping):
        return list(messages), 0
    system = messages[0]
    text = system.get("content")
    if system.get("role") != "system" or not isinstance(text, str):
        return list(messages), 0
    start = text.find(EXAMPLES_OPEN)
    if start < 0 or (start > 0 and text[start - 1] != "\n"):
        return list(messages), 0
    close = text.find(EXAMPLES_CLOSE, start + len(EXAMPLES_OPEN))
    if close < 0:
        return list(messages), 0
    end = close + len(EXAMPLES_CLOSE)
    count = len(_EXAMPLE_LINE.findall(text, start, close))
    remainder = (text[:start] + text[end:]).strip()
    rest = list(messages[1:])
    return ([{**system, "content": remainder}, *rest] if remainder else rest), count


def _message_form(message: Any) -> Any:
    if not isinstance(message, Mapping):
        return ["?", repr(message)]
    text = " ".join(content_text(message.get("content")).split())
    calls = [[name, json.dumps(arguments, sort_keys=True, default=str)] for name, arguments in tool_calls_of(message)]
    return [str(message.get("role")), text, calls]


def _tool_names(tools: Any) -> list[str]:
    names = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return sorted(names)


def conversation_key(messages: Sequence[Any], tools: Any = None) -> str:
    """The key under which the simulator files a conversation (in-context examples and whitespace ignored)."""
    plain, _ = split_examples(messages)
    form = {"m": [_message_form(m) for m in plain], "t": _tool_names(tools)}
    encoded = json.dumps(form, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.blake2b(encoded, digest_size=20).hexdigest()
