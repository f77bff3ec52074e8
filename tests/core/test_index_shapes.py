"""Incremental extraction and the traffic watch on the three index shapes producers leave, through the official
client against the log server: NeMo Agent Toolkit's (an index nobody created: Elasticsearch's dynamic mapping),
the blueprint's (``date`` holding epoch seconds read as milliseconds, or ISO 8601 as the demo agent writes), ours.

For each: the first run reads everything, more records arrive (one of them late, stamped before the newest one
read), the traffic watch counts exactly the new ones, the second run reads exactly them, and nothing after.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.index import ensure_index
from agent_flywheel.logstore.reader import extract
from agent_flywheel.logstore.shape import IndexMissing, IndexShapeError, TimeUnit, inspect_index
from agent_flywheel.logstore.traffic import count_since, list_workloads
from agent_flywheel.logstore.watermarks import MemoryWatermarkStore, Watermark
from agent_flywheel.logstore.writer import bulk_index
from agent_flywheel.records.quarantine import QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record
from agent_flywheel.traffic_watch import survey
from tests.support.blueprint_records import AIVA, BLUEPRINT_INDEX_BODY
from tests.support.logserver import logserver_client
from tests.support.nat_records import NAT_CLIENT_ID, NAT_WORKLOAD_ID, nat_answer, nat_tool_call

pytestmark = pytest.mark.integration

NAT_T0 = 1765000000  # nat_records' base timestamp (epoch seconds)


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    with logserver_client(tmp_path_factory.mktemp("logserver")) as client:
        yield client


def _name() -> str:
    return f"shape-{uuid.uuid4().hex[:8]}"


def _nat(i: int) -> dict[str, Any]:
    """NAT's exporter's record ``i`` (stamped NAT_T0 + i, epoch seconds), tool calls and answers mixed."""
    return nat_tool_call(i) if i % 2 else nat_answer(i)


def _bill(i: int) -> str:
    return f"Has bill {i} been processed?"


def _blueprint(i: int, iso: bool) -> dict[str, Any]:
    """The blueprint quickstart's record with question ``i``, stamped NAT_T0 + i (epoch seconds, or ISO 8601)."""
    record = copy.deepcopy(AIVA)
    record["request"]["messages"][1]["content"] = _bill(i)
    seconds = NAT_T0 + i
    record["timestamp"] = datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z") if iso else seconds
    return record


@dataclass
class Shape:
    """One index shape: how its index is created, its records written, and what the flywheel must find."""

    name: str
    workload_id: str
    client_id: str
    create: Callable[[Elasticsearch, str], None]
    write: Callable[[Elasticsearch, str, list[int]], None]
    unit: TimeUnit
    workload_field: str
    question: Callable[[int], str]  # the user's question of record ``i``


def _bulk_raw(make: Callable[[int], dict[str, Any]]) -> Callable[[Elasticsearch, str, list[int]], None]:
    def write(es: Elasticsearch, index: str, numbers: list[int]) -> None:
        ok, errors = helpers.bulk(es, ({"_index": index, "_source": make(i)} for i in numbers))
        assert (ok, errors) == (len(numbers), [])
        es.indices.refresh(index=index)

    return write


def _write_ours(es: Elasticsearch, index: str, numbers: list[int]) -> None:
    records = []
    for i in numbers:
        record = validate_record(_blueprint(i, iso=False), source=f"test:{i}")
        assert isinstance(record, LogRecord)
        records.append(record)
    report = bulk_index(ElasticsearchClient(es), index, records)
    assert (report.indexed, report.failed) == (len(numbers), 0)
    es.indices.refresh(index=index)


def _create_blueprint(es: Elasticsearch, index: str) -> None:
    es.indices.create(index=index, **BLUEPRINT_INDEX_BODY)


