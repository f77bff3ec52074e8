"""The log record schema: what one logged LLM call looks like, how it is validated, and where bad ones go.

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

Bad input never raises and is never dropped: :func:`validate_record` returns a :class:`Quarantined` with a
reason from :class:`Reason` and a message naming the record and the field, and :class:`QuarantineWriter`
appends it, raw record included, to a JSONL file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import reprlib
from collections import Counter
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from agent_flywheel.conversation import conversation_digest

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_DEPTH",
    "ROLES",
    "ChatCompletion",
    "ChatRequest",
    "Choice",
    "FunctionCall",
    "LogRecord",
    "Message",
    "ModelFilter",
    "QuarantineWriter",
    "Quarantined",
    "Reason",
    "Tool",
    "ToolCall",
    "ToolFunction",
    "document_id",
    "first_tool_name",
    "format_timestamp",
    "is_tool_calling",
    "parse_jsonl_line",
    "parse_timestamp",
    "record_digest",
    "record_hash",
    "to_document",
    "validate_record",
]

#: A record bigger than this (serialised, in bytes) is quarantined as ``too_large``. Real chat logs are
#: kilobytes; a multi-megabyte record is a bug upstream (a base64 image, a runaway loop) and would bloat
#: every dataset file it lands in.
MAX_RECORD_BYTES = 8 * 1024 * 1024
#: Nesting deeper than this is quarantined as ``too_large``: JSON Schemas of tools are the deepest legitimate
#: part (about 10-20 levels); deeper structures only come from broken or hostile producers and would hit
#: Python's recursion limit in ``json`` and in the conversation hash.
MAX_RECORD_DEPTH = 64

#: ``workload_id`` and ``client_id`` are names, and keyword terms in Elasticsearch cannot exceed 32 kB.
MAX_ID_LENGTH = 256

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLES_NEEDING_CONTENT = frozenset({"system", "developer", "user", "tool"})
_MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold
_MESSAGE_LIMIT = 1000
_JSON_WHITESPACE = " \t\r\n"
_SHOWN_VALUE_LIMIT = 80


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
    WRONG_WORKLOAD = "wrong_workload"  # read for one workload/client, belongs to another
    INDEX_REJECTED = "index_rejected"  # valid here, refused by the log store (e.g. a mapping conflict)
    VALIDATION_ERROR = "validation_error"  # an unexpected error in validation itself: a bug, reported not raised


# --------------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------------

_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?P<fraction>[.,]\d+)?)?"
    r"(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


def _epoch_to_datetime(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be a finite number, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"epoch seconds before 1970 ({seconds!r})")
    if seconds > _MAX_TIMESTAMP_S:
        raise ValueError(f"epoch seconds out of range ({seconds!r}); epoch milliseconds are not accepted")
    return datetime.fromtimestamp(seconds, UTC)


def parse_timestamp(value: Any) -> datetime:
    """A UTC datetime from epoch seconds (number or numeric string), ISO 8601 or a datetime.

    Producers write both forms (the blueprint's docs use epoch seconds, its tests ISO strings), and
    Elasticsearch compares them only once they are one type. A naive ISO string or datetime is taken as
    UTC. Raises ``ValueError`` with a readable message otherwise.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"timestamp must be epoch seconds or ISO 8601, got {_shown(value)}")
    if isinstance(value, int | float):
        try:
            return _epoch_to_datetime(float(value))
        except OverflowError:
            raise ValueError(f"epoch seconds out of range ({_shown(value)})") from None
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be epoch seconds or ISO 8601, got {type(value).__name__}")
    text = value.strip()
    if len(text) > 64:
        raise ValueError(f"timestamp string too long ({len(value)} characters)")
    if _NUMERIC.fullmatch(text):
        try:
            return _epoch_to_datetime(float(text))
        except OverflowError:
            raise ValueError(f"epoch seconds out of range ({_shown(value)})") from None
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(f"not ISO 8601 or epoch seconds: {_shown(value)}")
    fraction = (match["fraction"] or "").replace(",", ".")[:7]  # datetime keeps microseconds; drop the rest
    zone = match["zone"] or ""
    zone = "+00:00" if zone in ("Z", "z", "") else zone
    iso = f"{match['date']}T{match['time'] or '00:00'}{fraction}{zone}"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise ValueError(f"invalid date or time in {_shown(value)}: {exc}") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range: {_shown(value)}") from None


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (what we index, so Elasticsearch reads one unambiguous format)."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------------------------------


