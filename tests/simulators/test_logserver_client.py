"""The official ``elasticsearch`` client, sync and async, against the log server over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    BadRequestError,
    Elasticsearch,
    NotFoundError,
    helpers,
)
from elasticsearch.helpers import async_bulk, async_scan

from simulators.common import SIMULATED_HEADER
from simulators.logserver import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer

pytestmark = pytest.mark.integration

INDEX = "flywheel-logs"
LOG_MAPPINGS: dict[str, Any] = {
    "dynamic": True,
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "request": {"type": "object", "enabled": False},
        "response": {"type": "object", "enabled": False},
    },
}
N_DOCS = 3000
T0 = 1_700_000_000
WORKLOADS, CLIENTS = ("orders", "returns", "faq"), ("web", "mobile")


def _record(i: int) -> dict[str, Any]:
    seconds = T0 + i
    timestamp: Any = seconds if i % 2 else _iso(seconds)  # epoch seconds and ISO 8601, with and without zone
    return {
        "workload_id": WORKLOADS[i % 3],
        "client_id": CLIENTS[i % 2],
        "timestamp": timestamp,
        "request": {"model": "meta/llama-3.1-70b-instruct", "messages": [{"role": "user", "content": f"q{i}" * 50}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": f"a{i}"}}]},
        "session": f"s{i % 17}",
        "latency_ms": i % 250,
    }


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if seconds % 4 else "")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    state = Path(tmp_path_factory.mktemp("logserver"))
    cfg = LocalStackConfig(state_dir=str(state), logserver={"db_path": str(state / "es.sqlite3")})
    with ThreadedServer(create_app(cfg)) as running:
        yield running


@pytest.fixture(scope="module")
def es(server: ThreadedServer) -> Iterator[Elasticsearch]:
    client = Elasticsearch(server.url, request_timeout=30)
    client.indices.create(index=INDEX, mappings=LOG_MAPPINGS)
    ok, errors = helpers.bulk(client, ({"_index": INDEX, "_source": _record(i)} for i in range(N_DOCS)), chunk_size=500)
    assert (ok, errors) == (N_DOCS, [])
    client.indices.refresh(index=INDEX)
    yield client
    client.close()


def test_identifies_as_elasticsearch(server: ThreadedServer, es: Elasticsearch) -> None:
    info = es.info()
    assert info["tagline"] == "You Know, for Search"
    assert info["version"]["number"].startswith("9.") and info["version"]["build_flavor"] == "default"
    assert info["simulated"] is True
    assert es.ping()
    raw = httpx.get(server.url + "/")
    assert raw.headers["x-elastic-product"] == "Elasticsearch"
    assert raw.headers[SIMULATED_HEADER] == "true"


def test_mapping_and_counts(es: Elasticsearch) -> None:
    assert es.indices.exists(index=INDEX)
    assert not es.indices.exists(index="nope")
    mapping = es.indices.get_mapping(index=INDEX)[INDEX]["mappings"]
    assert mapping["properties"]["timestamp"]["format"] == "strict_date_optional_time||epoch_second"
    assert mapping["properties"]["session"]["type"] == "text"
    assert mapping["properties"]["request"] == {"type": "object", "enabled": False}
    assert es.count(index=INDEX)["count"] == N_DOCS
    assert es.count(index=INDEX, query={"term": {"workload_id": "orders"}})["count"] == N_DOCS // 3
    both = {"bool": {"filter": [{"term": {"workload_id": "orders"}}, {"term": {"client_id": "web"}}]}}
    assert es.count(index=INDEX, query=both)["count"] == N_DOCS // 6
    assert es.count(index=INDEX, query={"term": {"request.model": "meta/llama-3.1-70b-instruct"}})["count"] == 0


def test_raw_count_answers_like_curl(server: ThreadedServer, es: Elasticsearch) -> None:
    response = httpx.get(f"{server.url}/{INDEX}/_count")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["count"] == N_DOCS
    assert body["_shards"]["successful"] == body["_shards"]["total"] >= 1


def test_range_on_timestamp_mixes_epoch_and_iso(es: Elasticsearch) -> None:
    query = {"range": {"timestamp": {"gte": _iso(T0 + 100) + "Z", "lt": T0 + 200}}}
    result = es.search(index=INDEX, query=query, size=200, sort=[{"timestamp": "asc"}])
    assert result["hits"]["total"] == {"value": 100, "relation": "eq"}
    assert [h["sort"][0] for h in result["hits"]["hits"]] == [(T0 + i) * 1000 for i in range(100, 200)]
    formatted = {"range": {"timestamp": {"gte": T0 + 100, "lt": T0 + 200, "format": "epoch_second"}}}
    assert es.count(index=INDEX, query=formatted)["count"] == 100


def test_pit_search_after_pages_a_snapshot(es: Elasticsearch) -> None:
    pit = es.open_point_in_time(index=INDEX, keep_alive="1m")["id"]
    es.index(index=INDEX, document=_record(N_DOCS + 1), refresh=True)
    seen: set[str] = set()
    after: list[Any] | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"search_after": after} if after else {}
        page = es.search(
            pit={"id": pit, "keep_alive": "1m"},
            size=700,
            sort=[{"timestamp": "asc"}],
            track_total_hits=False,
            source_includes=["workload_id", "timestamp"],
            **kwargs,
        )
        hits = page["hits"]["hits"]
        assert page["pit_id"] == pit
        if not hits:
            break
        pages += 1
        for hit in hits:
            assert hit["_id"] not in seen
            assert set(hit["_source"]) == {"workload_id", "timestamp"}
            seen.add(hit["_id"])
        after = hits[-1]["sort"]
        assert len(after) == 2  # the implicit _shard_doc tiebreaker
    assert len(seen) == N_DOCS and pages == 5
    assert es.close_point_in_time(id=pit)["succeeded"]
    with pytest.raises(NotFoundError):
        es.search(pit={"id": pit}, size=1)
    assert es.count(index=INDEX)["count"] == N_DOCS + 1
    es.delete_by_query(index=INDEX, query={"range": {"timestamp": {"gte": T0 + N_DOCS}}}, refresh=True)
    assert es.count(index=INDEX)["count"] == N_DOCS


def test_scan_scrolls_everything(es: Elasticsearch) -> None:
    ids = [
        hit["_id"] for hit in helpers.scan(es, index=INDEX, size=400, query={"query": {"term": {"client_id": "web"}}})
    ]
    assert len(ids) == len(set(ids)) == N_DOCS // 2
    ordered = list(
        helpers.scan(es, index=INDEX, size=999, preserve_order=True, query={"sort": [{"timestamp": "desc"}]})
    )
    stamps = [hit["sort"][0] for hit in ordered]
    assert len(stamps) == N_DOCS and stamps == sorted(stamps, reverse=True)


def test_terms_aggregation_lists_every_pair_with_latest_timestamp(es: Elasticsearch) -> None:
    aggs = {
        "workloads": {
            "terms": {"field": "workload_id", "size": 100},
            "aggs": {
                "clients": {
                    "terms": {"field": "client_id", "size": 100},
                    "aggs": {"latest": {"max": {"field": "timestamp"}}},
                }
            },
        }
    }
    result = es.search(index=INDEX, size=0, aggs=aggs)
    pairs = {
        (w["key"], c["key"]): (c["doc_count"], c["latest"]["value"])
        for w in result["aggregations"]["workloads"]["buckets"]
        for c in w["clients"]["buckets"]
    }
    expected: dict[tuple[str, str], tuple[int, float]] = {}
    for i in range(N_DOCS):
        key = (WORKLOADS[i % 3], CLIENTS[i % 2])
        count, _ = expected.get(key, (0, 0.0))
        expected[key] = (count + 1, float((T0 + i) * 1000))
    assert pairs == expected


def test_errors_have_elasticsearch_shapes(server: ThreadedServer, es: Elasticsearch) -> None:
    with pytest.raises(NotFoundError) as missing:
        es.search(index="no-such-index", query={"match_all": {}})
    assert missing.value.error == "index_not_found_exception"
    assert missing.value.body["error"]["root_cause"][0]["type"] == "index_not_found_exception"
    assert missing.value.body["status"] == 404
    with pytest.raises(BadRequestError) as bad:
        es.search(index=INDEX, query={"no_such_query": {}})
    assert bad.value.error == "parsing_exception"
    with pytest.raises(BadRequestError) as exists:
        es.indices.create(index=INDEX)
    assert exists.value.error == "resource_already_exists_exception"
    malformed = httpx.post(
        f"{server.url}/{INDEX}/_search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "x_content_parse_exception"
    assert malformed.headers["x-elastic-product"] == "Elasticsearch"
    unknown = httpx.get(f"{server.url}/{INDEX}/_nonsense/x/y")
    assert unknown.status_code == 400 and "no handler found" in unknown.json()["error"]["reason"]


def test_bulk_reports_item_errors(es: Elasticsearch) -> None:
    actions = [
        {"_index": "bulk-errors", "_id": "ok", "_source": {"timestamp": T0, "workload_id": "w"}},
        {"_index": "bulk-errors", "_id": "bad", "_source": {"timestamp": "not a date", "workload_id": "w"}},
        {"_op_type": "create", "_index": "bulk-errors", "_id": "ok", "_source": {"timestamp": T0}},
    ]
    es.indices.create(index="bulk-errors", mappings=LOG_MAPPINGS)
    results = list(helpers.streaming_bulk(es, actions, raise_on_error=False))
    assert [ok for ok, _ in results] == [True, False, False]
    assert results[1][1]["index"]["error"]["type"] == "document_parsing_exception"
    assert results[2][1]["create"]["status"] == 409
    with pytest.raises(helpers.BulkIndexError):
        helpers.bulk(es, actions[1:2])
    doc = es.get(index="bulk-errors", id="ok")
    assert doc["found"] and doc["_source"]["workload_id"] == "w"
    with pytest.raises(NotFoundError):
        es.get(index="bulk-errors", id="bad")
    es.indices.delete(index="bulk-errors")
    assert not es.indices.exists(index="bulk-errors")


def test_compatible_with_8_media_type(server: ThreadedServer, es: Elasticsearch) -> None:
    compat8 = "application/vnd.elasticsearch+json; compatible-with=8"
    response = httpx.post(
        f"{server.url}/{INDEX}/_count",
        content=b'{"query": {"term": {"client_id": "mobile"}}}',
        headers={"accept": compat8, "content-type": compat8},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.elasticsearch+json;compatible-with=8"
    assert response.json()["count"] == N_DOCS // 2
    rejected = httpx.get(server.url + "/", headers={"accept": compat8.replace("8", "7")})
    assert rejected.status_code == 400 and rejected.json()["error"]["type"] == "media_type_header_exception"
    assert rejected.headers[SIMULATED_HEADER] == "true"


async def test_async_client_bulk_scan_and_pit(server: ThreadedServer, es: Elasticsearch) -> None:
    client = AsyncElasticsearch(server.url)
    try:
        assert (await client.info())["tagline"] == "You Know, for Search"
        index = "async-logs"
        await client.indices.create(index=index, mappings=LOG_MAPPINGS)
        ok, _ = await async_bulk(client, ({"_index": index, "_source": _record(i)} for i in range(500)))
        assert ok == 500
        scanned = [hit["_id"] async for hit in async_scan(client, index=index, size=120)]
        assert len(set(scanned)) == 500
        pit = (await client.open_point_in_time(index=index, keep_alive="30s"))["id"]
        seen: list[str] = []
        after = None
        while True:
            extra: dict[str, Any] = {"search_after": after} if after else {}
            page = await client.search(pit={"id": pit, "keep_alive": "30s"}, size=90, sort=["_shard_doc"], **extra)
            hits = page["hits"]["hits"]
            if not hits:
                break
            seen.extend(h["_id"] for h in hits)
            after = hits[-1]["sort"]
        await client.close_point_in_time(id=pit)
        assert sorted(seen) == sorted(scanned)
        with pytest.raises(ApiError):
            await client.indices.delete(index="async-*")
        await client.indices.delete(index=index)
    finally:
        await client.close()


def test_single_document_apis(es: Elasticsearch) -> None:
    index = "docs"  # also a FastAPI page path: Elasticsearch paths must win
    created = es.index(index=index, id="a/1", document={"workload_id": "w", "n": 1})
    assert created["result"] == "created" and created["_version"] == 1
    assert es.indices.get(index=index)[index]["mappings"]["properties"]["n"] == {"type": "long"}
    assert es.exists(index=index, id="a/1")
    assert es.update(index=index, id="a/1", doc={"n": 2})["result"] == "updated"
    assert es.get(index=index, id="a/1", source_includes=["n"])["_source"] == {"n": 2}
    assert es.get_source(index=index, id="a/1")["workload_id"] == "w"
    assert es.create(index=index, id="b", document={"n": 3})["result"] == "created"
    with pytest.raises(ApiError) as conflict:
        es.create(index=index, id="b", document={"n": 4})
    assert conflict.value.meta.status == 409
    assert es.delete(index=index, id="a/1")["result"] == "deleted"
    assert not es.exists(index=index, id="a/1")
    with pytest.raises(NotFoundError):
        es.delete(index=index, id="a/1")
    es.indices.delete(index=index)
