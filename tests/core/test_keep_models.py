"""The flywheel learns only from the teacher's answers: other models' records are skipped and counted."""

from __future__ import annotations

import copy

from agent_flywheel.records.model_filter import ModelFilter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record
from tests.support.blueprint_records import AIVA


def _record(model: str | None) -> LogRecord:
    raw = copy.deepcopy(AIVA)
    if model is None:
        del raw["request"]["model"]
    else:
        raw["request"]["model"] = model
    record = validate_record(raw, source="test")
    assert isinstance(record, LogRecord)
    return record


def test_keeps_the_teacher_and_records_without_a_model() -> None:
    records = [_record("teacher"), _record("student"), _record(None), _record("student"), _record("canary")]
    keep = ModelFilter({"teacher"})
    kept = [record for record in records if keep(record)]
    assert [r.request.model for r in kept] == ["teacher", None]
    assert keep.skipped == {"student": 2, "canary": 1}
