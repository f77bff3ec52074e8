"""The log store through OpenSearch's official client (``opensearch-py``) against the log server: the same index,
bulk writes, OpenSearch's point-in-time API, sliced reads and traffic counts as through Elasticsearch's."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opensearchpy import OpenSearch

from agent_flywheel.logstore.client import DOC_ID, SHARD_DOC
from agent_flywheel.logstore.index import ensure_index
from agent_flywheel.logstore.opensearch import OpenSearchClient, tiebreaker_for
from agent_flywheel.logstore.reader import extract
from agent_flywheel.logstore.shape import IndexMissing, inspect_index
from agent_flywheel.logstore.traffic import count_since, list_workloads
from agent_flywheel.logstore.writer import bulk_index
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.quarantine import QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer
from tests.support.blueprint_records import AIVA

pytestmark = pytest.mark.integration

T0 = 1746100800


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    from simulators.logserver.server import create_app

    cfg = LocalStackConfig(state_dir=str(tmp_path_factory.mktemp("logserver")))
    with ThreadedServer(create_app(cfg)) as running:
        yield running


class Recording(OpenSearchClient):
    """The adapter, noting the point-in-time calls it makes."""

    def __init__(self, client: OpenSearch, tiebreaker: str | None = None) -> None:
        super().__init__(client, tiebreaker=tiebreaker)
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.sorts: list[Any] = []

    def open_pit(self, index: str, keep_alive: str) -> str:
        self.opened.append(super().open_pit(index, keep_alive))
        return self.opened[-1]

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        self.sorts.append(body["sort"])
        return super().search_pit(pit_id, keep_alive, body)

    def close_pit(self, pit_id: str) -> None:
        super().close_pit(pit_id)
        self.closed.append(pit_id)


@pytest.fixture
def client(server: ThreadedServer) -> Iterator[OpenSearch]:
    opensearch = OpenSearch(hosts=[server.url], timeout=30)
    yield opensearch
    opensearch.close()


def _record(i: int, seconds: int, question: str | None = None) -> LogRecord:
    raw = copy.deepcopy(AIVA)
    raw["workload_id"], raw["client_id"], raw["timestamp"] = "w", "c", T0 + seconds
    raw["request"]["messages"][1]["content"] = question or f"Has bill {i} been processed?"
    result = validate_record(raw, source=f"test:{i}")
    assert isinstance(result, LogRecord)
    return result


@pytest.mark.parametrize("tiebreaker", [SHARD_DOC, DOC_ID])
def test_write_and_read_through_opensearchs_client(client: OpenSearch, tiebreaker: str, tmp_path: Path) -> None:
    store = Recording(client, tiebreaker=tiebreaker)
    index = f"os-{uuid.uuid4().hex[:8]}"
    assert ensure_index(store, index) is True and ensure_index(store, index) is False
    records = [_record(i, i // 3, question="same?" if i in (4, 20) else None) for i in range(25)]
    report = bulk_index(store, index, records, chunk_size=6)
    assert (report.indexed, report.failed) == (25, 0)
    assert bulk_index(store, index, records[:3]).duplicates == 3
    store.refresh(index)
    assert inspect_index(store, index).workload_field == "workload_id"

    results = {}
    for slices in (1, 3):
        with QuarantineWriter(tmp_path / f"q{slices}.jsonl") as quarantine:
            results[slices] = extract(
                store, index, workload_id="w", client_id="c", page_size=4, quarantine=quarantine, slices=slices
            )
    one = results[1]
    assert one.scanned == 25 and one.duplicates == 1 and len(one.records) == 24
    assert [to_document(r) for r in results[3].records] == [to_document(r) for r in one.records]
    assert results[3].watermark == one.watermark
    assert store.opened and sorted(store.closed) == sorted(store.opened)  # every PIT freed via OpenSearch's API
    assert all(sort[1] == {tiebreaker: "desc"} for sort in store.sorts)

    assert count_since(store, index, "w", "c", one.watermark) == 0
    (stats,) = list_workloads(store, index)
    assert (stats.workload_id, stats.count) == ("w", 25)


def test_a_missing_index_is_index_missing(client: OpenSearch) -> None:
    with pytest.raises(IndexMissing, match="'absent' does not exist"):
        inspect_index(OpenSearchClient(client), "absent")
    assert count_since(OpenSearchClient(client), "absent", "w", "c", None) == 0


def test_opensearch_point_in_time_api_of_the_log_server(server: ThreadedServer, client: OpenSearch) -> None:
    index = f"pit-{uuid.uuid4().hex[:8]}"
    OpenSearchClient(client).create_index(index, {}, {})
    created = httpx.post(f"{server.url}/{index}/_search/point_in_time", params={"keep_alive": "1m"}).json()
    assert set(created) >= {"pit_id", "creation_time", "_shards"}
    refused = httpx.post(f"{server.url}/{index}/_search/point_in_time")
    assert refused.status_code == 400
    deleted = httpx.request(
        "DELETE", f"{server.url}/_search/point_in_time", json={"pit_id": [created["pit_id"], "unknown"]}
    ).json()
    assert deleted == {
        "pits": [{"successful": True, "pit_id": created["pit_id"]}, {"successful": False, "pit_id": "unknown"}]
    }


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"version": {"distribution": "opensearch", "number": "2.19.1"}}, DOC_ID),
        ({"version": {"distribution": "opensearch", "number": "3.3.0"}}, SHARD_DOC),
        ({"version": {"distribution": "opensearch", "number": "3.10.2"}}, SHARD_DOC),
        ({"version": {"number": "8.15.0"}}, SHARD_DOC),  # Elasticsearch, or a server that answers as it
    ],
)
def test_the_tiebreaker_follows_the_version(info: dict[str, Any], expected: str) -> None:
    assert tiebreaker_for(info) == expected
