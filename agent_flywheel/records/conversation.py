"""The canonical form of a conversation, its stable hash, and the in-context-example block format.

Three parts of the project must agree on these, so they live in one place:
- dataset build dedupes records on :func:`conversation_hash` (across train and eval, so nothing leaks);
- ICL selection writes examples into the system message with :func:`inject_examples`;
- the NIM simulator counts and removes that block with :func:`strip_examples` before it looks up
  what the teacher answered for the same conversation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

ICL_BEGIN = "### In-context examples"
ICL_END = "### End of in-context examples"
ICL_PREAMBLE = "Here are examples of how you should respond."
_EXAMPLE_HEADER = re.compile(r"^Example \d+:$", re.MULTILINE)
# dict first: the Mapping ABC's isinstance check is ~10x slower, and almost every value is a dict.
_MAPPING = (dict, Mapping)
_ICL_BLOCK = re.compile(re.escape(ICL_BEGIN) + r".*?" + re.escape(ICL_END) + r"\n*", re.DOTALL)


def parse_arguments(arguments: Any) -> Any:
    """Tool-call arguments as an object: a JSON string is parsed, an object is kept, bad JSON stays a string."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return arguments
    return arguments


def _normalise_text(content: Any) -> Any:
    if isinstance(content, str):
        return " ".join(content.split())  # same result as collapsing \s+ and stripping, and faster
    if isinstance(content, list):
        return [_normalise_text(part) for part in content]
    if isinstance(content, _MAPPING):
        return {k: _normalise_text(v) for k, v in content.items()}
    return content


def canonical_tool_calls(tool_calls: Any) -> list[dict[str, Any]]:
    """Tool calls reduced to what they mean: function name and parsed arguments (ids and types dropped)."""
    if not isinstance(tool_calls, list):
        return []
    calls = []
    for call in tool_calls:
        function = call.get("function") if isinstance(call, _MAPPING) else None
        if not isinstance(function, _MAPPING):
            continue
        calls.append({"name": function.get("name"), "arguments": parse_arguments(function.get("arguments"))})
    return calls


def canonical_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Messages reduced to role, whitespace-normalised content and canonical tool calls."""
    result = []
    for message in messages:
        if not isinstance(message, _MAPPING):
            result.append({"invalid": repr(message)})
            continue
        item: dict[str, Any] = {"role": message.get("role"), "content": _normalise_text(message.get("content") or "")}
        calls = canonical_tool_calls(message.get("tool_calls"))
        if calls:
            item["tool_calls"] = calls
        result.append(item)
    return result


def tool_names(tools: Any) -> list[str]:
    """The sorted names of the tools offered to the model (an empty list when none are)."""
    if not isinstance(tools, list):
        return []
    names = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, _MAPPING) else None
        if isinstance(function, _MAPPING) and isinstance(function.get("name"), str):
            names.append(function["name"])
    return sorted(names)


def conversation_digest(messages: Sequence[Any], tools: Any = None) -> bytes:
    """:func:`conversation_hash` as its 32 bytes (half the memory of the hex string, for dedupe sets)."""
    stripped, _ = strip_examples(messages)
    payload = {"messages": canonical_messages(stripped), "tools": tool_names(tools)}
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).digest()


def conversation_hash(messages: Sequence[Any], tools: Any = None) -> str:
    """A stable SHA-256 (hex) of the canonical conversation plus the names of the tools offered.

    Whitespace, tool-call ids and whether arguments were a JSON string or an object do not change it,
    and neither does an in-context-example block in the system message.
    """
    return conversation_digest(messages, tools).hex()


def render_example(index: int, messages: Sequence[Mapping[str, Any]], answer: Mapping[str, Any]) -> str:
    """One in-context example: the conversation (without system messages) and the answer to give."""
    lines = [f"Example {index}:"]
    for message in messages:
        if message.get("role") == "system":
            continue
        lines.append(f"{message.get('role')}: {message.get('content') or ''}")
    lines.append(f"assistant: {answer.get('content') or ''}")
    calls = canonical_tool_calls(answer.get("tool_calls"))
    if calls:
        lines.append("tool calls: " + json.dumps(calls, ensure_ascii=False, sort_keys=True))
    return "\n".join(lines)


def inject_examples(messages: Sequence[Mapping[str, Any]], examples: Sequence[str]) -> list[dict[str, Any]]:
    """A copy of ``messages`` with the rendered examples at the start of the system message.

    A system message is inserted at index 0 when the conversation has none. No examples: an unchanged copy.
    """
    copied = [dict(m) for m in messages]
    if not examples:
        return copied
    block = "\n\n".join([ICL_BEGIN, ICL_PREAMBLE, *examples, ICL_END])
    if copied and copied[0].get("role") == "system":
        original = copied[0].get("content") or ""
        copied[0]["content"] = f"{block}\n\n{original}" if original else block
    else:
        copied.insert(0, {"role": "system", "content": block})
    return copied


def strip_examples(messages: Sequence[Any]) -> tuple[list[Any], int]:
    """Remove an in-context-example block; return the messages as they were before and the example count."""
    if not messages:
        return [], 0
    first = messages[0]
    content = first.get("content") if isinstance(first, Mapping) else None
    if not (isinstance(first, Mapping) and first.get("role") == "system" and isinstance(content, str)):
        return list(messages), 0
    match = _ICL_BLOCK.search(content)
    if match is None:
        return list(messages), 0
    count = len(_EXAMPLE_HEADER.findall(match.group(0)))
    rest = (content[: match.start()] + content[match.end() :]).strip()
    if not rest:
        return list(messages[1:]), count
    return [{**first, "content": rest}, *messages[1:]], count
