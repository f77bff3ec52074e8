"""Search mechanics of the log server: sort with missing values, search_after paging, aggregations, filtering."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulators.logserver.errors import EsError
from simulators.logserver.search import (
    LONG_MAX,
    SearchEngine,
    filter_source,
    parse_search,
    parse_source_filter,
)
from simulators.logserver.server import apply_filter_path, negotiate
from simulators.logserver.storage import Storage, WriteOp

MAPPINGS = {
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "latency": {"type": "double"},
        "label": {"type": "keyword"},
        "note": {"type": "text"},
    }
}
T0 = 1_700_000_000


def _doc(i: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "workload_id": f"w{i % 3}",
        "client_id": f"c{i % 2}",
        "timestamp": T0 + (i * 37) % 11,
        "note": "all docs",
    }
    if i % 3:
        doc["latency"] = float(i % 4)
    if i % 4:
        doc["label"] = f"l{i % 5}"
    return doc


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Storage, SearchEngine]]:
    storage = Storage(Path(tmp_path_factory.mktemp("search")) / "db.sqlite3")
    storage.create_index("logs", MAPPINGS)
    storage.write([WriteOp("index", "logs", f"d{i:02d}", _doc(i)) for i in range(30)])
    yield storage, SearchEngine(storage)
    storage.close()


def _search(env: tuple[Storage, SearchEngine], body: dict[str, Any], **kw: Any) -> Any:
    storage, engine = env
    return engine.search(storage.get_index("logs"), parse_search(body, {}), **kw)


def _sort_values(env: tuple[Storage, SearchEngine], result: Any) -> list[list[Any]]:
    return [[k.value_out(raw, h.seq, 1.0) for k, raw in zip(result.keys, h.raw_sort, strict=True)] for h in result.hits]


def _expected_order(sort: list[tuple[str, bool]]) -> list[str]:
    """Reference order: ES semantics (missing last in both directions), then index order."""
    docs = [(f"d{i:02d}", _doc(i), i) for i in range(30)]
    for field, desc in reversed(sort):
        present = [d for d in docs if field in d[1]]
        absent = [d for d in docs if field not in d[1]]
        present.sort(key=lambda d, f=field: d[1][f], reverse=desc)  # type: ignore[misc]
        docs = present + absent
    return [d[0] for d in docs]


@pytest.mark.parametrize(
    "sort",
    [
        [("timestamp", False)],
        [("latency", False)],
        [("latency", True)],
        [("label", False)],
        [("label", True), ("timestamp", False)],
        [("workload_id", False), ("latency", True)],
    ],
)
@pytest.mark.parametrize("pit", [False, True])
def test_search_after_pages_through_everything_in_order(
    env: tuple[Storage, SearchEngine], sort: list[tuple[str, bool]], pit: bool
) -> None:
    body: dict[str, Any] = {"size": 4, "sort": [{f: {"order": "desc" if d else "asc"}} for f, d in sort]}
    if not pit:
        body["sort"].append({"_doc": "asc"})
    seen: list[str] = []
    after = None
    while True:
        page = dict(body, search_after=after) if after is not None else body
        result = _search(env, page, snapshot=None, pit=pit)
        if not result.hits:
            break
        seen.extend(h.doc_id for h in result.hits)
        after = _sort_values(env, result)[-1]
    assert len(seen) == len(set(seen)) == 30
    assert _without_ties(seen, sort) == _without_ties(_expected_order(sort), sort)


def _without_ties(order: list[str], sort: list[tuple[str, bool]]) -> list[tuple[Any, ...]]:
    docs = {f"d{i:02d}": _doc(i) for i in range(30)}
    return [tuple(docs[d].get(f) for f, _ in sort) for d in order]


def test_missing_sort_values_are_reported_as_es_does(env: tuple[Storage, SearchEngine]) -> None:
    result = _search(env, {"size": 30, "sort": [{"latency": "asc"}, "_doc"]})
    values = _sort_values(env, result)
    assert values[-1][0] == LONG_MAX
    result = _search(env, {"size": 30, "sort": [{"label": {"order": "asc", "missing": "_first"}}]})
    assert _sort_values(env, result)[0] == [None]
    result = _search(
        env, {"size": 1, "sort": [{"timestamp": {"order": "desc", "format": "strict_date_optional_time"}}]}
    )
    assert _sort_values(env, result)[0][0] == "2023-11-14T22:13:30.000Z"


def test_sort_on_id_and_doc(env: tuple[Storage, SearchEngine]) -> None:
    result = _search(env, {"size": 3, "sort": [{"_id": "desc"}]})
    assert _sort_values(env, result) == [["d29"], ["d28"], ["d27"]]
    result = _search(env, {"size": 2, "sort": ["_doc"], "search_after": [result.hits[0].seq]})
    assert [h.doc_id for h in result.hits] == []


def test_from_size_window_and_total(env: tuple[Storage, SearchEngine]) -> None:
    result = _search(env, {"from": 5, "size": 5, "sort": ["_doc"], "track_total_hits": 10})
    assert [h.doc_id for h in result.hits] == [f"d{i:02d}" for i in range(5, 10)]
    assert (result.total, result.total_relation) == (10, "gte")
    assert _search(env, {"size": 0, "track_total_hits": False}).total is None
    with pytest.raises(EsError, match="Result window is too large"):
        _search(env, {"from": 9990, "size": 20})


def test_sort_errors(env: tuple[Storage, SearchEngine]) -> None:
    with pytest.raises(EsError, match="Text fields"):
        _search(env, {"sort": ["note"]})
    with pytest.raises(EsError, match="No mapping found"):
        _search(env, {"sort": ["nope"]})
    assert len(_search(env, {"sort": [{"nope": {"unmapped_type": "long"}}]}).hits) == 10


AGGS = {
    "pairs": {
        "terms": {"field": "workload_id", "size": 10},
        "aggs": {
            "clients": {
                "terms": {"field": "client_id"},
                "aggs": {
                    "latest": {"max": {"field": "timestamp"}},
                    "first": {"min": {"field": "timestamp"}},
                    "n": {"value_count": {"field": "latency"}},
                },
            },
            "labels": {"cardinality": {"field": "label"}},
            "lat": {"stats": {"field": "latency"}},
            "avg": {"avg": {"field": "latency"}},
            "sum": {"sum": {"field": "latency"}},
        },
    },
    "top_label": {"terms": {"field": "label", "size": 2, "order": {"_key": "desc"}}},
    "by_latency": {
        "terms": {"field": "workload_id", "order": {"lat_max": "asc"}},
        "aggs": {"lat_max": {"max": {"field": "latency"}}},
    },
    "missing_label": {"terms": {"field": "label", "missing": "none", "size": 10}},
    "composite": {
        "composite": {
            "size": 4,
            "sources": [
                {"w": {"terms": {"field": "workload_id"}}},
                {"c": {"terms": {"field": "client_id", "order": "desc"}}},
            ],
        },
        "aggs": {"latest": {"max": {"field": "timestamp"}}},
    },
}


def test_sql_and_python_aggregations_agree(env: tuple[Storage, SearchEngine]) -> None:
    sql = _search(env, {"size": 0, "aggs": AGGS}).aggregations
    # A match on a text field needs Python, which switches the aggregations to the Python path.
    python = _search(env, {"size": 0, "aggs": AGGS, "query": {"match": {"note": "docs"}}}).aggregations
    assert sql == python
    pairs = sql["pairs"]["buckets"]
    assert [b["key"] for b in pairs] == ["w0", "w1", "w2"]
    assert sum(c["doc_count"] for b in pairs for c in b["clients"]["buckets"]) == 30
    latest = pairs[0]["clients"]["buckets"][0]["latest"]
    assert latest["value_as_string"].endswith("Z") and isinstance(latest["value"], float)
    assert sql["top_label"]["buckets"][0]["key"] == "l4" and sql["top_label"]["sum_other_doc_count"] > 0
    assert {b["key"] for b in sql["missing_label"]["buckets"]} >= {"none"}
    assert sql["composite"]["after_key"] == sql["composite"]["buckets"][-1]["key"]


def test_composite_pages_cover_every_pair(env: tuple[Storage, SearchEngine]) -> None:
    pairs: list[tuple[str, str]] = []
    after = None
    while True:
        comp: dict[str, Any] = {
            "size": 2,
            "sources": [{"w": {"terms": {"field": "workload_id"}}}, {"c": {"terms": {"field": "client_id"}}}],
        }
        if after:
            comp["after"] = after
        result = _search(env, {"size": 0, "aggs": {"p": {"composite": comp}}}).aggregations["p"]
        if not result["buckets"]:
            break
        pairs.extend((b["key"]["w"], b["key"]["c"]) for b in result["buckets"])
        after = result["after_key"]
    assert pairs == sorted({(f"w{i % 3}", f"c{i % 2}") for i in range(30)})


def test_aggregation_errors(env: tuple[Storage, SearchEngine]) -> None:
    with pytest.raises(EsError, match="Fielddata is disabled"):
        _search(env, {"aggs": {"x": {"terms": {"field": "note"}}}})
    with pytest.raises(EsError, match="Unknown aggregation type"):
        _search(env, {"aggs": {"x": {"bogus": {"field": "note"}}}})
    with pytest.raises(EsError, match="cannot accept sub-aggregations"):
        _search(env, {"aggs": {"x": {"max": {"field": "latency"}, "aggs": {"y": {"max": {"field": "latency"}}}}}})


def test_source_filtering() -> None:
    source = {"a": 1, "b": {"c": 2, "d": 3}, "e": [{"f": 1, "g": 2}], "request": {"big": "x"}}
    assert filter_source(source, parse_source_filter(["a", "b.c"])) == {"a": 1, "b": {"c": 2}}
    assert filter_source(source, parse_source_filter({"excludes": ["request", "b.d"]})) == {
        "a": 1,
        "b": {"c": 2},
        "e": [{"f": 1, "g": 2}],
    }
    assert filter_source(source, parse_source_filter(None, "b.*,e.f")) == {"b": {"c": 2, "d": 3}, "e": [{"f": 1}]}
    assert not parse_source_filter(False).enabled
    assert parse_source_filter("false").enabled is False


def test_filter_path() -> None:
    body = {"took": 1, "hits": {"total": {"value": 2}, "hits": [{"_id": "a", "_source": {"x": 1}}, {"_id": "b"}]}}
    assert apply_filter_path(body, "hits.hits._id") == {"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}}
    assert apply_filter_path(body, "-hits.hits,took") == {"took": 1}
    assert apply_filter_path(body, "**._id") == {"hits": {"hits": [{"_id": "a"}, {"_id": "b"}]}}
    assert apply_filter_path(body, "-took") == {"hits": body["hits"]}


def test_compatible_with_media_types() -> None:
    compat = "application/vnd.elasticsearch+json; compatible-with={}"
    assert negotiate(compat.format(9), compat.format(9)) == 9
    assert negotiate(compat.format(8), None) == 8
    assert negotiate("application/json", "application/json") is None
    with pytest.raises(EsError, match="media-type"):
        negotiate(compat.format(7), None)
    with pytest.raises(EsError, match="media-type"):
        negotiate(compat.format(9), compat.format(8))
