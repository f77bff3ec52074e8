"""The NIM simulator's conversation key and its reading of in-context-example blocks (docs/development.md)."""

from __future__ import annotations

from typing import Any

import pytest

from simulators.nim.conversation import conversation_key, decoded_arguments, split_examples, tool_calls_of

USER = {"role": "user", "content": "Where is ORD-1?"}
TOOLS = [{"type": "function", "function": {"name": "b"}}, {"type": "function", "function": {"name": "a"}}]


def _block(*examples: str) -> str:
    return "\n\n".join(
        [
            "### In-context examples",
            "Here are examples of how you should respond.",
            *examples,
            "### End of in-context examples",
        ]
    )


def test_an_examples_block_is_removed_and_counted() -> None:
    block = _block("Example 1:\nuser: hi\nassistant: Hello!", "Example 2:\nuser: bye\nassistant: Bye!")
    only_block = [{"role": "system", "content": block}, USER]
    assert split_examples(only_block) == ([USER], 2), "a system message that held only the block goes"
    with_prompt = [{"role": "system", "content": f"{block}\n\nYou are a support agent."}, USER]
    assert split_examples(with_prompt) == ([{"role": "system", "content": "You are a support agent."}, USER], 2)


@pytest.mark.parametrize(
    "messages",
    [
        [USER],
        [],
        [{"role": "system", "content": "No examples here. Example 1:"}, USER],
        [{"role": "user", "content": _block("Example 1:\nuser: hi")}],  # only the system message holds examples
        [{"role": "system", "content": "### In-context examples\nExample 1:\nnever closed"}, USER],
        [{"role": "system", "content": "text### In-context examples\n### End of in-context examples"}, USER],
        [{"role": "system", "content": [{"type": "text", "text": _block()}]}, USER],
    ],
)
def test_messages_without_a_block_are_unchanged(messages: list[dict[str, Any]]) -> None:
    assert split_examples(messages) == (messages, 0)


def test_the_key_ignores_examples_whitespace_ids_and_argument_encoding() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1, "y": 2}'}}
    logged = [USER, {"role": "assistant", "content": None, "tool_calls": [call]}]
    key = conversation_key(logged, TOOLS)
    same_call = {"id": "other", "type": "function", "function": {"name": "a", "arguments": {"y": 2, "x": 1}}}
    replayed = [
        {"role": "system", "content": _block("Example 1:\nuser: hi\nassistant: Hello!")},
        {"role": "user", "content": "  Where   is\nORD-1? "},
        {"role": "assistant", "content": "", "tool_calls": [same_call]},
    ]
    assert conversation_key(replayed, list(reversed(TOOLS))) == key
    assert conversation_key(logged, TOOLS[:1]) != key, "other tools offered"
    assert conversation_key([{"role": "user", "content": "Where is ORD-2?"}, logged[1]], TOOLS) != key
    assert conversation_key([{"role": "system", "content": "Be brief."}, *logged], TOOLS) != key


def test_tool_calls_and_arguments() -> None:
    message = {
        "tool_calls": [
            {"function": {"name": "a", "arguments": '{"x": 1}'}},
            {"function": {"name": "b", "arguments": "not json"}},
            {"function": {"arguments": "{}"}},
            "junk",
        ]
    }
    assert tool_calls_of(message) == [("a", {"x": 1}), ("b", "not json")]
    assert tool_calls_of({"tool_calls": None}) == []
    assert decoded_arguments({"x": 1}) == {"x": 1} and decoded_arguments("[1]") == [1]
