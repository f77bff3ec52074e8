"""The query DSL of the log server: parsing, Python semantics, and SQL compilation that agrees with them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.logserver.errors import EsError
from simulators.logserver.mapping import Mapping
from simulators.logserver.query import Bool, Evaluator, Range, Term, parse_query
from simulators.logserver.search import SearchEngine, parse_search
from simulators.logserver.sqlquery import SqlCompiler
from simulators.logserver.storage import Storage, WriteOp

MAPPINGS = {
    "dynamic": True,
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "latency": {"type": "double"},
        "tokens": {"type": "long"},
        "ok": {"type": "boolean"},
        "message": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
        "request": {"type": "object", "enabled": False},
        "user": {"properties": {"name": {"type": "keyword"}, "tier": {"type": "keyword"}}},
    },
}
T0 = 1_700_000_000


def _doc(i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "workload_id": f"w{i % 3}",
        "client_id": f"c{i % 2}",
        "timestamp": T0 + i * 60 if i % 2 else f"2023-11-14T22:{13 + i:02d}:20Z",
        "request": {"messages": [{"role": "user", "content": f"order {i}"}]},
        "message": f"The Quick brown fox number {i}",
    }
    if i % 4:
        doc["latency"] = i / 10
    if i % 5:
        doc["tokens"] = i * 7
    if i % 3 == 0:
        doc["ok"] = i % 2 == 0
    if i % 6 == 0:
        doc["user"] = {"name": f"u{i}", "tier": "gold" if i % 12 == 0 else "silver"}
    if i % 7 == 0:
        doc["tags"] = ["red", "blue"] if i % 14 == 0 else ["red"]
    return doc


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Storage, SearchEngine]]:
    storage = Storage(Path(tmp_path_factory.mktemp("logserver")) / "db.sqlite3")
    storage.create_index("logs", MAPPINGS)
    docs = [WriteOp("index", "logs", f"d{i}", _doc(i)) for i in range(40)]
    results = storage.write(docs)
    assert all(status == 201 for status, _ in results), results
    yield storage, SearchEngine(storage)
    storage.close()


QUERIES: list[dict[str, Any]] = [
    {"match_all": {}},
    {"match_none": {}},
    {"term": {"workload_id": "w1"}},
    {"term": {"workload_id": {"value": "w1"}}},
    {"terms": {"client_id": ["c0", "nope"]}},
    {"term": {"tokens": 7}},
    {"term": {"ok": True}},
    {"term": {"ok": "false"}},
    {"match": {"workload_id": "w2"}},
    {"match": {"message": "quick FOX"}},
    {"match": {"message": {"query": "quick number 3", "operator": "and"}}},
    {"match_phrase": {"message": "brown fox"}},
    {"term": {"message": "quick"}},
    {"term": {"message": "Quick"}},
    {"term": {"message.keyword": "The Quick brown fox number 3"}},
    {
        "range": {
            "timestamp": {
                "gte": "2023-11-14T22:20:00Z",
                "lt": T0 + 1800,
                "format": "strict_date_optional_time||epoch_second",
            }
        }
    },
    {"range": {"timestamp": {"gt": "2023-11-14T22:20:00Z"}}},
    {"range": {"latency": {"gte": 1.0, "lte": 2.5}}},
    {"range": {"tokens": {"lt": 50}}},
    {"range": {"workload_id": {"gte": "w1"}}},
    {"exists": {"field": "latency"}},
    {"exists": {"field": "user"}},
    {"exists": {"field": "request"}},
    {"exists": {"field": "nope"}},
    {"ids": {"values": ["d1", "d5", "zzz"]}},
    {"term": {"_id": "d3"}},
    {"prefix": {"user.name": "u1"}},
    {"wildcard": {"user.name": "u*2"}},
    {"term": {"tags": "blue"}},
    {"terms": {"tags": ["red"]}},
    {"term": {"request.messages.role": "user"}},
    {"term": {"undeclared": "x"}},
    {
        "bool": {
            "filter": [{"term": {"workload_id": "w0"}}, {"range": {"timestamp": {"gte": T0}}}],
            "must_not": [{"term": {"client_id": "c1"}}],
        }
    },
    {"bool": {"should": [{"term": {"workload_id": "w0"}}, {"term": {"client_id": "c1"}}]}},
    {
        "bool": {
            "should": [
                {"term": {"workload_id": "w0"}},
                {"term": {"client_id": "c1"}},
                {"exists": {"field": "latency"}},
            ],
            "minimum_should_match": 2,
        }
    },
    {"bool": {"must": [{"term": {"workload_id": "w0"}}], "should": [{"term": {"client_id": "zzz"}}]}},
    {"bool": {"must_not": [{"exists": {"field": "latency"}}]}},
    {"bool": {"must_not": [{"term": {"latency": 0.5}}]}},
    {"bool": {"filter": {"bool": {"must": [{"term": {"workload_id": "w1"}}, {"match": {"message": "fox"}}]}}}},
    {
        "bool": {
            "should": [{"match": {"message": "number"}}, {"term": {"workload_id": "w1"}}],
            "minimum_should_match": "100%",
        }
    },
    {"constant_score": {"filter": {"term": {"user.tier": "gold"}}}},
]


def _python_ids(storage: Storage, query: dict[str, Any]) -> set[str]:
    meta = storage.get_index("logs")
    evaluator = Evaluator(meta.mapping, "logs")
    node = parse_query(query)
    rows = storage.conn.execute(f"SELECT d._id, s.source FROM {meta.docs} d JOIN {meta.sources} s ON s.seq = d.seq")
    return {doc_id for doc_id, text in rows if evaluator.matches(node, doc_id, orjson.loads(text))}


@pytest.mark.parametrize("query", QUERIES, ids=[orjson.dumps(q).decode()[:60] for q in QUERIES])
def test_sql_and_python_agree(engine: tuple[Storage, SearchEngine], query: dict[str, Any]) -> None:
    storage, search = engine
    meta = storage.get_index("logs")
    req = parse_search({"query": query, "size": 100, "track_total_hits": True}, {})
    result = search.search(meta, req)
    sql_ids = {hit.doc_id for hit in result.hits}
    assert sql_ids == _python_ids(storage, query)
    assert result.total == len(sql_ids)
    assert search.count(meta, parse_query(query)) == len(sql_ids)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"term": {"workload_id": "w1"}}, 13),
        ({"exists": {"field": "latency"}}, 30),
        ({"term": {"tags": "blue"}}, 3),
        ({"match": {"message": "quick FOX"}}, 40),
        ({"match": {"message": {"query": "quick number 3", "operator": "and"}}}, 1),
        ({"term": {"message": "Quick"}}, 0),
        ({"term": {"request.messages.role": "user"}}, 0),
        ({"range": {"timestamp": {"gte": T0, "lt": T0 + 600}}}, 10),
        ({"bool": {"should": [{"term": {"workload_id": "w0"}}, {"term": {"client_id": "c1"}}]}}, 27),
    ],
)
def test_known_answers(engine: tuple[Storage, SearchEngine], query: dict[str, Any], expected: int) -> None:
    storage, search = engine
    assert search.count(storage.get_index("logs"), parse_query(query)) == expected


def test_indexed_queries_need_no_python(engine: tuple[Storage, SearchEngine]) -> None:
    storage, _ = engine
    meta = storage.get_index("logs")
    compiler = SqlCompiler(meta.mapping, meta.columns, "logs")
    query = {
        "bool": {
            "filter": [
                {"term": {"workload_id": "w0"}},
                {"term": {"client_id": "c0"}},
                {"range": {"timestamp": {"gte": "now-30d"}}},
            ]
        }
    }
    _, _, residual = compiler.split(parse_query(query))
    assert residual is None
    _, _, residual = compiler.split(
        parse_query({"bool": {"filter": [{"term": {"workload_id": "w0"}}, {"match": {"message": "fox"}}]}})
    )
    assert isinstance(residual, Bool) and len(residual.filter) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"bogus": {}},
        {"term": {}},
        {"term": {"a": 1, "b": 2}},
        {"bool": {"must": "x"}},
        {"bool": {"nope": []}},
        {"range": {"f": 5}},
        {"ids": {"values": "x"}},
        [],
    ],
)
def test_parse_errors_are_parsing_exceptions(body: Any) -> None:
    with pytest.raises(EsError) as info:
        parse_query(body)
    assert info.value.status == 400
    assert info.value.type == "parsing_exception"


def test_unmapped_and_disabled_fields_match_nothing() -> None:
    mapping = Mapping({"dynamic": False, "properties": {"request": {"type": "object", "enabled": False}}})
    evaluator = Evaluator(mapping, "logs")
    source = {"request": {"model": "x"}, "extra": "y"}
    assert not evaluator.matches(Term("request.model", ["x"]), "1", source)
    assert not evaluator.matches(Term("extra", ["y"]), "1", source)
    assert not evaluator.matches(Range("extra", gte="a"), "1", source)


def test_minimum_should_match_forms() -> None:
    node = parse_query(
        {
            "bool": {
                "should": [{"term": {"a": "1"}}, {"term": {"b": "1"}}, {"term": {"c": "1"}}, {"term": {"d": "1"}}],
                "minimum_should_match": "-25%",
            }
        }
    )
    assert isinstance(node, Bool) and node.required_should() == 3
    node.minimum_should_match = -1
    assert node.required_should() == 3
    node.minimum_should_match = "50%"
    assert node.required_should() == 2
