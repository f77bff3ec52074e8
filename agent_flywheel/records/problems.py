"""How a problem with a record is named: the reason (a fixed set) and a short, safe rendering of the bad value."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Why a record was quarantined (a fixed set, so counts can be compared across runs)."""

    NOT_JSON = "not_json"  # not parseable, not valid UTF-8, or holds what JSON cannot (NaN, lone surrogates)
    NOT_AN_OBJECT = "not_an_object"  # valid JSON, but not an object at the top level
    TOO_LARGE = "too_large"  # over MAX_RECORD_BYTES, or nested deeper than MAX_RECORD_DEPTH
    MISSING_FIELD = "missing_field"  # a required field is absent (the message names it)
    BAD_ID = "bad_id"  # workload_id / client_id not a non-empty string
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_REQUEST = "bad_request"  # request not an object, or its model / tools / tool_choice malformed
    BAD_MESSAGES = "bad_messages"  # request.messages empty, or a message malformed
    BAD_RESPONSE = "bad_response"  # response not a ChatCompletion (no choices, a choice without message ...)
    ARGUMENTS_NOT_JSON = "arguments_not_json"  # a tool call's arguments are not a JSON object
    TOOL_CALLS_MISSING = "tool_calls_missing"  # finish_reason "tool_calls" but no tool call in the answer
    EMPTY_ANSWER = "empty_answer"  # an answer with neither content nor tool calls
    PRODUCER_ERROR = "producer_error"  # the producer marked the call as failed (NAT's ``error_details``)
    WRONG_WORKLOAD = "wrong_workload"  # read for one workload/client, belongs to another
    INDEX_REJECTED = "index_rejected"  # valid here, refused by the log store (e.g. a mapping conflict)
    VALIDATION_ERROR = "validation_error"  # an unexpected error in validation itself: a bug, reported not raised


_SHOWN_VALUE_LIMIT = 80


def shown(value: Any) -> str:
    """A short, safe rendering of a bad value for a message (huge or odd values never flood a log)."""
    try:
        if isinstance(value, str):
            text = repr(value[: _SHOWN_VALUE_LIMIT + 1])
        elif isinstance(value, int | float | bool) or value is None:
            text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
        else:
            return f"a {type(value).__name__}"
    except Exception:  # repr of a hostile object
        return f"a {type(value).__name__}"
    return text if len(text) <= _SHOWN_VALUE_LIMIT else text[:_SHOWN_VALUE_LIMIT] + "..."


def path_text(parts: tuple[str | int, ...]) -> str:
    """A field's location as messages name it: ``request.messages.0.content``."""
    return ".".join(str(part) for part in parts)
