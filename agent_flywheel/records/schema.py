"""The log record schema: what one logged LLM call looks like.

A record is the blueprint's format, so existing producers keep working: ``timestamp``, ``workload_id``,
``client_id``, ``request`` (an OpenAI ``chat.completions`` request) and ``response`` (a ``ChatCompletion``).
Extra keys at every level are kept.

Canonical form (one form for one thing):

- ``timestamp`` is a timezone-aware UTC :class:`~datetime.datetime`. Epoch seconds (int, float or a numeric
  string) and ISO 8601 (with or without a zone; no zone means UTC) are accepted.
- ``tool_calls[].function.arguments`` is a JSON **object** (a ``dict``), wherever the call appears (response
  or earlier assistant turns in the request). A string holding a JSON object is parsed; an empty string means
  "no arguments" and becomes ``{}``. A string that is not a JSON object is kept unchanged (losslessly); with
  ``parse_function_arguments`` (the default, as in ``DataSplitConfig``) such a record is quarantined as
  ``arguments_not_json``, without it the record is accepted with the string.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator, model_validator

from agent_flywheel.records.problems import shown
from agent_flywheel.records.strict_json import (
    JSON_WHITESPACE,
    MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    is_json,
    reject_constant,
)
from agent_flywheel.records.timestamps import parse_timestamp

#: ``workload_id`` and ``client_id`` are names, and keyword terms in Elasticsearch cannot exceed 32 kB.
MAX_ID_LENGTH = 256

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLES_NEEDING_CONTENT = frozenset({"system", "developer", "user", "tool"})


class _Open(BaseModel):
    """Base of every part of a record: only what the flywheel reads is typed; every other key is kept."""

    model_config = ConfigDict(extra="allow", strict=True)


def _non_empty_string(value: Any, what: str = "") -> str:
    """``value`` when it is a string with more than white space, else the one-line error naming ``what``."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {shown(value)}".lstrip())
    return value


def _parse_arguments_string(text: str) -> dict[str, Any] | str:
    stripped = text.strip(JSON_WHITESPACE)
    if not stripped:
        return {}
    try:
        parsed = json.loads(stripped, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        return text
    if not isinstance(parsed, dict) or not is_json(parsed, MAX_RECORD_DEPTH, MAX_RECORD_BYTES, parsed=True):
        return text
    return parsed


class FunctionCall(_Open):
    """The ``function`` of a tool call; ``arguments`` is canonically an object (see the module docstring)."""

    name: str
    arguments: dict[str, Any] | str

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return _non_empty_string(value, "function name")

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, value: Any) -> dict[str, Any] | str:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            return _parse_arguments_string(value)
        raise ValueError(f"arguments must be a JSON object or a string holding one, got {shown(value)}")


class ToolCall(_Open):
    """One call the assistant made; ``id`` and ``type`` are kept as given (extra keys)."""

    function: FunctionCall


class Message(_Open):
    """A chat message: a known role, text or multimodal content, optional tool calls."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> str:
        if not isinstance(value, str) or value not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {shown(value)}")
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> str | list[dict[str, Any]] | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list):
            for number, part in enumerate(value):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise ValueError(f"content part {number} must be an object with a string 'type'")
            return value
        raise ValueError(f"content must be a string, a list of content parts or null, got {shown(value)}")

    @model_validator(mode="after")
    def _content_present(self) -> Message:
        if self.role in _ROLES_NEEDING_CONTENT and self.content is None:
            raise ValueError(f"a {self.role} message needs content")
        return self


class ToolFunction(_Open):
    """A tool offered to the model: only its name is required (ICL, split labels and hashes use it)."""

    name: str

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        return _non_empty_string(value, "tool name")


class Tool(_Open):
    """An entry of ``request.tools``; ``type`` and the JSON Schema ``parameters`` are kept as given."""

    function: ToolFunction


class ChatRequest(_Open):
    """An OpenAI ``chat.completions`` request: a non-empty list of messages, optional tools."""

    messages: list[Message]
    tools: list[Tool] | None = None
    model: str | None = None
    tool_choice: str | dict[str, Any] | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("messages must be a non-empty list")
        return value

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice(cls, value: Any) -> str | dict[str, Any] | None:
        if value is None or isinstance(value, str | dict):
            return value
        raise ValueError(f"tool_choice must be a string or an object, got {shown(value)}")


class Choice(_Open):
    """One answer of the response; ``index``, ``finish_reason`` and ``logprobs`` are kept as given."""

    message: Message

    @field_validator("message", mode="after")
    @classmethod
    def _assistant(cls, value: Message) -> Message:
        if value.role != "assistant":
            raise ValueError(f"the response message must have role 'assistant', got {value.role!r}")
        return value


class ChatCompletion(_Open):
    """An OpenAI ``ChatCompletion``: at least one choice, each with an assistant message."""

    choices: list[Choice]

    @field_validator("choices", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("choices must be a non-empty list")
        return value


class LogRecord(_Open):
    """One logged LLM call, as producers write it, with the timestamp and tool-call arguments canonical."""

    timestamp: datetime
    workload_id: str
    client_id: str
    request: ChatRequest
    response: ChatCompletion
    _timestamp_assigned: bool = PrivateAttr(default=False)

    @property
    def timestamp_assigned(self) -> bool:
        """Whether ``timestamp`` was given at import because the producer wrote none (not part of the record)."""
        return self._timestamp_assigned

    @timestamp_assigned.setter
    def timestamp_assigned(self, value: bool) -> None:
        self._timestamp_assigned = value

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        return parse_timestamp(value)

    @field_validator("workload_id", "client_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        value = _non_empty_string(value)
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(f"longer than {MAX_ID_LENGTH} characters: {shown(value)}")
        return value


def _first_message(record: LogRecord) -> Message:
    return record.response.choices[0].message


def is_tool_calling(record: LogRecord) -> bool:
    """Whether the answer calls a tool (the first choice, as the blueprint's workload detection reads it)."""
    return bool(_first_message(record).tool_calls)


def first_tool_name(record: LogRecord) -> str:
    """The first tool the answer calls, or ``"no_tool"``: the stratification label of the split."""
    calls = _first_message(record).tool_calls
    return calls[0].function.name if calls else "no_tool"