SHAPES = [
    Shape(
        "nat-exporter",
        NAT_WORKLOAD_ID,
        NAT_CLIENT_ID,
        lambda es, index: None,  # nobody creates it: the first bulk write does, with Elasticsearch's guesses
        _bulk_raw(_nat),
        TimeUnit.SECONDS,
        "workload_id.keyword",
        lambda i: f"Where is my order {1000 + i}?",
    ),
    Shape(
        "epoch-milliseconds",  # a producer writing Date.now() into a missing index
        NAT_WORKLOAD_ID,
        NAT_CLIENT_ID,
        lambda es, index: None,
        _bulk_raw(lambda i: {**_nat(i), "timestamp": (NAT_T0 + i) * 1000 + 250}),
        TimeUnit.MILLIS,
        "workload_id.keyword",
        lambda i: f"Where is my order {1000 + i}?",
    ),
    Shape(
        "blueprint-epoch-seconds",
        AIVA["workload_id"],
        AIVA["client_id"],
        _create_blueprint,
        _bulk_raw(lambda i: _blueprint(i, iso=False)),
        TimeUnit.SECONDS,
        "workload_id",
        _bill,
    ),
    Shape(
        "blueprint-iso",  # the demo agent's: the blueprint's index, ISO 8601 timestamps
        AIVA["workload_id"],
        AIVA["client_id"],
        _create_blueprint,
        _bulk_raw(lambda i: _blueprint(i, iso=True)),
        TimeUnit.MILLIS,
        "workload_id",
        _bill,
    ),
    Shape(
        "ours",
        AIVA["workload_id"],
        AIVA["client_id"],
        lambda es, index: ensure_index(ElasticsearchClient(es), index) and None,
        _write_ours,
        TimeUnit.MILLIS,
        "workload_id",
        _bill,
    ),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.name for shape in SHAPES])
def test_incremental_runs_and_the_traffic_watch_read_exactly_the_new_records(
    es: Elasticsearch, shape: Shape, tmp_path: Path
) -> None:
    index = _name()
    shape.create(es, index)
    marks = MemoryWatermarkStore()
    wl, cl = shape.workload_id, shape.client_id

    def new_in_watch() -> int:
        (count,) = [
            c for c in survey(ElasticsearchClient(es), index, marks) if (c.workload_id, c.client_id) == (wl, cl)
        ]
        return count.new_records

    def run() -> set[str]:
        """One flywheel extraction that succeeds (its watermark is saved); the questions it read."""
        with QuarantineWriter(tmp_path / f"{uuid.uuid4().hex}.jsonl") as quarantine:
            result = extract(
                ElasticsearchClient(es),
                index,
                workload_id=wl,
                client_id=cl,
                since=marks.get(wl, cl),
                quarantine=quarantine,
            )
            assert quarantine.total == 0, result.quarantined
        if result.watermark is not None:
            marks.set(wl, cl, result.watermark)
        return {str(r.request.messages[1].content) for r in result.records}

    shape.write(es, index, [0, 1, 2, 3, 4, 6])
    found = inspect_index(ElasticsearchClient(es), index)
    assert (found.unit, found.workload_field) == (shape.unit, shape.workload_field)
    assert new_in_watch() == 6
    assert run() == {shape.question(i) for i in (0, 1, 2, 3, 4, 6)}
    assert new_in_watch() == 0
    (stats,) = [s for s in list_workloads(ElasticsearchClient(es), index) if (s.workload_id, s.client_id) == (wl, cl)]
    assert stats.latest is not None  # the true time, never January 1970
    assert stats.latest.replace(microsecond=0) == datetime.fromtimestamp(NAT_T0 + 6, UTC)

    # three newer records, and one stamped before the newest one read (a producer flushing late)
    shape.write(es, index, [7, 8, 5, 9])
    assert new_in_watch() == 4
    assert run() == {shape.question(i) for i in (5, 7, 8, 9)}
    assert new_in_watch() == 0
    assert run() == set()
    mark = marks.get(wl, cl)
    assert mark is not None and mark.unit is shape.unit
    assert mark.timestamp == datetime.fromtimestamp(NAT_T0 + 9, UTC).replace(microsecond=mark.timestamp.microsecond)
    assert mark.timestamp.microsecond in (0, 250_000)
    assert count_since(ElasticsearchClient(es), index, wl, cl, mark) == 0


def test_a_pattern_over_indices_of_one_shape_is_read_as_one(es: Elasticsearch, tmp_path: Path) -> None:
    prefix = _name()
    _bulk_raw(_nat)(es, f"{prefix}-a", [0, 1, 2])
    shape = inspect_index(ElasticsearchClient(es), f"{prefix}-*")
    assert shape.unit is TimeUnit.SECONDS and shape.workload_field == "workload_id.keyword"
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        result = extract(
            ElasticsearchClient(es),
            f"{prefix}-*",
            workload_id=NAT_WORKLOAD_ID,
            client_id=NAT_CLIENT_ID,
            quarantine=quarantine,
        )
    assert len(result.records) == 3
    # a second index of the same mapping joins the pattern: one shape (the log server searches one index at a
    # time, so reading both is left to Elasticsearch)
    _bulk_raw(_nat)(es, f"{prefix}-b", [3, 4])
    assert inspect_index(ElasticsearchClient(es), f"{prefix}-*") == shape


