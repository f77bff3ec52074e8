"""Sliced point-in-time reads give exactly what one reader gives: the same records in the same order, the same
duplicates kept out, the same quarantine counts and the same watermark, for any slice count (log server)."""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.index import ensure_index
from agent_flywheel.logstore.reader import ExtractionResult, extract, scan_records
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.quarantine import QuarantineWriter
from tests.support.blueprint_records import AIVA
from tests.support.logserver import logserver_client

pytestmark = pytest.mark.integration

T0 = 1746100800  # 2025-05-01T12:00:00Z
SLICE_COUNTS = (2, 3, 5, 8)


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    with logserver_client(tmp_path_factory.mktemp("logserver")) as client:
        yield client


def _raw(i: int, seconds: int, question: str | None = None, workload: str = "w") -> dict[str, Any]:
    raw = copy.deepcopy(AIVA)
    raw["workload_id"], raw["client_id"] = workload, "c"
    raw["timestamp"] = T0 + seconds
    raw["request"]["messages"][1]["content"] = question or f"Has bill {i} been processed?"
    return raw


@pytest.fixture(scope="module")
def index(es: Elasticsearch) -> str:
    """61 records of one workload, many sharing a timestamp (ties broken only by the tiebreaker), 9 asking
    what a newer one asks (duplicates), 4 invalid; and another workload's records in between."""
    name = f"sliced-{uuid.uuid4().hex[:8]}"
    ensure_index(ElasticsearchClient(es), name)
    sources = [_raw(i, i // 4, question=f"repeat {i % 3}?" if i % 7 == 0 else None) for i in range(61)]
    for broken in (5, 17, 33, 48):
        del sources[broken]["response"]  # valid for the index, quarantined by extraction
    sources += [_raw(100 + i, i, workload="other") for i in range(15)]
    ok, errors = helpers.bulk(es, ({"_index": name, "_source": source} for source in sources))
    assert ok == len(sources) and not errors
    es.indices.refresh(index=name)
    return name


class Recording(ElasticsearchClient):
    """The client, noting the slice of every point-in-time search."""

    def __init__(self, es: Elasticsearch) -> None:
        super().__init__(es)
        self.slices: list[Any] = []

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        self.slices.append(body.get("slice"))
        return super().search_pit(pit_id, keep_alive, body)


def _extract(
    es: Elasticsearch, index: str, tmp_path: Path, slices: int, client: Recording | None = None, **options: Any
) -> ExtractionResult:
    with QuarantineWriter(tmp_path / f"q-{slices}-{uuid.uuid4().hex[:6]}.jsonl") as quarantine:
        return extract(
            client or Recording(es),
            index,
            workload_id="w",
            client_id="c",
            page_size=4,
            quarantine=quarantine,
            late_arrival=timedelta(seconds=3),
            slices=slices,
            **options,
        )


def _summary(result: ExtractionResult) -> dict[str, Any]:
    summary = dataclasses.asdict(result)
    summary["records"] = [to_document(record) for record in result.records]
    del summary["pages"]  # slices read more, smaller pages
    return summary


@pytest.mark.parametrize("slices", SLICE_COUNTS)
def test_slices_read_what_one_reader_reads(es: Elasticsearch, index: str, tmp_path: Path, slices: int) -> None:
    one = _extract(es, index, tmp_path, 1)
    assert one.scanned == 61 and one.quarantined == {"missing_field": 4} and one.duplicates > 0
    client = Recording(es)
    sliced = _extract(es, index, tmp_path, slices, client)
    assert _summary(sliced) == _summary(one)
    assert {(part or {}).get("id") for part in client.slices} == set(range(slices))  # it did read in slices
    assert all(part == {"id": part["id"], "max": slices} for part in client.slices)


@pytest.mark.parametrize("slices", SLICE_COUNTS)
def test_slices_stop_at_the_same_limit_and_resume_at_the_same_watermark(
    es: Elasticsearch, index: str, tmp_path: Path, slices: int
) -> None:
    one = _extract(es, index, tmp_path, 1, limit=20)
    sliced = _extract(es, index, tmp_path, slices, limit=20)
    assert one.limit_reached and _summary(sliced) == _summary(one)
    since = datetime.fromtimestamp(T0 + 3, UTC)
    assert _summary(_extract(es, index, tmp_path, slices, since=since)) == _summary(
        _extract(es, index, tmp_path, 1, since=since)
    )
    assert one.watermark is not None
    again = _extract(es, index, tmp_path, slices, since=one.watermark)
    assert _summary(again) == _summary(_extract(es, index, tmp_path, 1, since=one.watermark))


def test_a_sliced_scan_is_in_timestamp_order_with_every_hit_once(es: Elasticsearch, index: str) -> None:
    client = ElasticsearchClient(es)
    one = list(scan_records(client, index, workload_id="w", client_id="c", page_size=3))
    sliced = list(scan_records(client, index, workload_id="w", client_id="c", page_size=3, slices=4))
    assert [doc_id for doc_id, _ in sliced] == [doc_id for doc_id, _ in one]
    assert len({doc_id for doc_id, _ in one}) == len(one) == 61
