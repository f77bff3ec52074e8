"""The blueprint's input files at import: its messages format, records without a timestamp, NAT's records;
then incremental extraction reads each imported record exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.reader import extract
from agent_flywheel.logstore.traffic import count_since
from agent_flywheel.logstore.writer import ImportReport, import_jsonl
from agent_flywheel.records.messages_format import messages_to_record
from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import parse_jsonl_line
from tests.support.blueprint_records import AIVA, GENERIC
from tests.support.logserver import logserver_client
from tests.support.nat_records import nat_answer, nat_lost_tool_call, nat_tool_call

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

# A line as NeMo training files (and the blueprint's load_test_data.py) hold it.
MESSAGES_LINE: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "You are a chatbot that helps with purchase history."},
        {"role": "user", "content": "Has my bill been processed?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "structured_rag", "arguments": {"query": "bill processed", "user_id": "4165"}},
                }
            ],
        },
    ],
    "tools": AIVA["request"]["tools"],
}


def messages_line(i: int) -> dict[str, Any]:
    line = json.loads(json.dumps(MESSAGES_LINE))
    line["messages"][1]["content"] = f"Has my bill {i} been processed?"
    return line


def generic_without_timestamp(i: int) -> dict[str, Any]:
    record = json.loads(json.dumps(GENERIC))
    del record["timestamp"]
    record["request"]["messages"][-1]["content"] = f"How many vacation days do I have in year {i}?"
    return record


class Clock:
    """A fake clock for the import: each reading is one millisecond later."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    with logserver_client(tmp_path_factory.mktemp("logserver")) as client:
        yield client


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def run_import(es: Elasticsearch, index: str, path: Path, clock: Clock, tmp_path: Path) -> ImportReport:
    with QuarantineWriter(tmp_path / f"quarantine-{path.stem}.jsonl") as quarantine:
        return import_jsonl(
            ElasticsearchClient(es),
            index,
            path,
            workload_id="aiva",
            client_id="dev",
            quarantine=quarantine,
            clock=clock,
            chunk_size=3,
        )


def test_a_messages_line_becomes_a_log_record_with_the_last_message_as_answer() -> None:
    record = messages_to_record(MESSAGES_LINE, "f:1")
    assert isinstance(record, dict)
    assert record["request"]["messages"] == MESSAGES_LINE["messages"][:-1]
    assert record["request"]["tools"] == MESSAGES_LINE["tools"]
    assert "model" not in record["request"]  # kept by teacher_only, unlike the blueprint's "not-a-model"
    choice = record["response"]["choices"][0]
    assert choice["message"] == MESSAGES_LINE["messages"][-1] and choice["finish_reason"] == "tool_calls"


def test_parse_line_converts_and_stamps_with_the_import_time() -> None:
    now = T0 + timedelta(seconds=3)
    result = parse_jsonl_line(json.dumps(MESSAGES_LINE), 1, workload_id="aiva", client_id="dev", imported_at=now)
    assert isinstance(result, LogRecord)
    assert result.timestamp == now and result.timestamp_assigned
    assert result.response.choices[0].message.tool_calls
    dated = parse_jsonl_line(json.dumps({**MESSAGES_LINE, "timestamp": 1746138417}), 2, workload_id="a", client_id="d")
    assert isinstance(dated, LogRecord) and not dated.timestamp_assigned
    assert dated.timestamp == datetime.fromtimestamp(1746138417, UTC)


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "messages", "at least two messages"),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "hello?"}]},
            "messages.1",
            "the last message must be the assistant's answer",
        ),
        ({"messages": "hi"}, "messages", "at least two messages"),
    ],
)
def test_a_messages_line_that_is_not_a_conversation_is_quarantined(
    line: dict[str, Any], field: str, words: str
) -> None:
    result = parse_jsonl_line(json.dumps(line), 5, path="in.jsonl", workload_id="w", client_id="c", imported_at=T0)
    assert isinstance(result, Quarantined)
    assert (result.reason, result.field) == (Reason.BAD_MESSAGES, field) and words in result.message
    assert result.raw_text == json.dumps(line)


def test_a_messages_line_needs_a_workload() -> None:
    result = parse_jsonl_line(json.dumps(MESSAGES_LINE), 1, path="in.jsonl", imported_at=T0)
    assert isinstance(result, Quarantined) and result.reason == Reason.MISSING_FIELD
    assert "--workload-id" in result.message


def test_without_an_import_time_a_missing_timestamp_is_still_refused() -> None:
    result = parse_jsonl_line(json.dumps(generic_without_timestamp(1)), 1, workload_id="w", client_id="c")
    assert isinstance(result, Quarantined) and (result.reason, result.field) == (Reason.MISSING_FIELD, "timestamp")


@pytest.mark.integration
def test_import_then_incremental_extraction_reads_every_record_exactly_once(es: Elasticsearch, tmp_path: Path) -> None:
    """Imported once, then more added: each extraction reads exactly the records that are new to it."""
    index = "blueprint-import"
    clock = Clock(T0)
    first = [messages_line(i) for i in range(4)] + [generic_without_timestamp(i) for i in range(3)]
    first += [{**nat_tool_call(1), "timestamp": int(T0.timestamp()) - 60}, nat_lost_tool_call(2)]
    report = run_import(es, index, write(tmp_path / "first.jsonl", first), clock, tmp_path)
    assert (report.indexed, report.quarantined) == (8, {str(Reason.TOOL_CALLS_MISSING): 1})

    def read(since: Any) -> Any:
        with QuarantineWriter(tmp_path / "extract-quarantine.jsonl") as quarantine:
            return extract(
                ElasticsearchClient(es), index, workload_id="aiva", client_id="dev", since=since, quarantine=quarantine
            )

    one = read(None)
    assert one.valid == 8 and one.quarantined == {}
    # the same file again adds nothing, although its records without a timestamp are stamped anew
    again = run_import(es, index, write(tmp_path / "first.jsonl", first), clock, tmp_path)
    assert (again.indexed, again.duplicates) == (0, 8)
    assert read(one.watermark).valid == 0

    second = [messages_line(10 + i) for i in range(3)] + [generic_without_timestamp(10), nat_answer(9)]
    more = run_import(es, index, write(tmp_path / "second.jsonl", second), clock, tmp_path)
    assert more.indexed == 5
    two = read(one.watermark)
    questions = {r.request.messages[-1].content for r in two.records}
    # nat_answer(9) carries its own (older) timestamp: like any late record, it is not seen incrementally
    assert two.valid == 4 and "Where is my order 1009?" not in questions
    assert read(two.watermark).valid == 0
    assert count_since(ElasticsearchClient(es), index, "aiva", "dev", None) == 13