@pytest.mark.parametrize(
    ("mappings", "documents", "message"),
    [
        (
            {"properties": {"workload_id": {"type": "text"}, "client_id": {"type": "keyword"}}},
            [],
            r"workload_id is mapped as text without a keyword sub-field.*flywheel logs create-index",
        ),
        (None, [{**nat_answer(0), "timestamp": 1765000000.25}], r"timestamp is mapped as float"),
        (
            {"properties": {"timestamp": {"type": "keyword"}}},
            [],
            r"timestamp is mapped as keyword, not date or long",
        ),
    ],
    ids=["text-id", "float-timestamp", "keyword-timestamp"],
)
def test_an_index_the_flywheel_cannot_read_is_refused_in_one_line(
    es: Elasticsearch, mappings: dict[str, Any] | None, documents: list[dict[str, Any]], message: str, tmp_path: Path
) -> None:
    index = _name()
    if mappings is not None:
        es.indices.create(index=index, mappings=mappings)
    if documents:
        helpers.bulk(es, ({"_index": index, "_source": d} for d in documents))
        es.indices.refresh(index=index)
    with pytest.raises(IndexShapeError, match=message) as refused:
        inspect_index(ElasticsearchClient(es), index)
    assert "\n" not in str(refused.value) and f"log index {index!r}" in str(refused.value)
    with pytest.raises(IndexShapeError), QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        extract(ElasticsearchClient(es), index, workload_id="w", client_id="c", quarantine=quarantine)
    with pytest.raises(IndexShapeError):
        survey(ElasticsearchClient(es), index, MemoryWatermarkStore())


def test_indices_of_different_shapes_under_one_pattern_are_refused(es: Elasticsearch) -> None:
    prefix = _name()
    _bulk_raw(_nat)(es, f"{prefix}-nat", [0])
    ensure_index(ElasticsearchClient(es), f"{prefix}-ours")
    with pytest.raises(IndexShapeError, match=r"map the record fields differently .*-nat: workload_id text"):
        inspect_index(ElasticsearchClient(es), f"{prefix}-*")


def test_a_missing_index_or_one_without_records_reads_nothing(es: Elasticsearch, tmp_path: Path) -> None:
    with pytest.raises(IndexMissing):
        inspect_index(ElasticsearchClient(es), _name())
    assert survey(ElasticsearchClient(es), _name(), MemoryWatermarkStore()) == []
    assert (
        survey(ElasticsearchClient(es), f"{_name()}-*", MemoryWatermarkStore()) == []
    )  # a pattern that matches no index
    empty = _name()
    es.indices.create(index=empty)  # created, nothing written yet: nothing is mapped
    shape = inspect_index(ElasticsearchClient(es), empty)
    assert not shape.readable and "no record has workload_id, client_id, timestamp yet" in shape.describe()
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        result = extract(ElasticsearchClient(es), empty, workload_id="w", client_id="c", quarantine=quarantine)
    assert result.records == [] and result.watermark is None
    assert (
        count_since(ElasticsearchClient(es), empty, "w", "c", None) == 0
        and list_workloads(ElasticsearchClient(es), empty) == []
    )


def test_the_blueprints_epoch_seconds_are_named_in_a_warning(es: Elasticsearch) -> None:
    index = _name()
    _create_blueprint(es, index)
    _bulk_raw(lambda i: _blueprint(i, iso=False))(es, index, [0, 1])
    shape = inspect_index(ElasticsearchClient(es), index)
    assert shape.numeric_range and shape.notes == ()
    (warning,) = shape.warnings
    assert "epoch seconds, which Elasticsearch reads as milliseconds (2 records dated January 1970" in warning
    assert "flywheel logs create-index" in warning


