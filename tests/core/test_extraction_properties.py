"""Property tests, end to end: hostile log records through extraction and the dataset build.

``tests/core/test_records_properties.py`` checks the record validator alone. Here the same generators
(valid, mutated, hostile, oversized, deeply nested records, arguments that are not JSON, records of
another workload) go through the flywheel's first two steps: :func:`agent_flywheel.logstore.reader.extract`
(paging a store that serves them as they are) and :func:`agent_flywheel.datasets.build.build_datasets`. The
properties: nothing raises (short of the documented :class:`InsufficientRecordsError`), every bad record
is quarantined once with the reason the validator gives it, and every count adds up exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig
from agent_flywheel.datasets.build import InsufficientRecordsError, build_datasets
from agent_flywheel.logstore.reader import extract
from agent_flywheel.records.documents import record_digest, record_hash, to_document
from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record
from simulators.nemo.upstream import parse_rows
from tasks.datasets import jsonl_safe
from tests.support.blueprint_records import AIVA
from tests.support.fake_es import CLIENT, INDEX, WORKLOAD, FakeLogStoreClient
from tests.support.strategies import hostile_json, mutated_records, valid_records

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
HUGE = "x" * (9 * 1024 * 1024)  # over MAX_RECORD_BYTES (8 MiB); built once, shared by examples


def _ours(raw: dict[str, Any]) -> dict[str, Any]:
    raw["workload_id"], raw["client_id"] = WORKLOAD, CLIENT
    return raw


@st.composite
def arguments_not_json(draw: st.DrawFn) -> dict[str, Any]:
    raw = _ours(draw(valid_records()))
    raw["response"]["choices"][0]["message"]["tool_calls"] = [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": draw(st.sampled_from(["x=1", "{"]))}}
    ]
    return raw


@st.composite
def sources(draw: st.DrawFn) -> Any:
    """One ``_source`` as a store might hand it back: mostly records of the workload, some of them hostile."""
    kind = draw(
        st.sampled_from(
            ["valid", "valid", "valid", "mutated", "hostile", "other_workload", "arguments", "oversized", "deep"]
        )
    )
    if kind == "valid":
        return _ours(draw(valid_records()))
    if kind == "mutated":
        raw = draw(mutated_records())
        return _ours(raw) if isinstance(raw, dict) and draw(st.booleans()) else raw
    if kind == "hostile":
        return draw(hostile_json)
    if kind == "other_workload":
        raw = _ours(draw(valid_records()))
        raw["workload_id"] = draw(st.sampled_from(["other", WORKLOAD + " ", WORKLOAD.upper()]))
        return raw
    if kind == "arguments":
        return draw(arguments_not_json())
    raw = _ours(draw(valid_records()))
    if kind == "oversized":
        raw["request"]["messages"][0]["content"] = HUGE
        return raw
    nested: Any = "bottom"
    for _ in range(draw(st.integers(70, 400))):
        nested = {"d": nested}
    raw["metadata"] = nested
    return raw


@st.composite
def stores(draw: st.DrawFn) -> list[tuple[str, Any]]:
    documents = draw(st.lists(sources(), min_size=0, max_size=25))
    if documents and draw(st.booleans()):  # the same conversation logged again: a duplicate, not a new record
        first = documents[0]
        if isinstance(first, dict):
            documents.append(copy.deepcopy(first))
    return [(f"doc-{n}", doc) for n, doc in enumerate(documents)]


def _expected(documents: list[tuple[str, Any]]) -> tuple[Counter[str], list[LogRecord]]:
    """The oracle: what the validator (tested on its own) says about each document."""
    reasons: Counter[str] = Counter()
    valid: list[LogRecord] = []
    for doc_id, source in documents:
        result = validate_record(
            copy.deepcopy(source),
            source=f"es:{INDEX}/{doc_id}",
            expected_workload_id=WORKLOAD,
            expected_client_id=CLIENT,
        )
        if isinstance(result, Quarantined):
            reasons[str(result.reason)] += 1
        else:
            valid.append(result)
    return reasons, valid


def _lines(path: Path) -> list[str]:
    """The lines of a JSONL file as a JSONL reader sees them (split on ``\\n`` only)."""
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line] if path.exists() else []


def _uploaded_rows(path: Path) -> list[dict[str, Any]]:
    """The rows the NeMo (simulator) services read from a file as ``upload_datasets`` uploads it."""
    return parse_rows(jsonl_safe(path.read_bytes()), path.name)


@SETTINGS
@given(documents=stores(), page_size=st.integers(1, 7), limit=st.one_of(st.none(), st.integers(1, 30)))
def test_extraction_then_dataset_build_never_crash_and_every_count_is_exact(
    tmp_path_factory: Any, documents: list[tuple[str, Any]], page_size: int, limit: int | None
) -> None:
    folder: Path = tmp_path_factory.mktemp("extract")
    store = FakeLogStoreClient(documents)
    with QuarantineWriter(folder / "quarantine.jsonl") as quarantine:
        result = extract(
            store,  # type: ignore[arg-type]
            INDEX,
            workload_id=WORKLOAD,
            client_id=CLIENT,
            page_size=page_size,
            limit=limit,
            quarantine=quarantine,
        )
    assert store.open_pits == 0  # the point in time is closed, whatever happened

    reasons, valid = _expected(documents)
    assert Reason.VALIDATION_ERROR not in reasons  # a crash inside validation would show up here
    if limit is None or len({record_hash(r) for r in valid}) < limit:  # read to the end
        assert result.scanned == len(documents)
        assert dict(result.quarantined) == dict(reasons)
        assert result.valid == len(valid)
    assert result.scanned == result.valid + sum(result.quarantined.values())
    assert len(result.records) == result.valid - result.duplicates
    assert len({record_hash(r) for r in result.records}) == len(result.records)
    quarantined = [json.loads(line) for line in _lines(folder / "quarantine.jsonl")]
    assert len(quarantined) == sum(result.quarantined.values()) == quarantine.total
    assert Counter(q["reason"] for q in quarantined) == Counter(result.quarantined)
    assert all(q["message"].startswith(f"es:{INDEX}/doc-") for q in quarantined)

    records = [to_document(r) for r in result.records]
    try:
        build = build_datasets(
            records,
            DataSplitConfig(eval_size=3, min_total_records=1, limit=12, val_ratio=0.2, min_train_records=1),
            ICLConfig(max_examples=2, min_examples=0),
            EvaluationConfig(),
            [NIMConfig(model_name="meta/llama-3.2-1b-instruct")],
            folder / "datasets",
        )
    except InsufficientRecordsError as exc:
        assert f"read {len(records)}" in str(exc)
        return
    counts, removed = build.counts, build.removed
    assert counts["read"] == len(records)
    assert sum(removed.values()) + counts["selected"] == counts["read"]
    assert counts["eval"] + counts["validation"] + counts["train"] == counts["selected"]
    assert len(_lines(build.eval_path)) == counts["eval"]
    assert len(_lines(build.train_path)) == counts["train"]
    assert len(_lines(build.val_path)) == counts["validation"]
    assert len(_uploaded_rows(build.eval_path)) == counts["eval"]  # what a NeMo service reads, row for row
    assert len(_uploaded_rows(build.train_path)) == counts["train"]
    assert len(_uploaded_rows(build.val_path)) == counts["validation"]
    manifest = json.loads(build.manifest_path.read_text(encoding="utf-8"))
    assert manifest["counts"] == counts


LINE_BREAKERS = ["\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\r", "\n\n"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(breaker=st.sampled_from(LINE_BREAKERS), records=st.lists(valid_records(), min_size=4, max_size=8))
def test_line_breaking_characters_inside_records_never_split_an_uploaded_row(
    tmp_path_factory: Any, breaker: str, records: list[dict[str, Any]]
) -> None:
    """A user message with a pasted U+2028 (or NEL, or a form feed) is one row for every JSONL reader."""
    documents = []
    for n, raw in enumerate(records):
        raw = _ours(raw)
        raw["request"]["messages"] = [{"role": "user", "content": f"line one{breaker}line two {n}"}]
        result = validate_record(raw, source=f"t:{n}")
        assert isinstance(result, LogRecord)
        documents.append(to_document(result))
    build = build_datasets(
        documents,
        DataSplitConfig(eval_size=2, min_total_records=1, val_ratio=0.25, min_train_records=1),
        ICLConfig(max_examples=1, min_examples=0),
        EvaluationConfig(),
        [NIMConfig(model_name="meta/llama-3.2-1b-instruct")],
        tmp_path_factory.mktemp("breakers"),
    )
    rows = _uploaded_rows(build.eval_path)
    assert len(rows) == build.counts["eval"]
    for row in rows:
        assert breaker in row["request"]["messages"][-1]["content"]  # the character survives, escaped
    assert len(_uploaded_rows(build.train_path)) == build.counts["train"]


def _pages_of_kept(documents: list[tuple[str, Any]], page_size: int) -> list[int]:
    """For each record extraction keeps (in order), the number of the page its document is on (from 1)."""
    pages, seen = [], set()
    for position, (doc_id, source) in enumerate(documents):
        result = validate_record(
            copy.deepcopy(source),
            source=f"es:{INDEX}/{doc_id}",
            expected_workload_id=WORKLOAD,
            expected_client_id=CLIENT,
        )
        if isinstance(result, LogRecord) and record_hash(result) not in seen:
            seen.add(record_hash(result))
            pages.append(position // page_size + 1)
    return pages


@SETTINGS
@given(documents=stores(), page_size=st.integers(1, 7), limit=st.one_of(st.none(), st.integers(1, 30)))
@example(documents=[("doc-0", 5), ("doc-1", [1]), ("doc-2", _ours(copy.deepcopy(AIVA)))], page_size=3, limit=1)
def test_a_sink_gets_every_distinct_valid_record_as_its_page_arrives_and_the_result_keeps_none(
    tmp_path_factory: Any, documents: list[tuple[str, Any]], page_size: int, limit: int | None
) -> None:
    folder: Path = tmp_path_factory.mktemp("sink")
    options: dict[str, Any] = {"workload_id": WORKLOAD, "client_id": CLIENT, "page_size": page_size, "limit": limit}
    with QuarantineWriter(folder / "collected.jsonl") as quarantine:
        collected = extract(FakeLogStoreClient(documents), INDEX, quarantine=quarantine, **options)  # type: ignore[arg-type]
    store = FakeLogStoreClient(documents)
    sunk: list[LogRecord] = []
    pages_when_sunk: list[int] = []

    def sink(record: LogRecord, digest: bytes) -> None:
        assert digest == record_digest(record)
        sunk.append(record)
        pages_when_sunk.append(store.searches)

    with QuarantineWriter(folder / "sunk.jsonl") as quarantine:
        streamed = extract(store, INDEX, quarantine=quarantine, sink=sink, **options)  # type: ignore[arg-type]
    assert streamed.records == []
    assert [to_document(r) for r in sunk] == [to_document(r) for r in collected.records]
    assert len(sunk) == streamed.valid - streamed.duplicates
    assert dataclasses.replace(streamed, records=collected.records) == collected  # every count the same
    # each record went to the sink while its own page was the last one read, not after the read; with a limit,
    # extraction asks for pages of at most limit + 1 documents (it never needs more to know the limit is reached)
    read_page_size = page_size if limit is None else min(page_size, limit + 1)
    assert pages_when_sunk == _pages_of_kept(documents, read_page_size)[: len(sunk)]
    assert store.open_pits == 0


def test_an_exception_in_the_sink_stops_the_read_and_closes_the_point_in_time(tmp_path: Path) -> None:
    documents = []
    for n in range(6):
        raw = _ours(copy.deepcopy(AIVA))
        raw["request"]["messages"][1]["content"] = f"question {n}"
        documents.append((f"doc-{n}", raw))
    store = FakeLogStoreClient(documents)

    def sink(record: LogRecord, digest: bytes) -> None:
        raise OSError("disk full")

    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine, pytest.raises(OSError, match="disk full"):
        extract(
            store,  # type: ignore[arg-type]
            INDEX,
            workload_id=WORKLOAD,
            client_id=CLIENT,
            page_size=2,
            quarantine=quarantine,
            sink=sink,
        )
    assert store.searches == 1 and store.open_pits == 0
