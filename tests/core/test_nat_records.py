"""NeMo Agent Toolkit's data-flywheel records: read as its exporter writes them; self-contradicting ones quarantined."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.datasets.formats import to_training_example
from agent_flywheel.logstore.reader import extract
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord, first_tool_name, is_tool_calling
from agent_flywheel.records.validation import parse_jsonl_line, validate_record
from tests.support.fake_es import FakeLogStoreClient
from tests.support.nat_records import (
    NAT_CLIENT_ID,
    NAT_WORKLOAD_ID,
    nat_answer,
    nat_empty_answer,
    nat_lost_tool_call,
    nat_record,
    nat_tool_call,
)


def test_a_nat_tool_call_is_read_with_its_extra_fields_kept() -> None:
    raw = nat_tool_call(3)
    record = validate_record(raw, source="nat:1")
    assert isinstance(record, LogRecord), record
    assert record.workload_id == "<workflow>"
    assert is_tool_calling(record) and first_tool_name(record) == "get_order_status"
    document = to_document(record)
    assert document["contract_version"] == "1.0" and document["error_details"] is None
    assert document["request"]["temperature"] is None and document["request"]["max_tokens"] is None
    assert document["response"]["usage"]["token_usage"]["total_tokens"] == 141  # NAT's usage shape, kept
    assert "id" not in document["response"]["choices"][0]["message"]["tool_calls"][0]  # NAT writes no call ids
    example = to_training_example(document, True)
    assert example["messages"][-1]["tool_calls"][0]["function"]["arguments"] == '{"order_id": "1003"}'


@pytest.mark.parametrize(
    "raw",
    [
        nat_answer(1),
        nat_record(2, tool_calls=None, content="It shipped.", finish_reason=None, with_tools=False),
        nat_record(3, tool_calls=None, content="It shipped.", finish_reason="length", history=True),
        nat_record(4, tool_calls=None, content="It shipped.", finish_reason="stop", contract_version="1.1"),
        nat_record(5, tool_calls=None, content="It shipped.", finish_reason="stop", timestamp=0),
    ],
    ids=["answer", "no-tools-null-finish", "history", "contract-1.1", "timestamp-0"],
)
def test_every_nat_shape_validates(raw: dict[str, Any]) -> None:
    assert isinstance(validate_record(raw, source="nat:1"), LogRecord)


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (nat_lost_tool_call(1), Reason.TOOL_CALLS_MISSING, "response.choices.0.message.tool_calls"),
        (nat_empty_answer(2), Reason.EMPTY_ANSWER, "response.choices.0.message"),
        (
            nat_record(3, tool_calls=None, content=None, finish_reason=None),
            Reason.EMPTY_ANSWER,
            "response.choices.0.message",
        ),
        (
            {**nat_answer(4), "error_details": "LLM call timed out"},
            Reason.PRODUCER_ERROR,
            "error_details",
        ),
    ],
    ids=["tool-calls-lost", "empty-content", "null-content", "error-details"],
)
def test_self_contradicting_records_are_quarantined_with_a_reason(
    raw: dict[str, Any], reason: Reason, field: str
) -> None:
    result = validate_record(raw, source="nat:7")
    assert isinstance(result, Quarantined)
    assert (result.reason, result.field) == (reason, field)
    assert result.message.startswith(f"nat:7: {field}: ")


def test_a_multimodal_answer_with_parts_is_not_empty() -> None:
    raw = nat_answer(1)
    raw["response"]["choices"][0]["message"]["content"] = [{"type": "text", "text": "Shipped."}]
    assert isinstance(validate_record(raw, source="x"), LogRecord)
    raw["response"]["choices"][0]["message"]["content"] = []
    result = validate_record(raw, source="x")
    assert isinstance(result, Quarantined) and result.reason == Reason.EMPTY_ANSWER


def test_a_quarantined_import_line_keeps_the_producers_text(tmp_path: Path) -> None:
    line = json.dumps(nat_lost_tool_call(1))
    result = parse_jsonl_line(line, 4, path="nat.jsonl")
    assert isinstance(result, Quarantined) and result.reason == Reason.TOOL_CALLS_MISSING
    assert result.raw_text == line and result.source == "nat.jsonl:4"


def test_extraction_counts_what_it_quarantines_and_learns_from_the_rest(tmp_path: Path) -> None:
    """221 records as in the reported run: 146 lost tool calls, the rest fine; none of the 146 is learned."""
    raws = [nat_lost_tool_call(i) if i % 3 else nat_tool_call(i) for i in range(221)]
    raws += [nat_empty_answer(300), nat_answer(301)]
    es = FakeLogStoreClient([(f"doc-{i}", raw) for i, raw in enumerate(raws)])
    quarantine_path = tmp_path / "quarantine.jsonl"
    with QuarantineWriter(quarantine_path) as quarantine:
        result = extract(
            es,  # type: ignore[arg-type]
            "flywheel",
            workload_id=NAT_WORKLOAD_ID,
            client_id=NAT_CLIENT_ID,
            quarantine=quarantine,
        )
    lost = sum(1 for i in range(221) if i % 3)
    assert lost == 147
    assert result.quarantined == {"tool_calls_missing": lost, "empty_answer": 1}
    assert result.valid == len(raws) - lost - 1
    assert all(is_tool_calling(r) or r.response.choices[0].message.content for r in result.records)
    lines = [json.loads(line) for line in quarantine_path.read_text().splitlines()]
    assert {line["reason"] for line in lines} == {"tool_calls_missing", "empty_answer"} and len(lines) == lost + 1
