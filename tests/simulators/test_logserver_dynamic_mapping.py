"""An index nobody created, and the blueprint's: the log server maps and answers as Elasticsearch documents it.

These are the behaviours that broke the flywheel on producers' indices (NeMo Agent Toolkit's exporter writes into
an index it does not create; the blueprint's ``date`` reads epoch seconds as milliseconds), so the local stack
must reproduce them: dynamic field mapping (strings become ``text`` with a ``.keyword`` sub-field, integers
``long``, fractions ``float``), ``term`` on ``text`` matching single analysed tokens, no aggregation on ``text``
(fielddata is disabled), no date string in a range on a ``long``, and a date field's default format
``strict_date_optional_time||epoch_millis``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import BadRequestError, Elasticsearch, helpers

from simulators.logserver import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer

pytestmark = pytest.mark.integration

KEYWORD_SUB_FIELD = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
NAT_LIKE: dict[str, Any] = {
    "contract_version": "1.0",
    "workload_id": "<workflow>",
    "client_id": "nat-support-agent",
    "timestamp": 1765000000,
    "error_details": None,
    "latency": 0.25,
    "cached": False,
    "logged_at": "2025-12-06T05:46:40Z",
    "request": {"model": "meta/llama-3.1-70b-instruct", "temperature": None},
}


@pytest.fixture(scope="module")
def es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elasticsearch]:
    state = Path(tmp_path_factory.mktemp("logserver"))
    cfg = LocalStackConfig(state_dir=str(state), logserver={"db_path": str(state / "es.sqlite3")})
    with ThreadedServer(create_app(cfg)) as server:
        client = Elasticsearch(server.url, request_timeout=30)
        helpers.bulk(client, [{"_index": "nat", "_source": NAT_LIKE}])  # the write creates the index
        client.indices.refresh(index="nat")
        yield client
        client.close()


def test_a_write_into_a_missing_index_maps_every_field_by_its_json_type(es: Elasticsearch) -> None:
    properties = es.indices.get_mapping(index="nat")["nat"]["mappings"]["properties"]
    for name in ("contract_version", "workload_id", "client_id"):
        assert properties[name] == KEYWORD_SUB_FIELD
    assert properties["timestamp"] == {"type": "long"}  # epoch seconds are just an integer
    assert properties["latency"] == {"type": "float"}
    assert properties["cached"] == {"type": "boolean"}
    assert properties["logged_at"] == {"type": "date"}  # date detection
    assert "error_details" not in properties  # null adds no field
    assert properties["request"]["properties"]["model"] == KEYWORD_SUB_FIELD
    assert "temperature" not in properties["request"]["properties"]


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ({"term": {"workload_id": "<workflow>"}}, 0),  # a term is not analysed; the text field holds "workflow"
        ({"term": {"workload_id": "workflow"}}, 1),
        ({"term": {"client_id": "nat-support-agent"}}, 0),
        ({"term": {"client_id": "support"}}, 1),  # a single word of it matches
        ({"term": {"workload_id.keyword": "<workflow>"}}, 1),  # the keyword sub-field is exact
        ({"term": {"client_id.keyword": "nat-support-agent"}}, 1),
        ({"match": {"workload_id": "<workflow>"}}, 1),  # match analyses the query too
        ({"range": {"timestamp": {"gte": 1765000000, "lt": 1765000001}}}, 1),
    ],
)
def test_term_on_text_matches_single_analysed_words(es: Elasticsearch, query: dict[str, Any], count: int) -> None:
    assert es.count(index="nat", query=query)["count"] == count


def test_aggregating_or_sorting_on_text_is_refused_as_elasticsearch_does(es: Elasticsearch) -> None:
    with pytest.raises(BadRequestError, match=r"Fielddata is disabled on \[workload_id\]") as refused:
        es.search(index="nat", size=0, aggs={"w": {"terms": {"field": "workload_id"}}})
    assert refused.value.message == "illegal_argument_exception"
    with pytest.raises(BadRequestError, match="Fielddata is disabled"):
        es.search(index="nat", sort=[{"client_id": "asc"}])
    buckets = es.search(index="nat", size=0, aggs={"w": {"terms": {"field": "workload_id.keyword"}}})
    assert [b["key"] for b in buckets["aggregations"]["w"]["buckets"]] == ["<workflow>"]


def test_a_date_string_in_a_range_on_a_long_is_a_parse_error(es: Elasticsearch) -> None:
    with pytest.raises(BadRequestError) as refused:
        es.count(
            index="nat",
            query={"range": {"timestamp": {"gte": "2025-12-06T00:00:00.000Z", "format": "strict_date_optional_time"}}},
        )
    assert refused.value.meta.status == 400 and refused.value.message == "parse_exception"


def test_the_blueprints_date_field_reads_epoch_seconds_as_milliseconds(es: Elasticsearch) -> None:
    es.indices.create(
        index="blueprint",
        mappings={
            "dynamic": "strict",
            "properties": {
                "workload_id": {"type": "keyword"},
                "client_id": {"type": "keyword"},
                "timestamp": {"type": "date"},  # default format: strict_date_optional_time||epoch_millis
            },
        },
    )
    es.index(index="blueprint", document={"workload_id": "w", "client_id": "c", "timestamp": 1746138417}, refresh=True)
    found = es.search(index="blueprint", sort=[{"timestamp": "desc"}], aggs={"newest": {"max": {"field": "timestamp"}}})
    assert found["hits"]["hits"][0]["sort"] == [1746138417]  # stored as that many milliseconds
    assert found["aggregations"]["newest"]["value_as_string"] == "1970-01-21T05:02:18.417Z"
    in_2025 = {"range": {"timestamp": {"gte": "2025-05-01T00:00:00.000Z", "format": "strict_date_optional_time"}}}
    assert es.count(index="blueprint", query=in_2025)["count"] == 0  # why a 2025 watermark read nothing
    as_stored = {"range": {"timestamp": {"gte": 1746138417, "format": "epoch_millis"}}}
    assert es.count(index="blueprint", query=as_stored)["count"] == 1
    with pytest.raises(BadRequestError, match="strict_dynamic_mapping_exception"):
        es.index(index="blueprint", document={"workload_id": "w", "description": "x"})