class _Open(BaseModel):
    """Base of every part of a record: only what the flywheel reads is typed; every other key is kept."""

    model_config = ConfigDict(extra="allow", strict=True)


def _parse_arguments_string(text: str) -> dict[str, Any] | str:
    stripped = text.strip(_JSON_WHITESPACE)
    if not stripped:
        return {}
    try:
        parsed = json.loads(stripped, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return text
    if not isinstance(parsed, dict) or not _is_json(parsed, MAX_RECORD_DEPTH, MAX_RECORD_BYTES, parsed=True):
        return text
    return parsed


class FunctionCall(_Open):
    """The ``function`` of a tool call; ``arguments`` is canonically an object (see the module docstring)."""

    name: str
    arguments: dict[str, Any] | str

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"function name must be a non-empty string, got {_shown(value)}")
        return value

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, value: Any) -> dict[str, Any] | str:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            return _parse_arguments_string(value)
        raise ValueError(f"arguments must be a JSON object or a string holding one, got {_shown(value)}")


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
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {_shown(value)}")
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
        raise ValueError(f"content must be a string, a list of content parts or null, got {_shown(value)}")

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
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"tool name must be a non-empty string, got {_shown(value)}")
        return value


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
        raise ValueError(f"tool_choice must be a string or an object, got {_shown(value)}")


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

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        return parse_timestamp(value)

    @field_validator("workload_id", "client_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"must be a non-empty string, got {_shown(value)}")
        if len(value) > MAX_ID_LENGTH:
            raise ValueError(f"longer than {MAX_ID_LENGTH} characters: {_shown(value)}")
        return value


# --------------------------------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """A record that did not validate: why, where from, which field, and the record itself, unchanged.

    ``raw_text`` is the original line when the record came from a file (kept byte for byte, so a fixed
    parser can replay the quarantine file); ``raw`` is the parsed value when there was one.
    """

    reason: Reason
    message: str
    source: str
    field: str | None = None
    raw: Any = dataclasses.field(default=None, repr=False, compare=False)
    raw_text: str | None = dataclasses.field(default=None, repr=False, compare=False)


def _quarantine(reason: Reason, source: str, field: str | None, problem: str, raw: Any) -> Quarantined:
    where = f"{source}: {field}: " if field else f"{source}: "
    message = where + problem
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    return Quarantined(reason=reason, message=message, source=source, field=field, raw=raw)


class QuarantineWriter:
    """Appends quarantined records (reason, message, raw record in full) to a JSONL file and counts reasons.

    The file is the audit trail for "never dropped silently": each line is
    ``{"reason", "source", "field", "message", "quarantined_at", "raw" | "raw_text" | "raw_repr"}``.
    ``raw`` is the record as JSON; ``raw_text`` the original line when it came from a file (invalid UTF-8
    bytes escaped as lone surrogates, so it is recoverable); ``raw_repr`` a repr for Python objects that
    JSON cannot hold. The file is opened on the first write, so a clean run leaves none behind.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self._file: IO[str] | None = None

    @property
    def total(self) -> int:
        """How many records were quarantined through this writer."""
        return sum(self.counts.values())

    def write(self, item: Quarantined) -> None:
        """Count the reason and append the record; flushed at once, so a crash loses nothing written."""
        self.counts[str(item.reason)] += 1
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(_quarantine_line(item) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (a later write reopens it in append mode)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _quarantine_line(item: Quarantined) -> str:
    entry: dict[str, Any] = {
        "reason": str(item.reason),
        "source": item.source,
        "field": item.field,
        "message": item.message,
        "quarantined_at": format_timestamp(datetime.now(UTC)),
    }
    if item.raw_text is not None:
        entry["raw_text"] = item.raw_text
        return json.dumps(entry, ensure_ascii=True)
    try:
        return json.dumps({**entry, "raw": item.raw}, ensure_ascii=True, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        entry["raw_repr"] = json.dumps(item.raw, ensure_ascii=True, default=repr)
    except (ValueError, TypeError, RecursionError):
        shortener = reprlib.Repr()
        shortener.maxlevel, shortener.maxstring, shortener.maxother = 32, 1 << 20, 1 << 20
        entry["raw_repr"] = shortener.repr(item.raw)
    return json.dumps(entry, ensure_ascii=True)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _shown(value: Any) -> str:
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


def _path_text(parts: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in parts)


def _json_problem(value: Any, max_depth: int, max_bytes: int, skip_top: frozenset[str] = frozenset()) -> Any:
    """The first thing that stops ``value`` being strict, encodable JSON within the limits, or None.

    Iterative (no recursion limit), stops as soon as the size budget is spent (so shared references
    or cycles cannot make it run long), and checks non-ASCII strings for lone surrogates by encoding
    them, which is also how their UTF-8 size is measured. Returns ``(reason, path, problem)``.
    """
    size = 0
    # (value, depth, path as a linked list (parent, key)) - O(1) per node, a path is built only on error
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, link = stack.pop()
        if depth > max_depth:
            return Reason.TOO_LARGE, _unlink(link), f"nested deeper than {max_depth} levels"
        if isinstance(item, str):
            if item.isascii():
                size += len(item) + 2
            else:
                try:
                    size += len(item.encode("utf-8")) + 2
                except UnicodeEncodeError:
                    return Reason.NOT_JSON, _unlink(link), "string holds a lone surrogate (not valid Unicode)"
        elif isinstance(item, bool) or item is None:
            size += 5
        elif isinstance(item, int):
            size += 8
        elif isinstance(item, float):
            if not math.isfinite(item):
                return Reason.NOT_JSON, _unlink(link), f"{item!r} is not valid JSON"
            size += 8
        elif isinstance(item, dict):
            size += 2
            for key, child in item.items():
                if not isinstance(key, str):
                    return Reason.NOT_JSON, _unlink(link), f"object key {_shown(key)} is not a string"
                try:
                    size += len(key.encode("utf-8")) + 4
                except UnicodeEncodeError:
                    return Reason.NOT_JSON, _unlink(link), "object key holds a lone surrogate"
                if depth == 0 and key in skip_top:
                    continue
                stack.append((child, depth + 1, (link, key)))
        elif isinstance(item, list):
            size += 2
            for index, child in enumerate(item):
                size += 1
                stack.append((child, depth + 1, (link, index)))
        else:
            return Reason.NOT_JSON, _unlink(link), f"holds a {type(item).__name__}, which JSON cannot represent"
        if size > max_bytes:
            return Reason.TOO_LARGE, None, f"larger than {max_bytes} bytes"
    return None


def _unlink(link: Any) -> str | None:
    parts: list[str | int] = []
    while link is not None:
        link, key = link
        parts.append(key)
    return _path_text(tuple(reversed(parts))) if parts else None


# Refuse every subclass and non-JSON type (datetimes and dataclasses included) rather than convert it;
# indent by two spaces, so that a node at depth d starts a line with 2d spaces.
_PLAIN_JSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_INDENT_2
)
# _json_problem counts at most this many bytes per byte of orjson's text (8 for an integer written as 1 digit).
_SIZE_PER_TEXT_BYTE = 8


def _plainly_json(value: Any, max_depth: int, max_bytes: int, skip_top: frozenset[str] = frozenset()) -> bool:
    """True only when :func:`_json_problem` would find nothing; the same check done in C, for trees.

    orjson writes the value (it refuses non-string keys, lone surrogates, integers beyond 64 bits,
    subclasses and every type JSON does not have) indented, so a line indented deeper than
    ``2 * max_depth`` spaces is a node nested too deep; reading the text back gives a value equal to the
    original only if nothing was converted on the way (NaN and infinities become null, tuples lists,
    enums and UUIDs their values). ``_json_problem`` counts at most 8 bytes per byte of that text, so an
    eighth of ``max_bytes`` is within the limit. False means "not sure": run ``_json_problem``, which
    also names the problem. Only for trees (what a JSON parser returns): orjson writes a shared object
    once per reference, so a small structure that shares objects at every level could expand without
    bound, where ``_json_problem`` stops at ``max_bytes``.
    """
    slack = 0
    skipped = [key for key in skip_top if key in value] if type(value) is dict else []
    if skipped:  # _json_problem counts a skipped key but not its value
        slack = sum(len(key.encode("utf-8")) + 4 for key in skipped)
        value = {key: child for key, child in value.items() if key not in skip_top}
    try:
        text = orjson.dumps(value, option=_PLAIN_JSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: not plain JSON, or nested past orjson's own limit
        return False
    if _SIZE_PER_TEXT_BYTE * len(text) + slack > max_bytes:
        return False
    if b"\n" + b" " * (2 * max_depth + 2) in text:
        return False
    try:
        return bool(orjson.loads(text) == value)
    except (orjson.JSONDecodeError, RecursionError):  # pragma: no cover - orjson reads what it writes
        return False


def _is_json(value: Any, max_depth: int, max_bytes: int, *, parsed: bool) -> bool:
    """Whether ``value`` is strict, encodable JSON within the limits (see :func:`_json_problem`)."""
    if parsed and _plainly_json(value, max_depth, max_bytes):
        return True
    return _json_problem(value, max_depth, max_bytes) is None


_TOP_FIELDS = ("timestamp", "workload_id", "client_id", "request", "response")
_UNCHECKED_TOP = frozenset({"timestamp"})


def _classify(error: ErrorDetails) -> tuple[Reason, str]:
    loc = tuple(error["loc"])
    top = loc[0] if loc else None
    if error["type"] == "missing":
        return Reason.MISSING_FIELD, _path_text(loc)
    if top == "timestamp":
        return Reason.BAD_TIMESTAMP, "timestamp"
    if top in ("workload_id", "client_id"):
        return Reason.BAD_ID, str(top)
    if top == "request":
        if len(loc) > 1 and loc[1] == "messages":
            return Reason.BAD_MESSAGES, _path_text(loc)
        return Reason.BAD_REQUEST, _path_text(loc)
    if top == "response":
        return Reason.BAD_RESPONSE, _path_text(loc)
    return Reason.VALIDATION_ERROR, _path_text(loc)


def _error_text(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "required field is missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    if error["type"] in ("model_type", "dict_type", "list_type", "string_type"):
        message += f" (got {_shown(error.get('input'))})"
    return message


def _first_error(exc: ValidationError) -> tuple[ErrorDetails, int]:
    errors = exc.errors(include_url=False, include_context=False)

    def order(error: ErrorDetails) -> tuple[int, int]:
        top = error["loc"][0] if error["loc"] else ""
        rank = _TOP_FIELDS.index(top) if top in _TOP_FIELDS else len(_TOP_FIELDS)
        return (0 if error["type"] == "missing" else 1, rank)

    errors.sort(key=order)
    return errors[0], len(errors) - 1


def _string_arguments(record: LogRecord) -> str | None:
    """The path of the first tool call whose arguments stayed a string (not a JSON object), or None."""
    for number, message in enumerate(record.request.messages):
        for call_number, call in enumerate(message.tool_calls or ()):
            if isinstance(call.function.arguments, str):
                return f"request.messages.{number}.tool_calls.{call_number}.function.arguments"
    for number, choice in enumerate(record.response.choices):
        for call_number, call in enumerate(choice.message.tool_calls or ()):
            if isinstance(call.function.arguments, str):
                return f"response.choices.{number}.message.tool_calls.{call_number}.function.arguments"
    return None


def validate_record(
    raw: Any,
    *,
    source: str,
    parse_function_arguments: bool = True,
    expected_workload_id: str | None = None,
    expected_client_id: str | None = None,
    max_bytes: int = MAX_RECORD_BYTES,
    max_depth: int = MAX_RECORD_DEPTH,
    parsed: bool = False,
) -> LogRecord | Quarantined:
    """A :class:`LogRecord`, or a :class:`Quarantined` saying why not; never raises.

    ``source`` names the record in messages (``file.jsonl:17``, ``es:flywheel/<id>``). ``expected_*``
    quarantine records of another workload or client as ``wrong_workload`` (the reader asked for one
    workload; a record of another must not leak into its datasets). Only the first problem is named,
    with a count of the others, so a message stays one line.

    ``parsed=True`` says that ``raw`` is what a JSON parser returned: a tree, no object reached twice.
    The check for values JSON cannot hold then runs in C first (several times faster); the outcome is
    the same. Leave it False for structures built in Python, which may share objects.
    """
    try:
        return _validate(
            raw,
            source,
            parse_function_arguments,
            expected_workload_id,
            expected_client_id,
            max_bytes,
            max_depth,
            parsed,
        )
    except Exception as exc:  # a bug in validation must not stop a run: report it, keep the record
        return _quarantine(Reason.VALIDATION_ERROR, source, None, f"unexpected {type(exc).__name__} in validation", raw)


def _validate(
    raw: Any,
    source: str,
    parse_function_arguments: bool,
    expected_workload_id: str | None,
    expected_client_id: str | None,
    max_bytes: int,
    max_depth: int,
    parsed: bool,
) -> LogRecord | Quarantined:
    if not isinstance(raw, dict):
        return _quarantine(Reason.NOT_AN_OBJECT, source, None, f"expected a JSON object, got {_json_type(raw)}", raw)
    # The timestamp is left to its own validator, which also takes a datetime.
    if not (parsed and _plainly_json(raw, max_depth, max_bytes, _UNCHECKED_TOP)):
        problem = _json_problem(raw, max_depth, max_bytes, skip_top=_UNCHECKED_TOP)
        if problem is not None:
            reason, field, text = problem
            return _quarantine(reason, source, field, text, raw)
    for key, expected in (("workload_id", expected_workload_id), ("client_id", expected_client_id)):
        actual = raw.get(key)
        if expected is not None and isinstance(actual, str) and actual != expected:
            return _quarantine(Reason.WRONG_WORKLOAD, source, key, f"expected {expected!r}, got {_shown(actual)}", raw)
    try:
        record = LogRecord.model_validate(raw)
    except ValidationError as exc:
        error, others = _first_error(exc)
        reason, field = _classify(error)
        text = _error_text(error) + (f" (and {others} more problem{'s' if others > 1 else ''})" if others else "")
        return _quarantine(reason, source, field, text, raw)
    if parse_function_arguments:
        field = _string_arguments(record)
        if field is not None:
            return _quarantine(Reason.ARGUMENTS_NOT_JSON, source, field, "arguments are not a JSON object", raw)
    return record


def _json_type(value: Any) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), f"a {type(value).__name__}")


def parse_jsonl_line(
    line: str | bytes,
    line_no: int,
    *,
    path: str = "<jsonl>",
    workload_id: str | None = None,
    client_id: str | None = None,
    parse_function_arguments: bool = True,
    max_bytes: int = MAX_RECORD_BYTES,
) -> LogRecord | Quarantined | None:
    """Parse and validate one line of a JSONL log file; None for a blank line; never raises.

    ``workload_id`` / ``client_id`` override the record's own (the blueprint's data files are imported
    under a workload of the user's choosing). A quarantined line keeps its original text, so the
    quarantine file holds exactly what the producer wrote.
    """
    source = f"{path}:{line_no}"
    if isinstance(line, bytes | bytearray):
        try:
            text = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            text = bytes(line).decode("utf-8", "surrogateescape").rstrip("\r\n")
            item = _quarantine(Reason.NOT_JSON, source, None, f"not valid UTF-8 (byte {exc.start})", None)
            return dataclasses.replace(item, raw_text=text)
        size = len(line)
    else:
        text = line
        size = len(text.encode("utf-8", "surrogatepass"))
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if not text.strip(_JSON_WHITESPACE):  # only JSON's whitespace: a line of U+001C is not blank
        return None
    if size > max_bytes:
        item = _quarantine(Reason.TOO_LARGE, source, None, f"line of {size} bytes exceeds {max_bytes}", None)
        return dataclasses.replace(item, raw_text=text)
    try:
        raw = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        item = _quarantine(Reason.TOO_LARGE, source, None, "nested too deeply to parse", None)
        return dataclasses.replace(item, raw_text=text)
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to convert
        item = _quarantine(Reason.NOT_JSON, source, None, f"invalid JSON: {str(exc)[:200]}", None)
        return dataclasses.replace(item, raw_text=text)
    if isinstance(raw, dict):
        if workload_id is not None:
            raw["workload_id"] = workload_id
        if client_id is not None:
            raw["client_id"] = client_id
    result = validate_record(
        raw, source=source, parse_function_arguments=parse_function_arguments, max_bytes=max_bytes, parsed=True
    )
    if isinstance(result, Quarantined):
        return dataclasses.replace(result, raw_text=text)
    return result


# --------------------------------------------------------------------------------------------------
# Helpers the pipeline needs
# --------------------------------------------------------------------------------------------------


def _first_message(record: LogRecord) -> Message:
    return record.response.choices[0].message


def is_tool_calling(record: LogRecord) -> bool:
    """Whether the answer calls a tool (the first choice, as the blueprint's workload detection reads it)."""
    return bool(_first_message(record).tool_calls)


def first_tool_name(record: LogRecord) -> str:
    """The first tool the answer calls, or ``"no_tool"``: the stratification label of the split."""
    calls = _first_message(record).tool_calls
    return calls[0].function.name if calls else "no_tool"


def _hashed_message(message: Message) -> dict[str, Any]:
    """The parts of a message the conversation hash reads (role, content, tool calls' names and arguments),
    as the dumped message has them: dumping the whole model costs more than the hash itself."""
    calls = message.tool_calls
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": None
        if calls is None
        else [{"function": {"name": call.function.name, "arguments": call.function.arguments}} for call in calls],
    }


def record_digest(record: LogRecord) -> bytes:
    """The dedupe key as 32 bytes: the SHA-256 digest of
    :func:`~agent_flywheel.conversation.conversation_hash` of the request (:func:`record_hash` is its hex)."""
    tools = record.request.tools
    return conversation_digest(
        [_hashed_message(message) for message in record.request.messages],
        None if tools is None else [{"function": {"name": tool.function.name}} for tool in tools],
    )


def record_hash(record: LogRecord) -> str:
    """The dedupe key: :func:`~agent_flywheel.conversation.conversation_hash` of the request.

    Same conversation and same tools offered means the same hash, whatever the timestamp, answer,
    whitespace or argument encoding; the dataset build dedupes on it across train and eval.
    """
    return record_digest(record).hex()


def to_document(record: LogRecord) -> dict[str, Any]:
    """The record as JSON-able data for indexing: the producer's keys, canonical timestamp and arguments.

    Only keys the producer wrote are emitted (no ``null`` defaults appear), so re-reading the document
    gives back the same record.
    """
    document = record.model_dump(mode="json", exclude_unset=True)
    document["timestamp"] = format_timestamp(record.timestamp)
    return document


def document_id(document: Mapping[str, Any]) -> str:
    """A content hash of an indexed document: re-importing the same file creates no duplicates."""
    encoded = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


class ModelFilter:
    """Keeps the records answered by one of ``models`` (or naming no model), one record at a time, and
    counts the others by model in :attr:`skipped`.

    The flywheel learns from the production model's answers only: canary, load-test and student traffic
    share the log index, and training on a student's own answers would teach it nothing true.
    """

    def __init__(self, models: Collection[str]) -> None:
        self.models = frozenset(models)
        self.skipped: Counter[str] = Counter()

    def __call__(self, record: LogRecord) -> bool:
        """Whether to keep ``record``; a record that is not kept is counted under its model."""
        model = record.request.model
        if model is None or model in self.models:
            return True
        self.skipped[str(model)] += 1
        return False
