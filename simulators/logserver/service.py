"""The Elasticsearch APIs of the log server, independent of HTTP: each returns ``(status, body)``.

:mod:`.server` only routes requests here, in a worker thread; everything that touches SQLite is synchronous.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson

from simulators.logserver.contexts import Contexts
from simulators.logserver.errors import EsError, illegal_argument, parsing_error
from simulators.logserver.query import Match, MatchAll, Query, parse_query
from simulators.logserver.search import (
    SHARDS,
    SearchEngine,
    empty_search_response,
    filter_source,
    parse_search,
    parse_source_filter,
    search_response,
)
from simulators.logserver.storage import IndexMeta, Storage, WriteOp

VERSION = {
    "number": "9.1.0",
    "build_flavor": "default",
    "build_type": "docker",
    "build_hash": "0000000000000000000000000000000000000000",
    "build_date": "2025-07-24T00:00:00.000000000Z",
    "build_snapshot": False,
    "lucene_version": "10.2.2",
    "minimum_wire_compatibility_version": "8.19.0",
    "minimum_index_compatibility_version": "8.0.0",
}
Reply = tuple[int, Any]
_BULK_ACTIONS = ("index", "create", "delete", "update")


def error_from_cause(status: int, cause: dict[str, Any]) -> EsError:
    """A bulk-item error (``{"type", "reason", ...}``) raised again as the error of a single-document API."""
    extra = {k: v for k, v in cause.items() if k not in ("type", "reason", "caused_by")}
    return EsError(status, cause["type"], cause["reason"], caused_by=cause.get("caused_by"), **extra)


def parse_body(raw: bytes) -> Any:
    """A JSON request body, or None when empty; ES's ``x_content_parse_exception`` when it is not JSON."""
    if not raw or not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EsError(400, "x_content_parse_exception", f"[1:1] Unexpected character: {exc}") from None


def _object_body(raw: bytes) -> dict[str, Any] | None:
    body = parse_body(raw)
    if body is not None and not isinstance(body, dict):
        raise parsing_error("request body must be a JSON object")
    return body


def _q_query(q: str | None) -> Query | None:
    """The ``q`` URL parameter, in its two simplest forms: ``*`` and ``field:value``."""
    if q is None:
        return None
    text = q.strip()
    if text in ("*", "*:*", ""):
        return MatchAll()
    name, sep, value = text.partition(":")
    if not sep or not name or any(c in text for c in " ()"):
        raise illegal_argument("the local log server supports only [q=*] and [q=field:value]")
    return Match(name, value.strip('"'))


