"""Sliced point-in-time searches on the log server, through the official client: disjoint slices that together
hold every match, each pageable with ``search_after``; invalid slices refused as Elasticsearch refuses them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch, helpers

from simulators.logserver.server import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer

pytestmark = pytest.mark.integration

INDEX = "sliced"
N = 47


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    state = Path(tmp_path_factory.mktemp("logserver"))
    with ThreadedServer(create_app(LocalStackConfig(state_dir=str(state)))) as server:
        client = Elasticsearch(server.url, request_timeout=30)
        client.indices.create(index=INDEX, mappings={"properties": {"n": {"type": "long"}, "k": {"type": "keyword"}}})
        sources = ({"_index": INDEX, "_source": {"n": i % 5, "k": "odd" if i % 2 else "even"}} for i in range(N))
        assert helpers.bulk(client, sources) == (N, [])
        client.indices.refresh(index=INDEX)
        yield client
        client.close()


def _slice_ids(es: Elasticsearch, pit: str, part: dict[str, int] | None, query: dict[str, Any]) -> list[str]:
    """Every id of one slice, paged by 4 with ``search_after``."""
    ids: list[str] = []
    after: list[Any] | None = None
    while True:
        extra: dict[str, Any] = {"search_after": after} if after else {}
        if part is not None:
            extra["slice"] = part
        hits = es.search(pit={"id": pit, "keep_alive": "1m"}, query=query, sort=[{"n": "desc"}], size=4, **extra)
        page = hits["hits"]["hits"]
        ids += [hit["_id"] for hit in page]
        if len(page) < 4:
            return ids
        after = page[-1]["sort"]


@pytest.mark.parametrize("slices", [2, 3, 7])
def test_slices_are_disjoint_and_complete(es: Elasticsearch, slices: int) -> None:
    pit = es.open_point_in_time(index=INDEX, keep_alive="1m")["id"]
    try:
        for query in ({"match_all": {}}, {"term": {"k": "odd"}}):
            whole = _slice_ids(es, pit, None, query)
            parts = [_slice_ids(es, pit, {"id": i, "max": slices}, query) for i in range(slices)]
            assert sum(len(part) for part in parts) == len(whole) == len({i for part in parts for i in part})
            assert {i for part in parts for i in part} == set(whole)
            assert sum(1 for part in parts if part) > 1  # not all in one slice
        counted = es.search(pit={"id": pit}, slice={"id": 0, "max": slices}, size=0, track_total_hits=True)
        assert counted["hits"]["total"]["value"] == len(
            _slice_ids(es, pit, {"id": 0, "max": slices}, {"match_all": {}})
        )
    finally:
        es.close_point_in_time(id=pit)


@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ({"id": 0, "max": 1}, "max must be greater than 1"),
        ({"id": 2, "max": 2}, "max must be greater than id"),
        ({"id": -1, "max": 2}, "id must be greater than or equal to 0"),
    ],
)
def test_an_invalid_slice_is_refused(es: Elasticsearch, part: dict[str, int], reason: str) -> None:
    pit = es.open_point_in_time(index=INDEX, keep_alive="1m")["id"]
    try:
        with pytest.raises(BadRequestError, match=reason):
            es.search(pit={"id": pit}, slice=part)
    finally:
        es.close_point_in_time(id=pit)


def test_a_slice_needs_a_point_in_time_or_a_scroll(es: Elasticsearch) -> None:
    with pytest.raises(BadRequestError, match=r"\[slice\] can only be used with \[scroll\] or \[point-in-time\]"):
        es.search(index=INDEX, slice={"id": 0, "max": 2})
