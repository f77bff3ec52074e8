"""Validating log records: a :class:`~agent_flywheel.records.schema.LogRecord`, or a
:class:`~agent_flywheel.records.quarantine.Quarantined` saying why not.

Bad input never raises and is never dropped: :func:`validate_record` returns a ``Quarantined`` with a
reason from :class:`~agent_flywheel.records.problems.Reason` and a message naming the record and the field.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from agent_flywheel.records.messages_format import is_messages_line, messages_to_record
from agent_flywheel.records.problems import Reason, path_text, shown
from agent_flywheel.records.quarantine import Quarantined, quarantined
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.strict_json import (
    JSON_WHITESPACE,
    MAX_RECORD_BYTES,
    MAX_RECORD_DEPTH,
    json_problem,
    plainly_json,
    reject_constant,
)

_TOP_FIELDS = ("timestamp", "workload_id", "client_id", "request", "response")
_UNCHECKED_TOP = frozenset({"timestamp"})


def _classify(error: ErrorDetails) -> tuple[Reason, str]:
    loc = tuple(error["loc"])
    top = loc[0] if loc else None
    if error["type"] == "missing":
        return Reason.MISSING_FIELD, path_text(loc)
    if top == "timestamp":
        return Reason.BAD_TIMESTAMP, "timestamp"
    if top in ("workload_id", "client_id"):
        return Reason.BAD_ID, str(top)
    if top == "request":
        if len(loc) > 1 and loc[1] == "messages":
            return Reason.BAD_MESSAGES, path_text(loc)
        return Reason.BAD_REQUEST, path_text(loc)
    if top == "response":
        return Reason.BAD_RESPONSE, path_text(loc)
    return Reason.VALIDATION_ERROR, path_text(loc)


def _error_text(error: ErrorDetails) -> str:
    if error["type"] == "missing":
        return "required field is missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    if error["type"] in ("model_type", "dict_type", "list_type", "string_type"):
        message += f" (got {shown(error.get('input'))})"
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
        return quarantined(Reason.VALIDATION_ERROR, source, None, f"unexpected {type(exc).__name__} in validation", raw)


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
        return quarantined(Reason.NOT_AN_OBJECT, source, None, f"expected a JSON object, got {_json_type(raw)}", raw)
    # The timestamp is left to its own validator, which also takes a datetime.
    if not (parsed and plainly_json(raw, max_depth, max_bytes, _UNCHECKED_TOP)):
        problem = json_problem(raw, max_depth, max_bytes, skip_top=_UNCHECKED_TOP)
        if problem is not None:
            reason, field, text = problem
            return quarantined(reason, source, field, text, raw)
    for key, expected in (("workload_id", expected_workload_id), ("client_id", expected_client_id)):
        actual = raw.get(key)
        if expected is not None and isinstance(actual, str) and actual != expected:
            return quarantined(Reason.WRONG_WORKLOAD, source, key, f"expected {expected!r}, got {shown(actual)}", raw)
    try:
        record = LogRecord.model_validate(raw)
    except ValidationError as exc:
        error, others = _first_error(exc)
        reason, field = _classify(error)
        text = _error_text(error) + (f" (and {others} more problem{'s' if others > 1 else ''})" if others else "")
        return quarantined(reason, source, field, text, raw)
    if parse_function_arguments:
        field = _string_arguments(record)
        if field is not None:
            return quarantined(Reason.ARGUMENTS_NOT_JSON, source, field, "arguments are not a JSON object", raw)
    return _contradiction(record, source, raw) or record


def _contradiction(record: LogRecord, source: str, raw: Any) -> Quarantined | None:
    """A record that contradicts itself, which no model should learn from; None for a consistent one.

    A few attribute reads per choice, so validation stays as fast as before (see ``docs/benchmarks.md``):

    - ``finish_reason: "tool_calls"`` without a tool call: the calls were lost on the way (NeMo Agent
      Toolkit 1.9 with LangChain 1.x exports every tool-calling turn so), and the record would teach
      "answer with nothing";
    - an answer with neither text nor tool calls;
    - ``error_details`` set by the producer (NeMo Agent Toolkit's record of a failed call).
    """
    details = getattr(record, "error_details", None)
    if isinstance(details, str) and details.strip():
        problem = f"the producer reported an error: {details[:200]}"
        return quarantined(Reason.PRODUCER_ERROR, source, "error_details", problem, raw)
    for number, choice in enumerate(record.response.choices):
        message = choice.message
        if message.tool_calls:
            continue
        where = f"response.choices.{number}"
        if getattr(choice, "finish_reason", None) == "tool_calls":
            problem = "finish_reason is 'tool_calls' but the answer has no tool calls (lost by the producer?)"
            return quarantined(Reason.TOOL_CALLS_MISSING, source, f"{where}.message.tool_calls", problem, raw)
        if _empty(message.content):
            problem = "the answer has neither content nor tool calls"
            return quarantined(Reason.EMPTY_ANSWER, source, f"{where}.message", problem, raw)
    return None


def _empty(content: str | list[dict[str, Any]] | None) -> bool:
    if content is None:
        return True
    if isinstance(content, str):
        return not content.strip()
    return not content


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
    imported_at: datetime | None = None,
) -> LogRecord | Quarantined | None:
    """Parse and validate one line of a JSONL log file; None for a blank line; never raises.

    ``workload_id`` / ``client_id`` override the record's own (the blueprint's data files are imported
    under a workload of the user's choosing). A quarantined line keeps its original text, so the
    quarantine file holds exactly what the producer wrote.

    Two things the blueprint's loader accepts are accepted here too, where it indexes them (the import):

    - a line in the blueprint's messages format, ``{"messages": [...], "tools": [...]}``, becomes a log
      record (:mod:`agent_flywheel.records.messages_format`);
    - with ``imported_at``, a record without a ``timestamp`` (absent or null) gets that time, and is
      marked (:attr:`LogRecord.timestamp_assigned`) so its content id ignores it: importing the file again
      adds nothing. Elsewhere (extraction) a record without a timestamp is quarantined: it cannot be
      placed in time.
    """
    source = f"{path}:{line_no}"
    if isinstance(line, bytes | bytearray):
        try:
            text = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            text = bytes(line).decode("utf-8", "surrogateescape").rstrip("\r\n")
            item = quarantined(Reason.NOT_JSON, source, None, f"not valid UTF-8 (byte {exc.start})", None)
            return dataclasses.replace(item, raw_text=text)
        size = len(line)
    else:
        text = line
        size = len(text.encode("utf-8", "surrogatepass"))
    text = text.removeprefix("\ufeff").rstrip("\r\n")
    if not text.strip(JSON_WHITESPACE):  # only JSON's whitespace: a line of U+001C is not blank
        return None
    if size > max_bytes:
        item = quarantined(Reason.TOO_LARGE, source, None, f"line of {size} bytes exceeds {max_bytes}", None)
        return dataclasses.replace(item, raw_text=text)
    try:
        raw = json.loads(text, parse_constant=reject_constant)
    except RecursionError:
        item = quarantined(Reason.TOO_LARGE, source, None, "nested too deeply to parse", None)
        return dataclasses.replace(item, raw_text=text)
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers too long to convert
        item = quarantined(Reason.NOT_JSON, source, None, f"invalid JSON: {str(exc)[:200]}", None)
        return dataclasses.replace(item, raw_text=text)
    stamped = False
    if isinstance(raw, dict):
        if is_messages_line(raw):
            converted = messages_to_record(raw, source)
            if isinstance(converted, Quarantined):
                return dataclasses.replace(converted, raw_text=text)
            raw = converted
            missing = [key for key, given in (("workload_id", workload_id), ("client_id", client_id)) if given is None]
            missing = [key for key in missing if key not in raw]
            if missing:
                problem = (
                    "a messages-format line needs a workload and client: import it with --workload-id and --client-id"
                )
                item = quarantined(Reason.MISSING_FIELD, source, missing[0], problem, raw)
                return dataclasses.replace(item, raw_text=text)
        if workload_id is not None:
            raw["workload_id"] = workload_id
        if client_id is not None:
            raw["client_id"] = client_id
        if imported_at is not None and raw.get("timestamp") is None:
            raw["timestamp"] = imported_at
            stamped = True
    result = validate_record(
        raw, source=source, parse_function_arguments=parse_function_arguments, max_bytes=max_bytes, parsed=True
    )
    if isinstance(result, Quarantined):
        return dataclasses.replace(result, raw_text=text)
    result.timestamp_assigned = stamped
    return result
