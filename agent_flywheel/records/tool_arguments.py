"""Tool-call arguments as the JSON strings NeMo requires, written fast.

Log records may carry ``tool_calls[].function.arguments`` as a JSON string or an object; validation keeps
one canonical form, the object. NeMo Customizer and Evaluator want the string, and so does every dataset
line the build writes, so the record cache stores request messages with their arguments already as
strings (:func:`request_with_string_arguments`): converted once when a record is extracted rather than on
every build of every record ever collected. Strings are ``json.dumps(arguments, ensure_ascii=False)``, as
the build has always written them; a string stays as it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard, cast

# json.dumps(arguments, ensure_ascii=False) without building an encoder per call (the build's hot path).
_ARGUMENTS_ENCODER = json.JSONEncoder(ensure_ascii=False)
# Its C encoder, made once: JSONEncoder.encode makes a new one on every call, which cost as much as the
# encoding of a small arguments object. Without the circular-reference check, which parsed JSON never needs;
# the json module's own encode is used where the C encoder is not available.
_MAKE_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)  # CPython's _json.make_encoder
_C_ARGUMENTS_ENCODER: Any = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(
        None, _ARGUMENTS_ENCODER.default, json.encoder.encode_basestring, None, ": ", ", ", False, False, True
    )
)


def arguments_string(arguments: Any) -> str:
    """Arguments as the JSON string NeMo requires (a string stays as it is; absent becomes ``{}``)."""
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return "{}"
    if _C_ARGUMENTS_ENCODER is None or type(arguments) is not dict:
        return _ARGUMENTS_ENCODER.encode(arguments)
    return "".join(_C_ARGUMENTS_ENCODER(arguments, 0))


def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, with the slow ABC check only for values that are not dicts."""
    return type(value) is dict or isinstance(value, Mapping)


def with_string_arguments(
    message: Mapping[str, Any], empty_content: bool, keep_absent: bool = False
) -> Mapping[str, Any]:
    """``message`` with tool-call arguments as JSON strings (and null content as ``""`` if asked).

    ``keep_absent`` leaves absent arguments absent instead of writing ``{}``. A message that needs no
    change is returned as it is, not copied: most messages of a conversation (system, user, tool results)
    pass through a build untouched, and copying each of them was most of the cost.
    """
    calls = message.get("tool_calls")
    fix_content = empty_content and message.get("content") is None
    if not (calls or fix_content):  # most messages (system, user, tool results): nothing to look at
        return message
    fix_calls = isinstance(calls, list) and any(_needs_string_arguments(call, keep_absent) for call in calls)
    if not (fix_content or fix_calls):
        return message
    copied = dict(message)
    if fix_content:
        copied["content"] = ""
    if fix_calls:
        copied["tool_calls"] = [call_with_string_arguments(call, keep_absent) for call in cast(list[Any], calls)]
    return copied


def _needs_string_arguments(call: Any, keep_absent: bool) -> bool:
    function = call.get("function") if is_mapping(call) else None
    if not is_mapping(function):
        return False
    arguments = function.get("arguments")
    return not isinstance(arguments, str) and not (keep_absent and arguments is None)


def call_with_string_arguments(call: Any, keep_absent: bool = False) -> Any:
    """One tool call with its arguments as a JSON string (the call itself when they are one already, or
    when they are absent and ``keep_absent`` says to leave them so)."""
    if not _needs_string_arguments(call, keep_absent):
        return call
    function = dict(call["function"])
    function["arguments"] = arguments_string(function.get("arguments"))
    return {**call, "function": function}


def request_with_string_arguments(document: dict[str, Any]) -> dict[str, Any]:
    """A log record (as :func:`~agent_flywheel.records.documents.to_document` makes it) whose request messages carry
    their tool-call arguments as strings: the form the record cache keeps (see the module docstring).

    The conversation hash stays the same (it parses arguments back), so absent arguments stay absent
    rather than becoming ``{}``, which would hash differently. The response is left as it is
    (``eval_data.jsonl`` holds it as logged). A record that needs nothing is returned unchanged.
    """
    request = document.get("request")
    messages = request.get("messages") if is_mapping(request) else None
    if not isinstance(messages, list):
        return document
    converted = [
        with_string_arguments(m, empty_content=False, keep_absent=True) if is_mapping(m) else m for m in messages
    ]
    if all(new is old for new, old in zip(converted, messages, strict=True)):
        return document
    return {**document, "request": {**cast(Mapping[str, Any], request), "messages": converted}}