def _totals(params: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """``rest_total_hits_as_int=true``: ``hits.total`` as a plain number (older clients and scripts)."""
    total = body["hits"].get("total")
    if params.get("rest_total_hits_as_int") in ("true", "") and isinstance(total, dict):
        body["hits"]["total"] = total["value"]
    return body


class LogService:
    """Every API the log server answers, over one storage and one context registry."""

    def __init__(
        self, storage: Storage, cluster_name: str, node_name: str, auto_create: bool, max_scrolls: int
    ) -> None:
        self.storage = storage
        self.engine = SearchEngine(storage)
        self.contexts = Contexts(storage, max_scrolls)
        self.cluster_name = cluster_name
        self.node_name = node_name
        self.auto_create = auto_create
        self.cluster_uuid = "flywheel-local-simulated"

    # ---------------------------------------------------------------------------------------- cluster

    def root(self) -> Reply:
        """``GET /``: identifies as Elasticsearch (the clients' product check) and says it is simulated."""
        return 200, {
            "name": self.node_name,
            "cluster_name": self.cluster_name,
            "cluster_uuid": self.cluster_uuid,
            "version": dict(VERSION),
            "tagline": "You Know, for Search",
            "simulated": True,
        }

    def health(self, index: str | None) -> Reply:
        """``GET /_cluster/health``: always green (one node, no replicas to place)."""
        if index:
            self.storage.resolve(index)
        count = len(self.storage.indices())
        return 200, {
            "cluster_name": self.cluster_name,
            "status": "green",
            "timed_out": False,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
            "active_primary_shards": count,
            "active_shards": count,
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": 0,
            "unassigned_primary_shards": 0,
            "delayed_unassigned_shards": 0,
            "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0,
            "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0,
        }

    # ---------------------------------------------------------------------------------------- indices

    def create_index(self, index: str, raw: bytes) -> Reply:
        """``PUT /{index}`` with ``mappings`` and ``settings``."""
        body = _object_body(raw) or {}
        unknown = set(body) - {"mappings", "settings", "aliases"}
        if unknown:
            raise parsing_error(f"unknown key [{sorted(unknown)[0]}] for create index")
        if body.get("aliases"):
            raise illegal_argument("aliases are not supported by the local log server")
        meta = self.storage.create_index(index, body.get("mappings"), body.get("settings"))
        return 200, {"acknowledged": True, "shards_acknowledged": True, "index": meta.name}

    def index_exists(self, index: str) -> Reply:
        """``HEAD /{index}``."""
        try:
            found = bool(self.storage.resolve(index))
        except EsError:
            found = False
        return (200 if found else 404), None

    def get_index(self, index: str) -> Reply:
        """``GET /{index}``."""
        return 200, {
            meta.name: {"aliases": {}, "mappings": meta.mappings, "settings": self.storage.settings_body(meta)}
            for meta in self.storage.resolve(index)
        }

    def delete_index(self, index: str) -> Reply:
        """``DELETE /{index}`` (concrete names, comma separated)."""
        if "*" in index or index == "_all":
            raise illegal_argument("Wildcard expressions or all indices are not allowed")
        for meta in self.storage.resolve(index):
            self.contexts.drop_index(meta.id)
            self.storage.delete_index(meta.name)
        return 200, {"acknowledged": True}

    def get_mapping(self, index: str | None) -> Reply:
        """``GET /{index}/_mapping`` and ``GET /_mapping``."""
        return 200, {meta.name: {"mappings": meta.mappings} for meta in self.storage.resolve(index or "_all")}

    def put_mapping(self, index: str, raw: bytes) -> Reply:
        """``PUT /{index}/_mapping``."""
        body = _object_body(raw) or {}
        for meta in self.storage.resolve(index):
            self.storage.put_mapping(meta.name, body)
        return 200, {"acknowledged": True}

    def get_settings(self, index: str | None) -> Reply:
        """``GET /{index}/_settings``."""
        return 200, {
            meta.name: {"settings": self.storage.settings_body(meta)} for meta in self.storage.resolve(index or "_all")
        }

    def refresh(self, index: str | None) -> Reply:
        """``POST /_refresh``: writes are visible at once here, so this only checks the indices exist."""
        count = len(self.storage.resolve(index or "_all"))
        return 200, {"_shards": {"total": count, "successful": count, "failed": 0}}

    def cat_indices(self, index: str | None, params: dict[str, str]) -> Reply:
        """``GET /_cat/indices`` (JSON with ``format=json``, else a text table)."""
        rows = []
        for meta in self.storage.resolve(index or "_all"):
            rows.append(
                {
                    "health": "green",
                    "status": "open",
                    "index": meta.name,
                    "uuid": meta.uuid,
                    "pri": "1",
                    "rep": "0",
                    "docs.count": str(self.storage.doc_count(meta)),
                    "docs.deleted": "0",
                }
            )
        if params.get("format") == "json":
            return 200, rows
        text = "".join(" ".join(r.values()) + "\n" for r in rows)
        return 200, text

    # -------------------------------------------------------------------------------------- documents

    def _single_write(self, op: WriteOp) -> Reply:
        status, item = self.storage.write([op], self.auto_create)[0]
        if "error" in item:
            raise error_from_cause(status, item["error"])
        return status, item

    def index_doc(self, index: str, doc_id: str | None, raw: bytes, params: dict[str, str], create: bool) -> Reply:
        """``POST /{index}/_doc``, ``PUT /{index}/_doc/{id}``, ``PUT /{index}/_create/{id}``."""
        try:
            source = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError as exc:
            raise EsError(400, "document_parsing_exception", f"failed to parse: {exc}") from None
        if not isinstance(source, dict):
            raise EsError(400, "document_parsing_exception", "failed to parse, document is empty")
        action = "create" if create or params.get("op_type") == "create" else "index"
        op = WriteOp(action, index, doc_id, source, raw.decode())
        op.if_seq_no = int(params["if_seq_no"]) if "if_seq_no" in params else None
        op.if_primary_term = int(params["if_primary_term"]) if "if_primary_term" in params else None
        return self._single_write(op)

    def update_doc(self, index: str, doc_id: str, raw: bytes) -> Reply:
        """``POST /{index}/_update/{id}`` with a partial ``doc`` (scripts are not supported)."""
        body = _object_body(raw) or {}
        if "script" in body:
            raise illegal_argument("scripts are not supported by the local log server")
        op = WriteOp("update", index, doc_id, body.get("doc"), upsert=body.get("upsert"))
        op.doc_as_upsert = bool(body.get("doc_as_upsert", False))
        status, item = self._single_write(op)
        return status, item

    def delete_doc(self, index: str, doc_id: str, params: dict[str, str]) -> Reply:
        """``DELETE /{index}/_doc/{id}``: 404 with ``result: not_found`` when absent, as ES."""
        self.storage.get_index(index)
        op = WriteOp("delete", index, doc_id)
        op.if_seq_no = int(params["if_seq_no"]) if "if_seq_no" in params else None
        op.if_primary_term = int(params["if_primary_term"]) if "if_primary_term" in params else None
        return self._single_write(op)

    def get_doc(self, index: str, doc_id: str, params: dict[str, str], source_only: bool = False) -> Reply:
        """``GET /{index}/_doc/{id}`` (and ``_source/{id}``) with ``_source`` filtering."""
        doc = self.storage.get_doc(index, doc_id)
        if doc is None:
            if source_only:
                raise EsError(404, "resource_not_found_exception", f"Document not found [{index}]/[{doc_id}]")
            return 404, {"_index": index, "_id": doc_id, "found": False}
        filt = parse_source_filter(
            params.get("_source"), params.get("_source_includes"), params.get("_source_excludes")
        )
        source: Any = orjson.Fragment(doc.source)
        if not filt.raw and filt.enabled:
            source = filter_source(orjson.loads(doc.source), filt)
        if source_only:
            return 200, source
        body: dict[str, Any] = {
            "_index": doc.index,
            "_id": doc.doc_id,
            "_version": doc.version,
            "_seq_no": doc.seq,
            "_primary_term": 1,
            "found": True,
        }
        if filt.enabled:
            body["_source"] = source
        return 200, body

    # ------------------------------------------------------------------------------------------- bulk

    def bulk(self, default_index: str | None, raw: bytes) -> Reply:
        """``POST /_bulk``: NDJSON actions applied in one transaction, per-item results and ``errors``."""
        started = time.monotonic()
        ops, names = self._parse_bulk(default_index, raw)
        results = self.storage.write(ops, self.auto_create)
        items = []
        errors = False
        for name, (status, item) in zip(names, results, strict=True):
            errors = errors or "error" in item
            items.append({name: {**item, "status": status}})
        return 200, {"errors": errors, "took": int((time.monotonic() - started) * 1000), "items": items}

    def _parse_bulk(self, default_index: str | None, raw: bytes) -> tuple[list[WriteOp], list[str]]:
        if raw and not raw.endswith(b"\n"):
            raise illegal_argument("The bulk request must be terminated by a newline [\\n]")
        lines = raw.split(b"\n")
        ops: list[WriteOp] = []
        names: list[str] = []
        position = 0
        while position < len(lines):
            line = lines[position].strip()
            position += 1
            if not line:
                continue
            name, meta = self._bulk_action(line, position)
            index = meta.get("_index") or default_index
            doc_id = meta.get("_id")
            doc_id = None if doc_id is None else str(doc_id)
            if not index:
                raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;")
            op = WriteOp(name, str(index), doc_id)
            op.if_seq_no = meta.get("if_seq_no")
            op.if_primary_term = meta.get("if_primary_term")
            if name in ("delete", "update") and doc_id is None:
                raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: id is missing;")
            if name != "delete":
                if position >= len(lines) or not lines[position].strip():
                    raise illegal_argument(f"The bulk request must be terminated by a newline [\\n] (line {position})")
                self._bulk_source(op, lines[position])
                position += 1
            ops.append(op)
            names.append(name)
        if not ops:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;")
        return ops, names

    def _bulk_action(self, line: bytes, position: int) -> tuple[str, dict[str, Any]]:
        try:
            action = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise illegal_argument(
                f"Malformed action/metadata line [{position}], expected START_OBJECT or END_OBJECT but found "
                "[VALUE_STRING]"
            ) from None
        if not isinstance(action, dict) or len(action) != 1:
            raise illegal_argument(f"Malformed action/metadata line [{position}], expected a single action")
        name, meta = next(iter(action.items()))
        if name not in _BULK_ACTIONS:
            raise illegal_argument(
                f"Malformed action/metadata line [{position}], expected field [create], [delete], [index] or "
                f"[update] but found [{name}]"
            )
        if not isinstance(meta, dict):
            raise illegal_argument(f"Malformed action/metadata line [{position}], expected START_OBJECT")
        return name, meta

    def _bulk_source(self, op: WriteOp, line: bytes) -> None:
        try:
            source = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            op.error = EsError(400, "document_parsing_exception", f"failed to parse: {exc}")
            return
        if not isinstance(source, dict):
            op.error = EsError(400, "document_parsing_exception", "failed to parse, document is empty")
            return
        if op.action != "update":
            op.source, op.raw = source, line.decode()
            return
        if "script" in source:
            op.error = illegal_argument("scripts are not supported by the local log server")
            return
        op.source, op.upsert = source.get("doc"), source.get("upsert")
        op.doc_as_upsert = bool(source.get("doc_as_upsert", False))

    # ----------------------------------------------------------------------------------------- search

    def count(self, index: str | None, raw: bytes, params: dict[str, str]) -> Reply:
        """``GET|POST /{index}/_count``."""
        body = _object_body(raw) or {}
        unknown = set(body) - {"query"}
        if unknown:
            raise parsing_error(f"request does not support [{sorted(unknown)[0]}]")
        query = _q_query(params.get("q")) or parse_query(body.get("query"))
        metas = self.storage.resolve(index or "_all")
        total = sum(self.engine.count(meta, query) for meta in metas)
        shards = {"total": len(metas), "successful": len(metas), "skipped": 0, "failed": 0}
        return 200, {"count": total, "_shards": shards}

    def _one_index(self, index: str | None) -> IndexMeta | None:
        metas = self.storage.resolve(index or "_all")
        if len(metas) > 1:
            names = ", ".join(m.name for m in metas)
            raise illegal_argument(f"the local log server searches one index at a time; [{index}] matches [{names}]")
        return metas[0] if metas else None

    def search(self, index: str | None, raw: bytes, params: dict[str, str]) -> Reply:
        """``GET|POST /{index}/_search`` and ``/_search`` (with ``pit``), optionally opening a scroll."""
        started = time.monotonic()
        req = parse_search(_object_body(raw), params)
        q = _q_query(params.get("q"))
        if q is not None:
            req.query = q
        scroll = params.get("scroll")
        if req.slice is not None and req.pit_id is None and not scroll:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: [slice] can only be used with [scroll] or [point-in-time] requests;",
            )
        if req.pit_id is not None:
            if index:
                raise EsError(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: [indices] cannot be used with point in time. Do not specify any index "
                    "with point in time.;",
                )
            if scroll:
                raise EsError(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: using [point in time] is not allowed in a scroll context;",
                )
            pit = self.contexts.pit(req.pit_id, req.pit_keep_alive)
            meta = self.storage.find_index(pit.index)
            if meta is None or meta.id != pit.index_id:
                raise EsError(404, "search_context_missing_exception", f"No search context found for id [{pit.id}]")
            result = self.engine.search(meta, req, pit.snapshot, pit=True)
            return 200, _totals(params, {"pit_id": pit.id, **search_response(meta, req, result, started)})
        meta = self._one_index(index)
        if meta is None:
            return 200, _totals(params, empty_search_response(req))
        if not scroll:
            return 200, _totals(params, search_response(meta, req, self.engine.search(meta, req), started))
        if req.search_after is not None:
            raise EsError(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: using [search_after] is not allowed in a scroll context;",
            )
        snapshot = self.storage.open_snapshot(meta)
        try:
            result = self.engine.search(meta, req, snapshot)
            cursor = result.hits[-1].internal_key if result.hits else None
            ctx = self.contexts.open_scroll(meta, req, snapshot, scroll, (result.total, result.total_relation), cursor)
        except BaseException:
            self.storage.release_snapshot(meta.id, snapshot)
            raise
        return 200, _totals(params, {"_scroll_id": ctx.id, **search_response(meta, req, result, started)})

    def scroll(self, raw: bytes, params: dict[str, str], path_id: str | None) -> Reply:
        """``POST /_search/scroll``: the next page after the last one served."""
        started = time.monotonic()
        body = _object_body(raw) or {}
        scroll_id = path_id or params.get("scroll_id") or body.get("scroll_id")
        if not isinstance(scroll_id, str) or not scroll_id:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: scrollId is missing;")
        ctx = self.contexts.scroll(scroll_id, params.get("scroll") or body.get("scroll"))
        meta = self.storage.find_index(ctx.index)
        if meta is None or meta.id != ctx.index_id:
            raise EsError(404, "search_context_missing_exception", f"No search context found for id [{scroll_id}]")
        req = ctx.request if ctx.cursor is None else replace(ctx.request, from_=0)
        result = self.engine.search(meta, req, ctx.snapshot, cursor=ctx.cursor, total_known=ctx.total)
        if result.hits:
            ctx.cursor = result.hits[-1].internal_key
        return 200, _totals(params, {"_scroll_id": ctx.id, **search_response(meta, req, result, started)})

    def clear_scroll(self, raw: bytes, params: dict[str, str], path_id: str | None) -> Reply:
        """``DELETE /_search/scroll``: 404 with ``num_freed: 0`` when none was open, as ES."""
        body = _object_body(raw) or {}
        value: Any = path_id or params.get("scroll_id") or body.get("scroll_id")
        ids = value if isinstance(value, list) else [v for v in str(value or "").split(",") if v]
        freed = self.contexts.close_scrolls(None if "_all" in ids else [str(i) for i in ids])
        return (200 if freed else 404), {"succeeded": True, "num_freed": freed}

    def open_pit(self, index: str, params: dict[str, str]) -> Reply:
        """``POST /{index}/_pit?keep_alive=2m``."""
        keep_alive = params.get("keep_alive")
        if not keep_alive:
            raise EsError(
                400, "action_request_validation_exception", "Validation Failed: 1: [keep_alive] is not specified;"
            )
        meta = self._one_index(index)
        if meta is None:
            raise illegal_argument(f"[{index}] matches no index")
        ctx = self.contexts.open_pit(meta, keep_alive)
        return 200, {"id": ctx.id, "_shards": dict(SHARDS)}

    def create_pit(self, index: str, params: dict[str, str]) -> Reply:
        """OpenSearch's ``POST /{index}/_search/point_in_time?keep_alive=1h``: the same point in time, its id
        named ``pit_id``, with its creation time in epoch milliseconds."""
        if not params.get("keep_alive"):
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: keep alive not specified;")
        status, body = self.open_pit(index, params)
        return status, {"pit_id": body["id"], "_shards": body["_shards"], "creation_time": int(time.time() * 1000)}

    def delete_pits(self, raw: bytes) -> Reply:
        """OpenSearch's ``DELETE /_search/point_in_time`` with ``{"pit_id": [...]}`` (or one id): each freed or not."""
        body = _object_body(raw) or {}
        ids = body.get("pit_id")
        ids = [ids] if isinstance(ids, str) else ids
        if not isinstance(ids, list) or not ids or not all(isinstance(pit_id, str) for pit_id in ids):
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no pit ids specified;")
        return 200, {"pits": [{"successful": self.contexts.close_pit(pit_id) == 1, "pit_id": pit_id} for pit_id in ids]}

    def close_pit(self, raw: bytes) -> Reply:
        """``DELETE /_pit`` with ``{"id": ...}``."""
        body = _object_body(raw) or {}
        pit_id = body.get("id")
        if not isinstance(pit_id, str):
            raise EsError(400, "action_request_validation_exception", "Validation Failed: 1: no pit ids specified;")
        freed = self.contexts.close_pit(pit_id)
        return (200 if freed else 404), {"succeeded": True, "num_freed": freed}

    def delete_by_query(self, index: str, raw: bytes) -> Reply:
        """``POST /{index}/_delete_by_query``: the matching documents deleted in batches."""
        started = time.monotonic()
        body = _object_body(raw) or {}
        query = parse_query(body.get("query"))
        deleted = batches = 0
        for meta in self.storage.resolve(index):
            while True:
                req = parse_search({"query": {"match_all": {}}}, {})
                req.query, req.size, req.sort, req.track_total_hits = query, 1000, None, False
                hits = self.engine.search(meta, req).hits
                if not hits:
                    break
                batches += 1
                results = self.storage.write([WriteOp("delete", meta.name, h.doc_id) for h in hits], False)
                deleted += sum(1 for status, _ in results if status == 200)
        return 200, {
            "took": int((time.monotonic() - started) * 1000),
            "timed_out": False,
            "total": deleted,
            "deleted": deleted,
            "batches": batches,
            "version_conflicts": 0,
            "noops": 0,
            "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0,
            "requests_per_second": -1.0,
            "throttled_until_millis": 0,
            "failures": [],
        }
