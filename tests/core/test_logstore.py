"""The log store against the local log server, through the official Elasticsearch client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.index import LOG_INDEX_MAPPING, ensure_index
from agent_flywheel.logstore.reader import extract, scan_records
from agent_flywheel.logstore.traffic import count_since, list_workloads
from agent_flywheel.logstore.watermarks import MemoryWatermarkStore
from agent_flywheel.logstore.writer import bulk_index, import_jsonl
from agent_flywheel.records.documents import record_hash, to_document
from agent_flywheel.records.quarantine import QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record
from tests.support.logserver import logserver_client

pytestmark = pytest.mark.integration

T0 = 1746100800  # 2025-05-01T12:00:00Z


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def ms(seconds: float) -> int:
    """The position of ``at(seconds)`` in our index: epoch milliseconds."""
    return int((T0 + seconds) * 1000)


def raw_record(i: int, ts: Any, workload: str = "w", client: str = "c", question: str | None = None) -> dict[str, Any]:
    """A tool-calling record in the blueprint's format; the question makes the conversation distinct."""
    return {
        "timestamp": ts,
        "workload_id": workload,
        "client_id": client,
        "request": {
            "model": "meta/llama-3.3-70b-instruct",
            "messages": [
                {"role": "system", "content": "You help with orders."},
                {"role": "user", "content": question or f"Where is order {i}?"},
            ],
            "tools": [{"type": "function", "function": {"name": "track_order", "parameters": {}}}],
        },
        "response": {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [
                            {
                                "type": "function",
                                "function": {"name": "track_order", "arguments": json.dumps({"id": i})},
                            }
                        ],
                    }
                }
            ]
        },
        "note": f"record {i}",
    }


def record(i: int, seconds: float, **kwargs: Any) -> LogRecord:
    result = validate_record(raw_record(i, T0 + seconds, **kwargs), source=f"test:{i}")
    assert isinstance(result, LogRecord)
    return result


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    with logserver_client(tmp_path_factory.mktemp("logserver")) as client:
        yield client


@pytest.fixture
def index(es: Elasticsearch) -> str:
    name = f"flywheel-{uuid.uuid4().hex[:8]}"
    assert ensure_index(ElasticsearchClient(es), name) is True
    return name


def load(es: Elasticsearch, index: str, records: list[LogRecord]) -> None:
    report = bulk_index(ElasticsearchClient(es), index, records, chunk_size=7)
    assert (report.indexed, report.failed) == (len(records), 0), report
    es.indices.refresh(index=index)


def test_ensure_index_creates_our_mapping_once(es: Elasticsearch, index: str) -> None:
    assert ensure_index(ElasticsearchClient(es), index) is False
    mapping = es.indices.get_mapping(index=index)[index]["mappings"]
    for field in ("workload_id", "client_id", "timestamp"):
        assert mapping["properties"][field]["type"] == LOG_INDEX_MAPPING["properties"][field]["type"]
    # extra top-level fields are kept (the blueprint's strict mapping rejects them), epoch seconds are seconds
    es.index(index=index, id="x", document={**raw_record(1, T0), "description": "free text"}, refresh=True)
    hits = es.search(
        index=index, query={"range": {"timestamp": {"gte": "2025-05-01T12:00:00Z", "lt": "2025-05-01T12:00:01Z"}}}
    )["hits"]["hits"]
    assert [hit["_id"] for hit in hits] == ["x"]
    assert hits[0]["_source"]["description"] == "free text"


def test_bulk_index_reports_partial_failures_without_raising(es: Elasticsearch, index: str) -> None:
    first = validate_record({**raw_record(1, T0), "meta": {"size": 3}}, source="t")
    clash = validate_record({**raw_record(2, T0), "meta": {"size": "large"}}, source="t")  # long vs text
    assert isinstance(first, LogRecord) and isinstance(clash, LogRecord)
    report = bulk_index(ElasticsearchClient(es), index, [first, clash, first])
    assert (report.indexed, report.duplicates, report.failed) == (1, 1, 1)
    assert sum(report.errors.values()) == 1
    assert "record 1" in report.samples[0]


def write_jsonl(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"\n".join(line.encode() if isinstance(line, str) else line for line in lines) + b"\n")
    return path