def test_importing_into_a_producers_index_keeps_its_timestamp_form(es: Elasticsearch) -> None:
    """A record added with the flywheel's writer into the blueprint's index of epoch seconds is written in seconds,
    so the index never holds two forms (which would be refused)."""
    index = _name()
    _create_blueprint(es, index)
    _bulk_raw(lambda i: _blueprint(i, iso=False))(es, index, [0])
    _write_ours(es, index, [1])
    sources = [
        hit["_source"]["timestamp"] for hit in es.search(index=index, sort=[{"timestamp": "asc"}])["hits"]["hits"]
    ]
    assert sources == [NAT_T0, NAT_T0 + 1]
    assert inspect_index(ElasticsearchClient(es), index).unit is TimeUnit.SECONDS


def test_a_watermark_an_earlier_version_saved_on_the_blueprints_index_reads_the_new_records(
    es: Elasticsearch, tmp_path: Path
) -> None:
    """Earlier versions saved the newest record's true time (2025) and compared it with 1970 dates: "0 new" for
    ever. Such a watermark is now read as a time and converted to the index's epoch seconds."""
    index = _name()
    _create_blueprint(es, index)
    write = _bulk_raw(lambda i: _blueprint(i, iso=False))
    write(es, index, [0, 1, 2])
    newest = es.search(index=index, sort=[{"timestamp": "desc"}], size=1)["hits"]["hits"][0]["_id"]
    legacy = Watermark.from_json({"timestamp": "2025-12-06T05:46:42Z", "ids": [newest]})  # record 2's time
    write(es, index, [3, 4])
    wl, cl = AIVA["workload_id"], AIVA["client_id"]
    assert count_since(ElasticsearchClient(es), index, wl, cl, legacy) == 2
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        result = extract(
            ElasticsearchClient(es), index, workload_id=wl, client_id=cl, since=legacy, quarantine=quarantine
        )
    assert {str(r.request.messages[1].content) for r in result.records} == {_bill(3), _bill(4)}
    assert result.watermark is not None and result.watermark.unit is TimeUnit.SECONDS


@pytest.mark.parametrize("unit", [TimeUnit.SECONDS, TimeUnit.MILLIS], ids=["mostly-seconds", "mostly-milliseconds"])
@pytest.mark.parametrize("blueprint", [True, False], ids=["date", "long"])
def test_a_timestamp_in_two_forms_is_read_in_the_larger_and_the_others_named(
    es: Elasticsearch, unit: TimeUnit, blueprint: bool, tmp_path: Path
) -> None:
    """A few records in the other form (a second producer, a hostile one) must not stop the flywheel: the larger
    form decides, the first run reads every record, and incremental runs and the watch read only the new records of
    that form, never the others again and again."""
    index = _name()
    if blueprint:
        _create_blueprint(es, index)

    def stamp(i: int, form: TimeUnit) -> int:
        return NAT_T0 + i if form is TimeUnit.SECONDS else (NAT_T0 + i) * 1000

    other = TimeUnit.MILLIS if unit is TimeUnit.SECONDS else TimeUnit.SECONDS
    records = [(i, unit) for i in (0, 1, 2, 3)] + [(10, other)]
    write = _bulk_raw(lambda n: {**_blueprint(n % 100, iso=False), "timestamp": stamp(n % 100, records_by[n])})
    records_by = {i: form for i, form in records}
    write(es, index, [i for i, _ in records])
    shape = inspect_index(ElasticsearchClient(es), index)
    assert shape.unit is unit
    (warning,) = [w for w in shape.warnings if "sort apart from the others" in w]
    assert " 1 records" in warning and "flywheel logs create-index" in warning
    marks = MemoryWatermarkStore()
    wl, cl = AIVA["workload_id"], AIVA["client_id"]
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        first = extract(ElasticsearchClient(es), index, workload_id=wl, client_id=cl, quarantine=quarantine)
        assert len(first.records) == 5 and quarantine.total == 0  # the first run reads every record
        assert first.watermark is not None
        marks.set(wl, cl, first.watermark)
        records_by.update({4: unit, 11: other})
        write(es, index, [4, 11])
        assert count_since(ElasticsearchClient(es), index, wl, cl, marks.get(wl, cl)) == 1
        second = extract(
            ElasticsearchClient(es), index, workload_id=wl, client_id=cl, since=marks.get(wl, cl), quarantine=quarantine
        )
    assert [str(r.request.messages[1].content) for r in second.records] == [_bill(4)]
