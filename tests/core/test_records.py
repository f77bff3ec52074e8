"""The log record schema: canonical forms, the blueprint's published examples, every quarantine reason."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.records import validation
from agent_flywheel.records.documents import document_id, record_hash, to_document
from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord, first_tool_name, is_tool_calling
from agent_flywheel.records.timestamps import format_timestamp, parse_timestamp
from agent_flywheel.records.validation import parse_jsonl_line, validate_record
from tests.support.blueprint_records import AIVA, GENERIC


def record(**changes: Any) -> dict[str, Any]:
    """A deep copy of the AIVA example with top-level keys replaced."""
    raw = copy.deepcopy(AIVA)
    raw.update(changes)
    return raw


def valid(raw: Any, **kwargs: Any) -> LogRecord:
    result = validate_record(raw, source="test:1", **kwargs)
    assert isinstance(result, LogRecord), result
    return result


def quarantined(raw: Any, **kwargs: Any) -> Quarantined:
    result = validate_record(raw, source="test:1", **kwargs)
    assert isinstance(result, Quarantined), f"expected quarantine, got a valid record for {raw!r:.200}"
    assert result.message.startswith("test:1: ")
    assert result.raw is raw
    return result


def set_path(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node: Any = raw
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return raw


# --------------------------------------------------------------------------------------------------
# The published examples
# --------------------------------------------------------------------------------------------------


def test_aiva_example_validates_unchanged_in_meaning() -> None:
    result = valid(copy.deepcopy(AIVA))
    assert result.timestamp == datetime(2025, 5, 1, 22, 26, 57, tzinfo=UTC)
    assert result.workload_id == "primary_assistant" and result.client_id == "aiva-1"
    assert is_tool_calling(result)
    assert first_tool_name(result) == "structured_rag"
    document = to_document(result)
    assert document["timestamp"] == "2025-05-01T22:26:57Z"
    assert {**document, "timestamp": AIVA["timestamp"]} == AIVA  # everything else exactly as written
    json.dumps(document, allow_nan=False)


def test_generic_example_keeps_every_openai_field() -> None:
    result = valid(copy.deepcopy(GENERIC))
    assert not is_tool_calling(result)
    assert first_tool_name(result) == "no_tool"
    document = to_document(result)
    assert {**document, "timestamp": GENERIC["timestamp"]} == GENERIC
    assert document["request"]["temperature"] == 0.2
    assert document["response"]["usage"]["total_tokens"] == 87
    assert document["response"]["choices"][0]["finish_reason"] == "stop"


def test_to_document_round_trips_and_ids_are_content_hashes() -> None:
    first = to_document(valid(copy.deepcopy(AIVA)))
    again = to_document(valid(json.loads(json.dumps(first))))
    assert again == first
    assert document_id(first) == document_id(again)
    other = to_document(valid(record(client_id="aiva-2")))
    assert document_id(other) != document_id(first)


# --------------------------------------------------------------------------------------------------
# Canonical tool-call arguments
# --------------------------------------------------------------------------------------------------

ARGS_PATH = "response.choices.0.message.tool_calls.0.function.arguments"


def test_arguments_string_and_object_give_one_canonical_object() -> None:
    as_object = valid(copy.deepcopy(AIVA))
    as_string = valid(set_path(record(), ARGS_PATH, json.dumps({"query": "account bill processed", "user_id": "4165"})))
    arguments = as_string.response.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index]
    assert arguments == {"query": "account bill processed", "user_id": "4165"}
    assert to_document(as_string) == to_document(as_object)
    assert record_hash(as_string) == record_hash(as_object)


def test_arguments_in_request_history_are_canonical_too() -> None:
    raw = record()
    raw["request"]["messages"].append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": [1]}'}}],
        }
    )
    raw["request"]["messages"].append({"role": "tool", "tool_call_id": "call_1", "content": "ok"})
    document = to_document(valid(raw))
    call = document["request"]["messages"][2]["tool_calls"][0]
    assert call == {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": {"a": [1]}}}
    assert document["request"]["messages"][2]["content"] is None  # an explicit null stays


def test_empty_arguments_string_means_no_arguments() -> None:
    result = valid(set_path(record(), ARGS_PATH, "  "))
    assert to_document(result)["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == {}


@pytest.mark.parametrize("arguments", ['{"query": "x"', "[1, 2]", '"just a string"', '{"a": NaN}', "null"])
def test_arguments_that_are_not_a_json_object(arguments: str) -> None:
    item = quarantined(set_path(record(), ARGS_PATH, arguments))
    assert item.reason == Reason.ARGUMENTS_NOT_JSON
    assert item.field == ARGS_PATH
    assert ARGS_PATH in item.message
    # Without parse_function_arguments the record is accepted and the string kept byte for byte.
    kept = valid(set_path(record(), ARGS_PATH, arguments), parse_function_arguments=False)
    assert to_document(kept)["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == arguments


@pytest.mark.parametrize("arguments", [None, 5, [1, 2], True])
def test_arguments_of_the_wrong_type(arguments: Any) -> None:
    item = quarantined(set_path(record(), ARGS_PATH, arguments))
    assert item.reason == Reason.BAD_RESPONSE
    assert item.field == ARGS_PATH


# --------------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------------

T0 = datetime(2025, 5, 1, 22, 26, 57, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1746138417, T0),
        (1746138417.25, T0.replace(microsecond=250000)),
        ("1746138417", T0),
        (" 1746138417.5 ", T0.replace(microsecond=500000)),
        ("2025-05-01T22:26:57Z", T0),
        ("2025-05-01T22:26:57", T0),  # no zone: UTC
        ("2025-05-01 22:26:57", T0),
        ("2025-05-02T00:26:57+02:00", T0),
        ("2025-05-01T17:26:57-0500", T0),
        ("2025-05-01T22:26:57.123456789Z", T0.replace(microsecond=123456)),
        ("2025-05-01", datetime(2025, 5, 1, tzinfo=UTC)),
        (datetime(2025, 5, 1, 22, 26, 57), T0),
    ],
)
def test_timestamps_are_normalised_to_utc(value: Any, expected: datetime) -> None:
    result = valid(record(timestamp=value))
    assert result.timestamp == expected
    assert result.timestamp.tzinfo == UTC
    assert to_document(result)["timestamp"] == format_timestamp(expected)
    assert to_document(result)["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        True,
        None,
        math.nan,
        math.inf,
        -1,
        1746138417000,  # epoch milliseconds
        10**400,
        "2025-13-01T00:00:00Z",
        "2025-05-01T25:00:00Z",
        "1e400",
        "2025-05-01T22:26:57+99:00",
        [1746138417],
        {"seconds": 1},
        "9" * 200,
    ],
)
def test_bad_timestamps_are_quarantined(value: Any) -> None:
    item = quarantined(record(timestamp=value))
    assert item.reason == Reason.BAD_TIMESTAMP
    assert item.field == "timestamp"
    assert "test:1: timestamp: " in item.message
    assert len(item.message) < 300


def test_parse_timestamp_raises_value_error_only() -> None:
    assert parse_timestamp("2025-05-01T22:26:57Z") == T0
    with pytest.raises(ValueError, match="milliseconds"):
        parse_timestamp(1746138417000)


# --------------------------------------------------------------------------------------------------
# What is accepted and kept
# --------------------------------------------------------------------------------------------------


def test_extra_fields_are_kept_at_every_level() -> None:
    raw = record(description="a note", meta={"tags": ["a", "b"], "score": 0.5})
    raw["request"]["stream"] = False
    raw["request"]["messages"][1]["name"] = "alice"
    raw["response"]["system_fingerprint"] = "fp_1"
    raw["response"]["choices"][0]["logprobs"] = None
    document = to_document(valid(raw))
    assert document["description"] == "a note"
    assert document["meta"] == {"tags": ["a", "b"], "score": 0.5}
    assert document["request"]["stream"] is False
    assert document["request"]["messages"][1]["name"] == "alice"
    assert document["response"]["system_fingerprint"] == "fp_1"
    assert document["response"]["choices"][0]["logprobs"] is None


@pytest.mark.parametrize("key", ["model_config", "model_dump", "__class__", "__dict__", "_private", "json", "copy"])
def test_extra_keys_named_like_python_internals_are_kept(key: str) -> None:
    raw = record(**{key: {"x": 1}})
    raw["request"]["messages"][0][key] = 2
    document = to_document(valid(raw))
    assert document[key] == {"x": 1}
    assert document["request"]["messages"][0][key] == 2


def test_multimodal_content_and_odd_unicode_are_accepted() -> None:
    raw = record()
    raw["request"]["messages"][1]["content"] = [
        {"type": "text", "text": "Was ist das? 🧾 \u202e\u0000 ß"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    result = valid(raw)
    assert to_document(result)["request"]["messages"][1]["content"] == raw["request"]["messages"][1]["content"]
    assert len(record_hash(result)) == 64


def test_workload_ids_are_checked_when_expected() -> None:
    assert isinstance(validate_record(record(), source="x", expected_workload_id="primary_assistant"), LogRecord)
    item = quarantined(record(), expected_workload_id="other")
    assert item.reason == Reason.WRONG_WORKLOAD
    assert item.field == "workload_id"
    assert "expected 'other'" in item.message
    item = quarantined(record(), expected_client_id="aiva-9")
    assert item.reason == Reason.WRONG_WORKLOAD and item.field == "client_id"


# --------------------------------------------------------------------------------------------------
# Every quarantine reason names the record and the field
# --------------------------------------------------------------------------------------------------


def _without(path: str) -> dict[str, Any]:
    raw = record()
    node: Any = raw
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return raw


@pytest.mark.parametrize(
    "path",
    [
        "timestamp",
        "workload_id",
        "client_id",
        "request",
        "response",
        "request.messages",
        "response.choices",
        "response.choices.0.message",
        "request.messages.0.role",
        "response.choices.0.message.tool_calls.0.function",
        "response.choices.0.message.tool_calls.0.function.name",
        "response.choices.0.message.tool_calls.0.function.arguments",
        "request.tools.0.function",
    ],
)
def test_missing_fields(path: str) -> None:
    item = quarantined(_without(path))
    assert item.reason == Reason.MISSING_FIELD
    assert item.field == path
    assert item.message == f"test:1: {path}: required field is missing"


@pytest.mark.parametrize(
    ("path", "value", "reason", "words"),
    [
        ("workload_id", "", Reason.BAD_ID, "non-empty string"),
        ("workload_id", "   ", Reason.BAD_ID, "non-empty string"),
        ("workload_id", "w" * 257, Reason.BAD_ID, "longer than 256"),
        ("client_id", 42, Reason.BAD_ID, "non-empty string"),
        ("request", "hello", Reason.BAD_REQUEST, "valid dictionary"),
        ("request.model", 3, Reason.BAD_REQUEST, "valid string"),
        ("request.tools", {"type": "function"}, Reason.BAD_REQUEST, "valid list"),
        ("request.tools.0.function.name", "", Reason.BAD_REQUEST, "tool name"),
        ("request.tool_choice", 1, Reason.BAD_REQUEST, "tool_choice"),
        ("request.messages", [], Reason.BAD_MESSAGES, "non-empty list"),
        ("request.messages", "hi", Reason.BAD_MESSAGES, "valid list"),
        ("request.messages.1", "hi", Reason.BAD_MESSAGES, "valid dictionary"),
        ("request.messages.1.role", "bot", Reason.BAD_MESSAGES, "role must be one of"),
        ("request.messages.1.role", None, Reason.BAD_MESSAGES, "role must be one of"),
        ("request.messages.1.content", 5, Reason.BAD_MESSAGES, "content must be"),
        ("request.messages.1.content", None, Reason.BAD_MESSAGES, "needs content"),
        ("request.messages.1.content", [{"text": "no type"}], Reason.BAD_MESSAGES, "content part 0"),
        ("request.messages.1.tool_calls", "x", Reason.BAD_MESSAGES, "valid list"),
        ("response", [], Reason.BAD_RESPONSE, "valid dictionary"),
        ("response.choices", [], Reason.BAD_RESPONSE, "non-empty list"),
        ("response.choices.0", None, Reason.BAD_RESPONSE, "valid dictionary"),
        ("response.choices.0.message", "x", Reason.BAD_RESPONSE, "valid dictionary"),
        ("response.choices.0.message.role", "user", Reason.BAD_RESPONSE, "role 'assistant'"),
        ("response.choices.0.message.tool_calls.0.function.name", "", Reason.BAD_RESPONSE, "function name"),
    ],
)
def test_bad_fields(path: str, value: Any, reason: Reason, words: str) -> None:
    item = quarantined(set_path(record(), path, value))
    assert item.reason == reason
    assert item.field is not None and item.field.startswith(path.rsplit(".", 1)[0])
    assert item.message.startswith(f"test:1: {item.field}: ")
    assert words in item.message


def test_the_first_problem_is_named_and_the_others_counted() -> None:
    item = quarantined(record(timestamp="never", workload_id="", request="x"))
    assert item.reason == Reason.BAD_TIMESTAMP
    assert item.message.endswith("(and 2 more problems)")


@pytest.mark.parametrize("raw", [[1, 2], "text", 3, None, True])
def test_not_an_object(raw: Any) -> None:
    item = quarantined(raw)
    assert item.reason == Reason.NOT_AN_OBJECT
    assert "expected a JSON object" in item.message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"score": math.nan}, "extra.score"),
        ({"score": [1, math.inf]}, "extra.score.1"),
        ({"note": "half a pair \ud83d"}, "extra.note"),
        ({"set": {1, 2}}, "extra.set"),
        ({"pair": (1, 2)}, "extra.pair"),
        ({1: "int key"}, "extra"),
        ({"bytes": b"x"}, "extra.bytes"),
    ],
)
def test_values_json_cannot_hold_are_not_json(extra: dict[Any, Any], field: str) -> None:
    item = quarantined(record(extra=extra))
    assert item.reason == Reason.NOT_JSON
    assert item.field == field
    assert item.message.startswith(f"test:1: {field}: ")


def test_too_large_and_too_deep() -> None:
    item = quarantined(record(blob="x" * 5000), max_bytes=4096)
    assert item.reason == Reason.TOO_LARGE
    assert "4096 bytes" in item.message
    deep: Any = "bottom"
    for _ in range(200):
        deep = [deep]
    item = quarantined(record(deep=deep))
    assert item.reason == Reason.TOO_LARGE
    assert "nested deeper than 64" in item.message
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    assert quarantined(record(loop=cyclic)).reason == Reason.TOO_LARGE


def test_a_bug_in_validation_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(validation, "_validate", boom)
    item = quarantined(record())
    assert item.reason == Reason.VALIDATION_ERROR
    assert "KeyError" in item.message


# --------------------------------------------------------------------------------------------------
# JSONL lines
# --------------------------------------------------------------------------------------------------


def test_jsonl_lines() -> None:
    line = json.dumps(AIVA)
    assert isinstance(parse_jsonl_line(line + "\r\n", 1), LogRecord)
    assert isinstance(parse_jsonl_line(("\ufeff" + line).encode(), 1), LogRecord)
    assert parse_jsonl_line(b"   \n", 2) is None
    assert parse_jsonl_line("", 2) is None
    for not_blank in ("\x1c", "\u00a0", "\u2028"):  # whitespace to Python, not to JSON: never silently skipped
        item = parse_jsonl_line(not_blank, 3)
        assert isinstance(item, Quarantined) and item.reason == Reason.NOT_JSON


def test_jsonl_overrides_ids() -> None:
    raw = record()
    del raw["workload_id"]
    result = parse_jsonl_line(json.dumps(raw), 7, workload_id="w", client_id="c")
    assert isinstance(result, LogRecord)
    assert (result.workload_id, result.client_id) == ("w", "c")


@pytest.mark.parametrize(
    ("line", "reason", "words"),
    [
        (b'{"timestamp": 1, "workload_id": ', Reason.NOT_JSON, "invalid JSON"),
        (b'{"a": NaN}', Reason.NOT_JSON, "NaN is not valid JSON"),
        (b'{"a": Infinity}', Reason.NOT_JSON, "Infinity"),
        (b"\xff\xfe{}", Reason.NOT_JSON, "not valid UTF-8"),
        (b"1" * 5000, Reason.NOT_JSON, "invalid JSON"),
        (b"[" * 100_000, Reason.TOO_LARGE, "nested too deeply"),
        (b'"just a string"', Reason.NOT_AN_OBJECT, "got a string"),
        (b"[]", Reason.NOT_AN_OBJECT, "got an array"),
        (b"null", Reason.NOT_AN_OBJECT, "got null"),
    ],
)
def test_bad_lines_keep_their_text(line: bytes, reason: Reason, words: str) -> None:
    item = parse_jsonl_line(line, 12, path="logs.jsonl")
    assert isinstance(item, Quarantined)
    assert item.reason == reason
    assert item.message.startswith("logs.jsonl:12: ")
    assert words in item.message
    assert item.raw_text is not None
    assert item.raw_text.encode("utf-8", "surrogateescape") == line


def test_oversized_line() -> None:
    line = json.dumps(record(blob="y" * 10_000))
    item = parse_jsonl_line(line, 3, path="f", max_bytes=1000)
    assert isinstance(item, Quarantined) and item.reason == Reason.TOO_LARGE
    assert item.raw_text == line
    assert len(item.message) < 200


# --------------------------------------------------------------------------------------------------
# The quarantine file
# --------------------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_quarantine_writer_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "q" / "quarantine.jsonl"
    huge = "z" * 200_000
    with QuarantineWriter(path) as writer:
        assert not path.exists()  # nothing written, no file
        big = parse_jsonl_line(json.dumps(record(workload_id=huge)), 1, path="in.jsonl")
        bad_bytes = parse_jsonl_line(b"\xff{oops", 2, path="in.jsonl")
        nan = validate_record(record(extra=math.nan), source="es:idx/abc")
        surrogate = validate_record(record(timestamp="\udc80"), source="es:idx/def")
        for item in (big, bad_bytes, nan, surrogate):
            assert isinstance(item, Quarantined)
            writer.write(item)
    assert writer.counts == {"bad_id": 1, "not_json": 2, "bad_timestamp": 1}
    assert writer.total == 4
    lines = read_lines(path)
    assert [line["reason"] for line in lines] == ["bad_id", "not_json", "not_json", "bad_timestamp"]
    assert [line["source"] for line in lines] == ["in.jsonl:1", "in.jsonl:2", "es:idx/abc", "es:idx/def"]
    # the huge record: in full in the file, truncated in the message
    assert json.loads(lines[0]["raw_text"])["workload_id"] == huge
    assert len(lines[0]["message"]) <= 1000
    # undecodable bytes come back exactly
    assert lines[1]["raw_text"].encode("utf-8", "surrogateescape") == b"\xff{oops"
    # NaN cannot be JSON: kept as a repr
    assert "NaN" in lines[2]["raw_repr"]
    # a lone surrogate is escaped, not lost
    assert lines[3]["raw"]["timestamp"] == "\udc80"
    assert lines[2]["field"] == "extra" and lines[3]["field"] == "timestamp"

    with QuarantineWriter(path) as again:  # appends
        again.write(Quarantined(reason=Reason.TOO_LARGE, message="m", source="s", raw={"a": 1}))
    assert len(read_lines(path)) == 5
