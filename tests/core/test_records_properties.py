"""Property tests: malformed, truncated, oversized and hostile records never crash validation or get lost."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_flywheel.datasets.formats import to_eval_record, to_training_example
from agent_flywheel.jsonlines import dump_line, load_line
from agent_flywheel.records.conversation import conversation_hash
from agent_flywheel.records.documents import record_digest, record_hash, to_document
from agent_flywheel.records.keys import record_keys
from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.strict_json import MAX_RECORD_BYTES, MAX_RECORD_DEPTH, json_problem, plainly_json
from agent_flywheel.records.timestamps import format_timestamp, parse_timestamp
from agent_flywheel.records.tool_arguments import request_with_string_arguments
from agent_flywheel.records.validation import parse_jsonl_line, validate_record
from tests.support.strategies import BASE_RECORD, hostile_json, mutated_records, valid_records

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def strict_json(document: Any) -> str:
    return json.dumps(document, allow_nan=False, ensure_ascii=False).encode("utf-8").decode("utf-8")


def expected_document(raw: dict[str, Any]) -> dict[str, Any]:
    """What a valid record must index as: the input itself, with only timestamp and arguments canonical."""
    document = copy.deepcopy(raw)
    document["timestamp"] = format_timestamp(parse_timestamp(raw["timestamp"]))
    messages = list(document["request"]["messages"]) + [choice["message"] for choice in document["response"]["choices"]]
    for message in messages:
        for call in message.get("tool_calls") or []:
            arguments = call["function"]["arguments"]
            if isinstance(arguments, str):
                if not arguments.strip():
                    call["function"]["arguments"] = {}
                    continue
                try:
                    parsed = json.loads(arguments)
                except ValueError:
                    continue
                if isinstance(parsed, dict):
                    call["function"]["arguments"] = parsed
    return document


def check(result: LogRecord | Quarantined, source: str, raw: Any = None) -> None:
    """Never an internal error; a quarantine names the record; a valid record indexes as what it was."""
    assert isinstance(result, LogRecord | Quarantined)
    if isinstance(result, Quarantined):
        assert result.reason in Reason
        assert result.reason != Reason.VALIDATION_ERROR, result.message
        assert result.message.startswith(source + ": ")
        assert len(result.message) <= 1000
    else:
        document = to_document(result)
        strict_json(document)
        if raw is not None:
            assert document == expected_document(raw)
        assert len(record_hash(result)) == 64


# ------------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------------


@SETTINGS
@given(valid_records())
def test_well_formed_records_always_validate_and_round_trip(raw: dict[str, Any]) -> None:
    original = copy.deepcopy(raw)
    result = validate_record(raw, source="gen:1")
    assert isinstance(result, LogRecord), result
    assert raw == original  # validation does not modify its input
    document = to_document(result)
    text = strict_json(document)
    again = validate_record(json.loads(text), source="gen:2")
    assert isinstance(again, LogRecord)
    assert to_document(again) == document
    assert record_hash(again) == record_hash(result)
    assert set(document) == set(raw)  # extra top-level fields kept


@SETTINGS
@given(mutated_records())
def test_mutated_records_never_raise(raw: Any) -> None:
    check(validate_record(raw, source="mut:1"), "mut:1", raw)


FREE_FIELDS = (
    "extra",
    "request.temperature",
    "response.usage",
    "request.messages.0.name",
    "request.tools.0.function.parameters",
)


@SETTINGS
@given(valid_records(), st.sampled_from(FREE_FIELDS), hostile_json)
def test_hostile_values_in_free_fields_are_kept_exactly_or_quarantined(
    raw: dict[str, Any], where: str, value: Any
) -> None:
    raw.setdefault("request", {}).setdefault("tools", [{"type": "function", "function": {"name": "t"}}])
    node: Any = raw
    *parents, last = [int(p) if p.isdigit() else p for p in where.split(".")]
    for part in parents:
        node = node[part]
    node[last] = value
    result = validate_record(raw, source="free:1")
    check(result, "free:1", raw)
    if isinstance(result, Quarantined):
        assert result.reason in (Reason.NOT_JSON, Reason.TOO_LARGE, Reason.BAD_REQUEST, Reason.BAD_MESSAGES), result
        try:
            strict_json(raw)
        except (ValueError, UnicodeError):
            return  # it could not have been indexed as it is
        assert result.reason != Reason.NOT_JSON


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 4))
def test_oversized_records_are_too_large(megabytes: int) -> None:
    raw = {"blob": "x" * (megabytes * 1024 * 1024), "nested": [["y" * 1000] * 100] * 10}
    result = validate_record(raw, source="big:1", max_bytes=MAX_RECORD_BYTES // 8)
    assert isinstance(result, Quarantined) and result.reason == Reason.TOO_LARGE


@SETTINGS
@given(hostile_json)
def test_arbitrary_values_never_raise(raw: Any) -> None:
    result = validate_record(raw, source="any:1")
    check(result, "any:1")
    assert isinstance(result, Quarantined)  # nothing random is a valid record


@st.composite
def jsonl_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "truncated", "bytes", "blank", "oversized", "deep", "scalar"]))
    if kind == "valid":
        return json.dumps(draw(valid_records())).encode()
    if kind == "mutated":
        raw = draw(mutated_records())
        try:
            return json.dumps(raw, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return b"{broken"
    if kind == "truncated":
        text = json.dumps(draw(valid_records())).encode()
        return text[: draw(st.integers(0, len(text) - 1))]
    if kind == "bytes":
        return draw(st.binary(max_size=60)).replace(b"\n", b" ")
    if kind == "blank":
        return draw(st.sampled_from([b"", b"   ", b"\t", b"\r", b"\x1c", b"\xc2\xa0", b"\xe2\x80\xa8"]))
    if kind == "oversized":
        return json.dumps({**draw(valid_records()), "blob": "x" * 3000}).encode()
    if kind == "deep":
        depth = draw(st.integers(50, 3000))
        return b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    return draw(st.sampled_from([b"1", b"null", b'"s"', b"[]", b"NaN", b"true"]))


@SETTINGS
@given(lines=st.lists(jsonl_lines(), min_size=1, max_size=15))
def test_jsonl_counts_are_exact(tmp_path_factory: Any, lines: list[bytes]) -> None:
    folder: Path = tmp_path_factory.mktemp("jsonl")
    data = folder / "in.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    good = blank = 0
    with QuarantineWriter(folder / "quarantine.jsonl") as writer, data.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            result = parse_jsonl_line(line, line_no, path="in.jsonl", max_bytes=2048)
            if result is None:
                blank += 1
                assert not line.strip(b" \t\r\n")
                continue
            check(result, f"in.jsonl:{line_no}")
            if isinstance(result, Quarantined):
                assert result.raw_text is not None
                assert result.raw_text.encode("utf-8", "surrogateescape") == line.rstrip(b"\r\n").removeprefix(
                    b"\xef\xbb\xbf"
                )
                writer.write(result)
            else:
                good += 1
    assert good + writer.total + blank == len(lines)
    written = (folder / "quarantine.jsonl").read_text().splitlines() if writer.total else []
    assert len(written) == writer.total
    assert sum(writer.counts.values()) == writer.total
    for entry in map(json.loads, written):
        assert entry["reason"] in {reason.value for reason in Reason}
        assert "raw_text" in entry


# ------------------------------------------------------------------------------------------------
# The fast JSON check (validate_record(parsed=True)) against the exact walk
# ------------------------------------------------------------------------------------------------


def _old_record_hash(record: LogRecord) -> str:
    """record_hash as it was first written: the conversation hash of the dumped request models."""
    tools = record.request.tools
    return conversation_hash(
        [message.model_dump(exclude_unset=True) for message in record.request.messages],
        None if tools is None else [tool.model_dump(exclude_unset=True) for tool in tools],
    )


@SETTINGS
@given(st.one_of(valid_records(), mutated_records(), hostile_json))
def test_a_parsed_record_gets_the_outcome_of_the_exact_check(raw: Any) -> None:
    exact = validate_record(raw, source="p:1")
    fast = validate_record(raw, source="p:1", parsed=True)
    assert type(fast) is type(exact)
    if isinstance(exact, Quarantined):
        assert isinstance(fast, Quarantined)
        assert (fast.reason, fast.field, fast.message) == (exact.reason, exact.field, exact.message)
    else:
        assert isinstance(fast, LogRecord)
        assert to_document(fast) == to_document(exact)
        assert record_hash(fast) == _old_record_hash(fast)
        assert record_digest(fast).hex() == record_hash(fast)


@SETTINGS
@given(valid_records(), st.booleans())
def test_the_extraction_digest_is_the_digest_the_record_cache_computes_from_the_document(
    raw: dict[str, Any], parse_arguments: bool
) -> None:
    """Extraction hands its dedupe digest to the cache writer instead of hashing the document again."""
    record = validate_record(raw, source="p:1", parse_function_arguments=parse_arguments)
    assert isinstance(record, LogRecord)
    keys = record_keys(to_document(record))
    assert keys is not None and keys.digest == record_digest(record)


@SETTINGS
@given(valid_records(), st.booleans())
def test_the_record_cache_form_gives_the_same_keys_and_dataset_lines(
    raw: dict[str, Any], parse_arguments: bool
) -> None:
    """The cache stores request arguments as strings; what the build makes of a record must not change."""
    record = validate_record(raw, source="p:1", parse_function_arguments=parse_arguments)
    assert isinstance(record, LogRecord)
    document = to_document(record)
    stored = load_line(dump_line(request_with_string_arguments(document)))
    assert record_keys(stored) == record_keys(document)
    for tool_calling in (True, False):
        assert dump_line(to_training_example(stored, tool_calling)) == dump_line(
            to_training_example(document, tool_calling)
        )
    assert dump_line(to_eval_record(stored)) == dump_line(to_eval_record(document))


@SETTINGS
@given(hostile_json, st.integers(0, 6), st.one_of(st.integers(0, 600), st.just(MAX_RECORD_BYTES)), hostile_json)
def test_the_fast_check_passes_only_what_the_exact_walk_passes(
    value: Any, max_depth: int, max_bytes: int, timestamp: Any
) -> None:
    if plainly_json(value, max_depth, max_bytes):
        assert json_problem(value, max_depth, max_bytes) is None
    skip = frozenset({"timestamp"})
    record = {"timestamp": timestamp, "value": value}
    if plainly_json(record, max_depth, max_bytes, skip):
        assert json_problem(record, max_depth, max_bytes, skip) is None


@SETTINGS
@given(valid_records())
def test_the_fast_check_passes_ordinary_records(raw: dict[str, Any]) -> None:
    """Otherwise ``parsed=True`` would be correct but no faster."""
    assert plainly_json(raw, MAX_RECORD_DEPTH, MAX_RECORD_BYTES, frozenset({"timestamp"}))


@pytest.mark.parametrize(
    "value",
    [[1] * 12, [True, None, False], {"a": 1, "b": [0, 0]}, [[]] * 5, {"": ""}, [1.5, -2.0], "ab", 7],
)
def test_the_fast_check_never_passes_a_value_over_the_size_limit(value: Any) -> None:
    """Small integers count 8 bytes but are written as 1: the fast check must not trust the text's length."""
    for max_bytes in range(0, 200):
        if plainly_json(value, MAX_RECORD_DEPTH, max_bytes):
            assert json_problem(value, MAX_RECORD_DEPTH, max_bytes) is None, max_bytes


@pytest.mark.parametrize("parsed", [False, True])
def test_nesting_limit_is_exact_whichever_check_runs(parsed: bool) -> None:
    raw = copy.deepcopy(BASE_RECORD)
    nested: Any = "bottom"
    for _ in range(MAX_RECORD_DEPTH - 1):  # raw["deep"] is at depth 1, so "bottom" ends at MAX_RECORD_DEPTH
        nested = [nested]
    raw["deep"] = nested
    assert isinstance(validate_record(raw, source="d:1", parsed=parsed), LogRecord)
    assert plainly_json(raw, MAX_RECORD_DEPTH, MAX_RECORD_BYTES, frozenset({"timestamp"}))  # decided in C
    raw["deep"] = [nested]
    result = validate_record(raw, source="d:1", parsed=parsed)
    assert isinstance(result, Quarantined) and result.reason == Reason.TOO_LARGE
    assert result.field == "deep" + ".0" * MAX_RECORD_DEPTH