def test_import_jsonl_counts_and_quarantines_bad_lines(es: Elasticsearch, tmp_path: Path) -> None:
    index = f"import-{uuid.uuid4().hex[:8]}"  # import_jsonl creates it
    good = [json.dumps(raw_record(i, T0 + i, workload="orig", client="orig")) for i in range(12)]
    bad_args = raw_record(50, T0)
    bad_args["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    no_response = raw_record(51, T0)
    del no_response["response"]
    conflict = {**raw_record(52, T0 + 52), "meta": {"size": "large"}}
    lines: list[str | bytes] = [
        json.dumps({**raw_record(99, T0 + 99), "meta": {"size": 3}}),  # line 1: maps meta.size as a number
        *good[:6],  # lines 2-7
        "",  # 8: blank
        '{"timestamp": 1, "workload_id": "w"',  # 9: truncated
        "[1, 2, 3]",  # 10
        json.dumps(no_response),  # 11
        json.dumps(raw_record(53, "next tuesday")),  # 12
        json.dumps(bad_args),  # 13
        b"\xff\xfe garbage",  # 14
        json.dumps(conflict),  # 15: valid here, refused by the index's mapping
        *good[6:],  # 16-21
    ]
    data = write_jsonl(tmp_path / "logs.jsonl", lines)
    quarantine_path = tmp_path / "quarantine.jsonl"
    with QuarantineWriter(quarantine_path) as quarantine:
        report = import_jsonl(
            ElasticsearchClient(es),
            index,
            data,
            workload_id="imported",
            client_id="cli",
            quarantine=quarantine,
            chunk_size=4,
        )
    assert report.lines == 21
    assert report.indexed == 13
    assert report.blank == 1
    assert report.quarantined == {
        "not_json": 2,
        "not_an_object": 1,
        "missing_field": 1,
        "bad_timestamp": 1,
        "arguments_not_json": 1,
        "index_rejected": 1,
    }
    assert report.lines == report.indexed + report.duplicates + report.blank + report.total_quarantined
    entries = [json.loads(line) for line in quarantine_path.read_text().splitlines()]
    by_line = {entry["source"].rsplit(":", 1)[1]: entry for entry in entries}
    assert sorted(by_line, key=int) == ["9", "10", "11", "12", "13", "14", "15"]
    assert all(entry["source"] == f"{data}:{n}" for n, entry in by_line.items())
    assert by_line["11"]["reason"] == "missing_field" and by_line["11"]["field"] == "response"
    assert by_line["12"]["field"] == "timestamp" and "next tuesday" in by_line["12"]["message"]
    assert by_line["13"]["field"] == "response.choices.0.message.tool_calls.0.function.arguments"
    assert by_line["9"]["raw_text"] == lines[8]  # kept exactly as written
    assert by_line["15"]["reason"] == "index_rejected" and by_line["15"]["raw"]["meta"] == {"size": "large"}
    # ids were overridden; the records are searchable at once
    assert count_since(ElasticsearchClient(es), index, "imported", "cli", None) == 13
    assert count_since(ElasticsearchClient(es), index, "orig", "orig", None) == 0
    # importing the same file again adds nothing
    with QuarantineWriter(tmp_path / "again.jsonl") as quarantine:
        again = import_jsonl(
            ElasticsearchClient(es), index, data, workload_id="imported", client_id="cli", quarantine=quarantine
        )
    assert (again.indexed, again.duplicates) == (0, 13)
    assert count_since(ElasticsearchClient(es), index, "imported", "cli", None) == 13


def test_pit_paging_reads_every_record_once(es: Elasticsearch, index: str) -> None:
    # 23 records of ours, several sharing a timestamp across page boundaries, among other workloads' records
    ours = [record(i, i // 3) for i in range(23)]
    noise = [record(100 + i, i, workload="w2") for i in range(5)] + [record(200 + i, i, client="c2") for i in range(5)]
    noise.append(record(300, 1, workload="W"))  # term, not match: case matters
    load(es, index, ours + noise)
    expected = {to_document(r)["note"] for r in ours}
    for descending in (False, True):
        progress: list[tuple[int, int]] = []
        hits = list(
            scan_records(
                ElasticsearchClient(es),
                index,
                workload_id="w",
                client_id="c",
                page_size=5,
                descending=descending,
                on_page=lambda pages, docs, sink=progress: sink.append((pages, docs)),  # type: ignore[misc]
            )
        )
        ids = [doc_id for doc_id, _ in hits]
        assert len(ids) == len(set(ids)) == 23
        assert {source["note"] for _, source in hits} == expected
        stamps = [source["timestamp"] for _, source in hits]
        assert stamps == sorted(stamps, reverse=descending)
        assert progress == [(1, 5), (2, 10), (3, 15), (4, 20), (5, 23)]


def test_time_window_is_half_open(es: Elasticsearch, index: str) -> None:
    load(es, index, [record(i, i) for i in range(10)])
    hits = list(
        scan_records(
            ElasticsearchClient(es), index, workload_id="w", client_id="c", since=at(3), until=at(7), page_size=2
        )
    )
    assert sorted(source["note"] for _, source in hits) == [f"record {i}" for i in range(3, 7)]
    assert count_since(ElasticsearchClient(es), index, "w", "c", at(3), until=at(7)) == 4
    assert count_since(ElasticsearchClient(es), index, "w", "c", at(8)) == 2
    assert count_since(ElasticsearchClient(es), index, "w", "c", None) == 10
    assert count_since(ElasticsearchClient(es), "no-such-index", "w", "c", None) == 0


def test_incremental_extraction_reads_each_record_once(es: Elasticsearch, index: str, tmp_path: Path) -> None:
    store = MemoryWatermarkStore()
    quarantine = QuarantineWriter(tmp_path / "q.jsonl")
    exact = timedelta(0)  # no late-arrival window: the watermark lists the records of its own millisecond only
    # run 1: five records, the newest two sharing one timestamp
    load(es, index, [record(i, min(i, 3)) for i in range(5)])
    first = extract(
        ElasticsearchClient(es),
        index,
        workload_id="w",
        client_id="c",
        since=store.get("w", "c"),
        page_size=2,
        quarantine=quarantine,
        late_arrival=exact,
    )
    assert len(first.records) == 5 and first.scanned == 5 and first.already_read == 0
    assert [r.timestamp for r in first.records] == sorted((r.timestamp for r in first.records), reverse=True)
    assert first.max_timestamp == at(3)
    assert first.watermark is not None and first.watermark.timestamp == at(3) and len(first.watermark.ids) == 2
    store.set("w", "c", first.watermark)

    # run 2: a late record with exactly the watermark's timestamp, two newer ones, one older (not seen without a
    # late-arrival window)
    load(es, index, [record(10, 3), record(11, 4), record(12, 5), record(13, 1)])
    second = extract(
        ElasticsearchClient(es),
        index,
        workload_id="w",
        client_id="c",
        since=store.get("w", "c"),
        page_size=2,
        quarantine=quarantine,
        late_arrival=exact,
    )
    assert sorted(to_document(r)["note"] for r in second.records) == ["record 10", "record 11", "record 12"]
    assert second.already_read == 2 and second.scanned == 3
    assert second.watermark is not None and second.watermark.timestamp == at(5)
    store.set("w", "c", second.watermark)

    # run 3: nothing new; the watermark stays where it was
    third = extract(
        ElasticsearchClient(es),
        index,
        workload_id="w",
        client_id="c",
        since=store.get("w", "c"),
        quarantine=quarantine,
        late_arrival=exact,
    )
    assert third.records == [] and third.scanned == 0 and third.already_read == 1
    assert third.watermark == second.watermark

    # the traffic watcher's count agrees: nothing new, then one
    assert count_since(ElasticsearchClient(es), index, "w", "c", store.get("w", "c")) == 0
    load(es, index, [record(14, 5)])
    assert count_since(ElasticsearchClient(es), index, "w", "c", store.get("w", "c")) == 1
    # a full rebuild reads everything again
    full = extract(ElasticsearchClient(es), index, workload_id="w", client_id="c", since=None, quarantine=quarantine)
    assert full.scanned == 10
    assert quarantine.total == 0


def test_limit_keeps_the_newest_distinct_records(es: Elasticsearch, index: str, tmp_path: Path) -> None:
    # 20 records; 8 and 9 ask the same question as 19 (duplicates of the newest)
    records = [record(i, i, question="same?" if i in (8, 9, 19) else None) for i in range(20)]
    load(es, index, records)
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        result = extract(
            ElasticsearchClient(es), index, workload_id="w", client_id="c", since=at(2), limit=12, quarantine=quarantine
        )
    notes = [to_document(r)["note"] for r in result.records]
    assert notes == [f"record {i}" for i in range(19, 9, -1)] + ["record 7", "record 6"]
    assert len({record_hash(r) for r in result.records}) == 12
    assert result.duplicates == 2
    assert result.skipped_older == 4  # records 2..5 are in the window but older than the newest 12
    assert result.limit_reached
    # the next read starts after the oldest record read (older ones were left unread on purpose) and skips the
    # 13 records read from there on (duplicates included)
    assert result.watermark is not None and result.watermark.position == ms(19)
    assert result.watermark.start == ms(6) + 1 and len(result.watermark.ids) == 13


def test_a_record_that_arrives_late_is_read_once_by_the_next_run(es: Elasticsearch, index: str, tmp_path: Path) -> None:
    store = MemoryWatermarkStore()
    window = timedelta(seconds=30)
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:

        def run() -> list[str]:
            result = extract(
                ElasticsearchClient(es),
                index,
                workload_id="w",
                client_id="c",
                since=store.get("w", "c"),
                quarantine=quarantine,
                late_arrival=window,
            )
            if result.watermark is not None:
                store.set("w", "c", result.watermark)
            return sorted(to_document(r)["note"] for r in result.records)

        load(es, index, [record(i, 100 + i) for i in range(5)])
        assert run() == [f"record {i}" for i in range(5)]
        mark = store.get("w", "c")
        assert mark is not None and mark.start == ms(104) - 30_000 and len(mark.ids) == 5
        # a producer flushes late: records stamped before the newest one read, one of them outside the window
        load(es, index, [record(10, 90), record(11, 102), record(12, 70)])
        assert count_since(ElasticsearchClient(es), index, "w", "c", mark) == 2  # the traffic watch sees the same
        assert run() == ["record 10", "record 11"]
        assert run() == []  # read once: the watermark lists them now
        assert count_since(ElasticsearchClient(es), index, "w", "c", store.get("w", "c")) == 0
        load(es, index, [record(13, 105)])
        assert run() == ["record 13"]
        assert quarantine.total == 0


def test_bad_documents_in_the_index_are_quarantined_with_their_id(
    es: Elasticsearch, index: str, tmp_path: Path
) -> None:
    load(es, index, [record(i, i) for i in range(3)])
    broken = raw_record(7, T0 + 7)
    broken["request"]["messages"] = []
    es.index(index=index, id="broken", document=broken)
    es.index(
        index=index, id="no-response", document={k: v for k, v in raw_record(8, T0 + 8).items() if k != "response"}
    )
    es.index(index=index, id="two-ids", document={**raw_record(9, T0 + 9), "workload_id": ["w", "other"]})
    es.indices.refresh(index=index)
    path = tmp_path / "q.jsonl"
    with QuarantineWriter(path) as quarantine:
        result = extract(ElasticsearchClient(es), index, workload_id="w", client_id="c", quarantine=quarantine)
    assert len(result.records) == 3
    assert result.quarantined == {"bad_messages": 1, "missing_field": 1, "bad_id": 1}
    sources = sorted(json.loads(line)["source"] for line in path.read_text().splitlines())
    assert sources == [f"es:{index}/broken", f"es:{index}/no-response", f"es:{index}/two-ids"]
    # the quarantined documents' timestamps still move the watermark: they are not read again
    assert result.watermark is not None and result.watermark.timestamp == at(9)


def test_list_workloads(es: Elasticsearch, index: str) -> None:
    load(
        es,
        index,
        [record(i, i) for i in range(4)]
        + [record(10 + i, 100 + i, client="c2") for i in range(2)]
        + [record(20, 50, workload="other")],
    )
    stats = list_workloads(ElasticsearchClient(es), index)
    assert [(s.workload_id, s.client_id, s.count, s.latest) for s in stats] == [
        ("other", "c", 1, at(50)),
        ("w", "c", 4, at(3)),
        ("w", "c2", 2, at(101)),
    ]
    assert [s.client_id for s in list_workloads(ElasticsearchClient(es), index, since=at(60))] == ["c2"]
    assert list_workloads(ElasticsearchClient(es), "no-such-index") == []
