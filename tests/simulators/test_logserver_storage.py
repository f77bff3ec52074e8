"""SQLite storage of the log server: writes as ES answers them, mappings, snapshots, persistence, index use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from simulators.logserver.errors import EsError
from simulators.logserver.query import parse_query
from simulators.logserver.search import SearchEngine, parse_search
from simulators.logserver.storage import Storage, WriteOp

LOG_MAPPINGS = {
    "dynamic": True,
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "request": {"type": "object", "enabled": False},
        "response": {"type": "object", "enabled": False},
    },
}


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    store = Storage(tmp_path / "db.sqlite3")
    store.create_index("logs", LOG_MAPPINGS)
    return store


def _one(storage: Storage, op: WriteOp) -> tuple[int, dict[str, Any]]:
    return storage.write([op])[0]


def _ids(storage: Storage, query: dict[str, Any], snapshot: int | None = None) -> list[str]:
    meta = storage.get_index("logs")
    req = parse_search({"query": query, "size": 1000, "sort": ["_doc"]}, {})
    return [h.doc_id for h in SearchEngine(storage).search(meta, req, snapshot).hits]


def _log(i: int, **extra: Any) -> dict[str, Any]:
    return {"workload_id": "w", "client_id": "c", "timestamp": 1_700_000_000 + i, **extra}


def test_index_update_create_delete_answer_like_es(storage: Storage) -> None:
    status, item = _one(storage, WriteOp("index", "logs", "a", _log(1)))
    assert (status, item["result"], item["_version"]) == (201, "created", 1)
    status, item = _one(storage, WriteOp("index", "logs", "a", _log(2)))
    assert (status, item["result"], item["_version"]) == (200, "updated", 2)
    status, item = _one(storage, WriteOp("create", "logs", "a", _log(3)))
    assert status == 409 and item["error"]["type"] == "version_conflict_engine_exception"
    status, item = _one(storage, WriteOp("update", "logs", "a", {"client_id": "c2", "extra": {"k": 1}}))
    assert (status, item["result"], item["_version"]) == (200, "updated", 3)
    doc = storage.get_doc("logs", "a")
    assert doc is not None and orjson.loads(doc.source) == {**_log(2), "client_id": "c2", "extra": {"k": 1}}
    status, item = _one(storage, WriteOp("update", "logs", "a", {"client_id": "c2"}))
    assert item["result"] == "noop"
    status, item = _one(storage, WriteOp("update", "logs", "missing", {"x": 1}))
    assert status == 404 and item["error"]["type"] == "document_missing_exception"
    status, item = _one(storage, WriteOp("update", "logs", "up", _log(4), doc_as_upsert=True))
    assert status == 201
    status, item = _one(storage, WriteOp("delete", "logs", "a"))
    assert (status, item["result"], item["_version"]) == (200, "deleted", 4)
    status, item = _one(storage, WriteOp("delete", "logs", "a"))
    assert (status, item["result"]) == (404, "not_found")
    assert storage.get_doc("logs", "a") is None


def test_sequence_numbers_increase_and_ids_are_generated(storage: Storage) -> None:
    results = storage.write([WriteOp("index", "logs", None, _log(i)) for i in range(5)])
    seqs = [item["_seq_no"] for _, item in results]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    ids = [item["_id"] for _, item in results]
    assert len(set(ids)) == 5 and all(len(i) == 20 for i in ids)


def test_optimistic_concurrency(storage: Storage) -> None:
    _, item = _one(storage, WriteOp("index", "logs", "a", _log(1)))
    stale = WriteOp("index", "logs", "a", _log(2), if_seq_no=item["_seq_no"] + 100, if_primary_term=1)
    assert _one(storage, stale)[0] == 409
    fresh = WriteOp("index", "logs", "a", _log(2), if_seq_no=item["_seq_no"], if_primary_term=1)
    assert _one(storage, fresh)[0] == 200


def test_dynamic_mapping_grows_and_indexes_new_fields(storage: Storage) -> None:
    _one(storage, WriteOp("index", "logs", "a", _log(1, user="ann", score=3, ratio=0.5, flag=True, seen="2024-01-02")))
    props = storage.get_index("logs").mappings["properties"]
    assert props["user"] == {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    assert props["score"] == {"type": "long"}
    assert props["ratio"] == {"type": "float"}
    assert props["flag"] == {"type": "boolean"}
    assert props["seen"] == {"type": "date"}
    assert "request" in props and "properties" not in props["request"]
    assert _ids(storage, {"term": {"user.keyword": "ann"}}) == ["a"]
    assert _ids(storage, {"range": {"seen": {"gte": "2024-01-01"}}}) == ["a"]


def test_strict_and_false_dynamic(tmp_path: Path) -> None:
    store = Storage(tmp_path / "db.sqlite3")
    store.create_index("strict", {"dynamic": "strict", "properties": {"a": {"type": "keyword"}}})
    status, item = store.write([WriteOp("index", "strict", "1", {"a": "x", "b": 1})])[0]
    assert status == 400 and item["error"]["type"] == "strict_dynamic_mapping_exception"
    store.create_index("loose", {"dynamic": False, "properties": {"a": {"type": "keyword"}}})
    assert store.write([WriteOp("index", "loose", "1", {"a": "x", "b": 1})])[0][0] == 201
    assert "b" not in store.get_index("loose").mappings["properties"]
    doc = store.get_doc("loose", "1")
    assert doc is not None and orjson.loads(doc.source)["b"] == 1


def test_bad_dates_are_rejected_or_ignored(tmp_path: Path) -> None:
    store = Storage(tmp_path / "db.sqlite3")
    store.create_index("logs", LOG_MAPPINGS)
    status, item = store.write([WriteOp("index", "logs", "1", _log(0, timestamp="yesterday"))])[0]
    assert status == 400
    assert item["error"]["type"] == "document_parsing_exception"
    assert "[timestamp]" in item["error"]["reason"]
    store.create_index("lenient", {"properties": {"t": {"type": "date", "ignore_malformed": True}}})
    assert store.write([WriteOp("index", "lenient", "1", {"t": "yesterday"})])[0][0] == 201


def test_keyword_field_rejects_objects(storage: Storage) -> None:
    status, item = _one(storage, WriteOp("index", "logs", "1", _log(0, workload_id={"a": 1})))
    assert status == 400 and item["error"]["type"] == "document_parsing_exception"


def test_auto_create_and_invalid_names(storage: Storage) -> None:
    assert _one(storage, WriteOp("index", "fresh", "1", {"x": 1}))[0] == 201
    assert storage.find_index("fresh") is not None
    status, item = _one(storage, WriteOp("index", "Bad", "1", {"x": 1}))
    assert status == 400 and item["error"]["type"] == "invalid_index_name_exception"
    status, item = storage.write([WriteOp("index", "other", "1", {"x": 1})], auto_create=False)[0]
    assert status == 404 and item["error"]["type"] == "index_not_found_exception"
    with pytest.raises(EsError) as info:
        storage.create_index("logs")
    assert info.value.type == "resource_already_exists_exception"


def test_snapshot_sees_the_past(storage: Storage) -> None:
    storage.write([WriteOp("index", "logs", f"d{i}", _log(i)) for i in range(4)])
    meta = storage.get_index("logs")
    snapshot = storage.open_snapshot(meta)
    storage.write(
        [
            WriteOp("index", "logs", "new", _log(9)),
            WriteOp("index", "logs", "d1", _log(1, client_id="changed")),
            WriteOp("delete", "logs", "d2"),
        ]
    )
    assert sorted(_ids(storage, {"match_all": {}}, snapshot)) == ["d0", "d1", "d2", "d3"]
    assert _ids(storage, {"term": {"client_id": "changed"}}, snapshot) == []
    assert _ids(storage, {"term": {"client_id": "changed"}}) == ["d1"]
    assert sorted(_ids(storage, {"match_all": {}})) == ["d0", "d1", "d3", "new"]
    engine = SearchEngine(storage)
    assert engine.count(meta, parse_query(None), snapshot) == 4
    hits = engine.search(meta, parse_search({"query": {"ids": {"values": ["d1"]}}}, {}), snapshot).hits
    assert orjson.loads(hits[0].source or "{}")["client_id"] == "c"
    storage.release_snapshot(meta.id, snapshot)
    assert not storage.has_history(meta)


def test_data_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Storage(path)
    store.create_index("logs", LOG_MAPPINGS)
    _, item = store.write([WriteOp("index", "logs", "a", _log(1, extra="x"))])[0]
    store.close()
    reopened = Storage(path)
    assert reopened.get_doc("logs", "a") is not None
    assert "extra" in reopened.get_index("logs").mappings["properties"]
    _, again = reopened.write([WriteOp("index", "logs", "b", _log(2))])[0]
    assert again["_seq_no"] > item["_seq_no"]
    reopened.delete_index("logs")
    assert reopened.find_index("logs") is None


def test_log_queries_use_indexes(storage: Storage) -> None:
    storage.write([WriteOp("index", "logs", None, _log(i)) for i in range(20)])
    meta = storage.get_index("logs")
    wid, cid, ts = (meta.columns[f].name for f in ("workload_id", "client_id", "timestamp"))
    plans = {
        "count": f"SELECT count(*) FROM {meta.docs} d WHERE d.{wid} = 'w'",
        "page": f"SELECT d.seq FROM {meta.docs} d WHERE d.{wid} = 'w' AND d.{cid} = 'c' AND d.{ts} >= 0 "
        f"AND (d.{ts}, d.seq) > (0, 0) ORDER BY d.{ts}, d.seq LIMIT 100",
        "shard_doc": f"SELECT d.seq FROM {meta.docs} d WHERE d.{wid} = 'w' AND d.seq > 3 ORDER BY d.seq LIMIT 100",
        "pairs": f"SELECT d.{wid}, d.{cid}, count(*), max(d.{ts}) FROM {meta.docs} d GROUP BY d.{wid}, d.{cid}",
    }
    for name, sql in plans.items():
        plan = " | ".join(row[3] for row in storage.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "USING COVERING INDEX" in plan, (name, plan)
        assert "TEMP B-TREE" not in plan, (name, plan)


def test_arrays_fall_back_to_python_but_stay_correct(storage: Storage) -> None:
    storage.write(
        [
            WriteOp("index", "logs", "a", _log(1, workload_id=["x", "y"])),
            WriteOp("index", "logs", "b", _log(2, workload_id="y")),
        ]
    )
    assert storage.get_index("logs").columns["workload_id"].multi
    assert sorted(_ids(storage, {"term": {"workload_id": "y"}})) == ["a", "b"]
    assert _ids(storage, {"term": {"workload_id": "x"}}) == ["a"]


class _PlanSpy:
    """Wraps the connection and records the plan of every paged (ORDER BY ... LIMIT) query."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.plans: list[str] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        if "ORDER BY" in sql and "LIMIT" in sql and "GROUP BY" not in sql:
            rows = self.conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            self.plans.append(" | ".join(row[3] for row in rows))
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_log_store_paging_uses_the_composite_index(storage: Storage, order: str) -> None:
    storage.write([WriteOp("index", "logs", None, _log(i)) for i in range(20)])
    meta = storage.get_index("logs")
    wid, cid, ts = (meta.columns[f].name for f in ("workload_id", "client_id", "timestamp"))
    spy = _PlanSpy(storage.conn)
    storage.conn = spy  # type: ignore[assignment]
    query = {
        "bool": {
            "filter": [
                {"term": {"workload_id": "w"}},
                {"term": {"client_id": "c"}},
                {"range": {"timestamp": {"gte": "2023-11-14T00:00:00.000Z", "format": "strict_date_optional_time"}}},
            ]
        }
    }
    body = {"query": query, "size": 5, "sort": [{"timestamp": {"order": order}}, {"_shard_doc": order}]}
    engine = SearchEngine(storage)
    snapshot = storage.open_snapshot(meta)
    first = engine.search(meta, parse_search(body, {}), snapshot, pit=True)
    after = [first.hits[-1].raw_sort[0], first.hits[-1].seq]
    engine.search(meta, parse_search({**body, "search_after": after}, {}), snapshot, pit=True)
    scan = engine.search(meta, parse_search({"query": query, "size": 5, "sort": ["_doc"]}, {}), snapshot)
    engine.search(meta, parse_search({"query": query, "size": 5}, {}), snapshot, cursor=scan.hits[-1].internal_key)
    assert len(spy.plans) == 4
    for plan in spy.plans[:2]:
        assert f"{meta.docs}_{wid}_{cid}_{ts}" in plan and "TEMP B-TREE" not in plan, plan
    for plan in spy.plans[2:]:
        assert "TEMP B-TREE" not in plan, plan
