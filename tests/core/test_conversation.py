"""The canonical conversation: whitespace normalisation must mean what the hash has always meant."""

from __future__ import annotations

import re
import sys

from agent_flywheel.records.conversation import _normalise_text, conversation_hash


def test_whitespace_normalisation_equals_collapsing_regex_whitespace_on_every_code_point() -> None:
    # The hash once collapsed re's \s+ and stripped; str.split is 4x faster only if its whitespace is the same.
    regex = re.compile(r"\s+")
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        text = f"{char}a{char}{char}b{char}"
        assert _normalise_text(text) == regex.sub(" ", text).strip(), f"U+{code:04X}"


def test_whitespace_and_argument_encoding_do_not_change_the_hash() -> None:
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    one = [{"role": "user", "content": "where is\n my  order "}, {"role": "assistant", "tool_calls": [call]}]
    other_call = {"id": "2", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    two = [{"role": "user", "content": "where is my order"}, {"role": "assistant", "tool_calls": [other_call]}]
    assert conversation_hash(one) == conversation_hash(two)
    assert conversation_hash(one) != conversation_hash([{"role": "user", "content": "where is my parcel"}])
