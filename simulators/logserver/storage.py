"""SQLite persistence of indices and documents, built to hold a million 2–8 KB log records.

Per index there are three tables: ``d<id>`` (one small row per live document: ``seq``, ``_id``, ``_version``
and one column per mapped keyword/date/numeric/boolean field, each with its own index plus composite
keyword×date indexes for the explicitly mapped fields), ``s<id>`` (the ``_source`` text by ``seq``) and
``h<id>`` (old versions kept only while a point in time or scroll may still see them).

``seq`` is one monotonically increasing sequence for every write; it is the rowid, ``_seq_no``, the
``_doc``/``_shard_doc`` order, the tiebreak of every sort and the snapshot of a point in time: a snapshot
``S`` sees live rows with ``seq <= S`` plus history rows with ``seq <= S < deleted_at``.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
import sqlite3
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from simulators.logserver.errors import EsError, index_not_found
from simulators.logserver.mapping import (
    COLUMN_KINDS,
    DATE,
    KEYWORD,
    DocumentParser,
    Mapping,
    merge_mappings,
    validate_mappings,
)
from simulators.logserver.sqlquery import Column

logger = logging.getLogger(__name__)

MAX_COLUMNS = 200
_SQL_TYPES = {KEYWORD: "TEXT", DATE: "INTEGER", "long": "INTEGER", "double": "REAL", "boolean": "INTEGER"}
_INVALID_INDEX_CHARS = set('\\/*?"<>| ,#:')
SHARDS = {"total": 2, "successful": 1, "failed": 0}


@dataclass
class IndexMeta:
    """An index: its name, settings, live mappings and the columns that hold its indexed fields."""

    id: int
    name: str
    uuid: str
    created_ms: int
    settings: dict[str, Any]
    mappings: dict[str, Any]
    columns: dict[str, Column]
    explicit: set[str] = field(default_factory=set)
    mapping: Mapping = field(init=False)
    sql_indexes: dict[str, tuple[str, ...]] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.mapping = Mapping(self.mappings)

    @property
    def docs(self) -> str:
        """Table of live rows (seq, _id, version, field columns)."""
        return f"d{self.id}"

    @property
    def sources(self) -> str:
        """Table of ``_source`` texts by seq."""
        return f"s{self.id}"

    @property
    def history(self) -> str:
        """Table of replaced/deleted rows kept for open snapshots."""
        return f"h{self.id}"

    def column_names(self) -> list[str]:
        """The SQL columns of the field values, in creation order."""
        return [col.name for col in self.columns.values()]


@dataclass
class WriteOp:
    """One write of a bulk request (or of a single-document API)."""

    action: str
    index: str
    doc_id: str | None = None
    source: Any = None
    raw: str | None = None
    if_seq_no: int | None = None
    if_primary_term: int | None = None
    upsert: Any = None
    doc_as_upsert: bool = False
    error: EsError | None = None


@dataclass
class StoredDoc:
    """A document as ``GET /{index}/_doc/{id}`` returns it."""

    index: str
    doc_id: str
    seq: int
    version: int
    source: str


def validate_index_name(name: str) -> None:
    """ES's index-name rules; ``invalid_index_name_exception`` otherwise."""
    reason = None
    if not name or name in (".", ".."):
        reason = "must not be '.' or '..'" if name else "must not be empty"
    elif name != name.lower():
        reason = "must be lowercase"
    elif name[0] in "_-+":
        reason = "must not start with '_', '-', or '+'"
    elif set(name) & _INVALID_INDEX_CHARS:
        reason = 'must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?, #, :]'
    elif len(name.encode()) > 255:
        reason = "index name is too long, (" + str(len(name.encode())) + " > 255)"
    if reason:
        raise EsError(
            400, "invalid_index_name_exception", f"Invalid index name [{name}], {reason}", index=name, index_uuid="_na_"
        )


class _IdGenerator:
    """Time-ordered 20-character ids (like ES's), so the ``_id`` index is appended to, not scattered."""

    def __init__(self) -> None:
        self._counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
        self._node = os.urandom(6)

    def __call__(self) -> str:
        micros = time.time_ns() // 1000
        raw = struct.pack(">Q", micros)[2:] + (next(self._counter) & 0xFFFFFF).to_bytes(3, "big") + self._node
        return base64.urlsafe_b64encode(raw).decode()


def _flatten_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flatten_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _nest_settings(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


class Storage:
    """The SQLite database of the log server; every public method is thread-safe (one lock, short holds)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA page_size = 8192")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA cache_size = -65536")
        self.conn.execute("PRAGMA busy_timeout = 5000")
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS indices (
                id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, uuid TEXT NOT NULL, created_ms INTEGER NOT NULL,
                settings TEXT NOT NULL, mappings TEXT NOT NULL, columns TEXT NOT NULL, explicit TEXT NOT NULL
            );
            """
        )
        self._ids = _IdGenerator()
        self._snapshots: dict[int, Counter[int]] = {}
        self._indices: dict[str, IndexMeta] = {}
        self._load_indices()
        for meta in self._indices.values():
            self.conn.execute(f"DELETE FROM {meta.history}")
        stored = self.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        self._seq = int(stored[0]) if stored else 0
        for meta in self._indices.values():
            top = self.conn.execute(f"SELECT max(seq) FROM {meta.docs}").fetchone()[0]
            self._seq = max(self._seq, top or 0)

    def _load_indices(self) -> None:
        """(Re)read every index's metadata from the database."""
        self._indices = {}
        for row in self.conn.execute(
            "SELECT id, name, uuid, created_ms, settings, mappings, columns, explicit FROM indices"
        ):
            columns = {path: Column(**spec) for path, spec in orjson.loads(row[6]).items()}
            meta = IndexMeta(
                row[0],
                row[1],
                row[2],
                row[3],
                orjson.loads(row[4]),
                orjson.loads(row[5]),
                columns,
                set(orjson.loads(row[7])),
            )
            self._indices[meta.name] = meta

    def close(self) -> None:
        """Close the database (the app's shutdown hook)."""
        with self.lock:
            self.conn.close()

    # ----------------------------------------------------------------------------------------- indices

    def indices(self) -> list[IndexMeta]:
        """Every index, by name."""
        with self.lock:
            return [self._indices[name] for name in sorted(self._indices)]

    def get_index(self, name: str) -> IndexMeta:
        """An index, or ES's ``index_not_found_exception``."""
        with self.lock:
            meta = self._indices.get(name)
            if meta is None:
                raise index_not_found(name)
            return meta

    def find_index(self, name: str) -> IndexMeta | None:
        """An index or None."""
        with self.lock:
            return self._indices.get(name)

    def resolve(self, expression: str) -> list[IndexMeta]:
        """Comma lists, ``*`` wildcards and ``_all`` → existing indices; a missing concrete name is a 404."""
        with self.lock:
            found: dict[str, IndexMeta] = {}
            for part in [p.strip() for p in expression.split(",") if p.strip()]:
                if part in ("_all", "*"):
                    found.update(self._indices)
                elif "*" in part or "?" in part:
                    regex = re.compile("^" + re.escape(part).replace(r"\*", ".*").replace(r"\?", ".") + "$")
                    found.update({n: m for n, m in self._indices.items() if regex.match(n)})
                elif part in self._indices:
                    found[part] = self._indices[part]
                else:
                    raise index_not_found(part)
            return [found[name] for name in sorted(found)]

    def create_index(self, name: str, mappings: Any = None, settings: Any = None) -> IndexMeta:
        """``PUT /{index}``: a new index with its mapping; 400 ``resource_already_exists_exception`` if it exists."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                meta = self._create_index(name, mappings, settings)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._load_indices()
                raise
            return meta

    def _create_index(self, name: str, mappings: Any, settings: Any) -> IndexMeta:
        validate_index_name(name)
        existing = self._indices.get(name)
        if existing is not None:
            raise EsError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/{existing.uuid}] already exists",
                index=name,
                index_uuid=existing.uuid,
            )
        if settings is not None and not isinstance(settings, dict):
            raise EsError(400, "settings_exception", "Failed to load settings: settings must be an object")
        checked = validate_mappings(mappings)
        flat = _flatten_settings(settings or {})
        flat = {key if key.startswith("index.") else f"index.{key}": value for key, value in flat.items()}
        created_ms = int(time.time() * 1000)
        index_uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        flat = {
            "index.number_of_shards": "1",
            "index.number_of_replicas": "1",
            **flat,
            "index.uuid": index_uuid,
            "index.creation_date": str(created_ms),
            "index.provided_name": name,
        }
        cursor = self.conn.execute(
            "INSERT INTO indices (name, uuid, created_ms, settings, mappings, columns, explicit) "
            "VALUES (?, ?, ?, ?, ?, '{}', '[]')",
            (name, index_uuid, created_ms, orjson.dumps(flat).decode(), orjson.dumps(checked).decode()),
        )
        index_id = int(cursor.lastrowid or 0)
        meta = IndexMeta(index_id, name, index_uuid, created_ms, flat, checked, {})
        meta.explicit = {path for path, fld in meta.mapping.fields.items() if fld.kind in (KEYWORD, DATE)}
        self.conn.execute(f"CREATE TABLE {meta.docs} (seq INTEGER PRIMARY KEY, _id TEXT NOT NULL, version INTEGER)")
        self.conn.execute(f"CREATE UNIQUE INDEX {meta.docs}__id ON {meta.docs} (_id)")
        self.conn.execute(f"CREATE TABLE {meta.sources} (seq INTEGER PRIMARY KEY, source TEXT NOT NULL)")
        self.conn.execute(
            f"CREATE TABLE {meta.history} (seq INTEGER PRIMARY KEY, _id TEXT NOT NULL, version INTEGER, "
            "deleted_at INTEGER NOT NULL, source TEXT NOT NULL)"
        )
        self._indices[name] = meta
        self._sync_columns(meta)
        self._composite_indexes(meta)
        return meta

    def sql_indexes(self, meta: IndexMeta) -> dict[str, tuple[str, ...]]:
        """The SQLite indexes of an index's document table and their columns (for planner hints)."""
        with self.lock:
            if meta.sql_indexes is None:
                found: dict[str, tuple[str, ...]] = {}
                for row in self.conn.execute(f"PRAGMA index_list({meta.docs})").fetchall():
                    info = self.conn.execute(f"PRAGMA index_info({row[1]})").fetchall()
                    found[row[1]] = tuple(str(col[2]) for col in sorted(info))
                meta.sql_indexes = found
            return meta.sql_indexes

    def _composite_indexes(self, meta: IndexMeta) -> None:
        """Keyword×date indexes for the explicitly mapped fields: term filters + date range + date sort."""
        meta.sql_indexes = None
        keywords = [c.name for p, c in meta.columns.items() if p in meta.explicit and c.kind == KEYWORD][:4]
        dates = [c.name for p, c in meta.columns.items() if p in meta.explicit and c.kind == DATE][:2]
        combos: list[tuple[str, ...]] = [(k, d) for d in dates for k in keywords]
        combos += [(a, b, d) for d in dates for a, b in itertools.combinations(keywords[:3], 2)]
        for cols in combos:
            self.conn.execute(
                f"CREATE INDEX IF NOT EXISTS {meta.docs}_{'_'.join(cols)} ON {meta.docs} ({', '.join(cols)})"
            )

    def _sync_columns(self, meta: IndexMeta) -> None:
        """Give every new column-worthy field a column and an index, then persist the mapping."""
        meta.sql_indexes = None
        meta.mapping = Mapping(meta.mappings)
        number = max((int(c.name[1:]) for c in meta.columns.values()), default=0)
        for path, fld in meta.mapping.fields.items():
            if fld.kind not in COLUMN_KINDS or path in meta.columns or len(meta.columns) >= MAX_COLUMNS:
                continue
            number += 1
            col = Column(f"c{number}", fld.kind)
            sql_type = _SQL_TYPES[fld.kind]
            self.conn.execute(f"ALTER TABLE {meta.docs} ADD COLUMN {col.name} {sql_type}")
            self.conn.execute(f"ALTER TABLE {meta.history} ADD COLUMN {col.name} {sql_type}")
            self.conn.execute(f"CREATE INDEX {meta.docs}_{col.name} ON {meta.docs} ({col.name})")
            meta.columns[path] = col
        self._persist_meta(meta)

    def _persist_meta(self, meta: IndexMeta) -> None:
        columns = {path: {"name": c.name, "kind": c.kind, "multi": c.multi} for path, c in meta.columns.items()}
        self.conn.execute(
            "UPDATE indices SET mappings = ?, columns = ?, explicit = ?, settings = ? WHERE id = ?",
            (
                orjson.dumps(meta.mappings).decode(),
                orjson.dumps(columns).decode(),
                orjson.dumps(sorted(meta.explicit)).decode(),
                orjson.dumps(meta.settings).decode(),
                meta.id,
            ),
        )

    def delete_index(self, name: str) -> None:
        """``DELETE /{index}``: tables dropped, snapshots on it forgotten."""
        with self.lock:
            meta = self.get_index(name)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for table in (meta.docs, meta.sources, meta.history):
                    self.conn.execute(f"DROP TABLE IF EXISTS {table}")
                self.conn.execute("DELETE FROM indices WHERE id = ?", (meta.id,))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self._indices.pop(name, None)
            self._snapshots.pop(meta.id, None)

    def put_mapping(self, name: str, update: Any) -> None:
        """``PUT /{index}/_mapping``: fields added (types cannot change)."""
        with self.lock:
            meta = self.get_index(name)
            checked = validate_mappings(update)
            merged = merge_mappings(meta.mappings, checked)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                meta.mappings = merged
                self._sync_columns(meta)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._load_indices()
                raise

    def settings_body(self, meta: IndexMeta) -> dict[str, Any]:
        """Settings as ``GET /{index}/_settings`` nests them."""
        return _nest_settings(meta.settings)

    def doc_count(self, meta: IndexMeta) -> int:
        """Live documents in an index."""
        with self.lock:
            return int(self.conn.execute(f"SELECT count(*) FROM {meta.docs}").fetchone()[0])

    # ------------------------------------------------------------------------------------------ writes

    def write(self, ops: list[WriteOp], auto_create: bool = True) -> list[tuple[int, dict[str, Any]]]:
        """Apply writes in one transaction; each gets ES's per-item ``(status, body)``, errors included."""
        results: list[tuple[int, dict[str, Any]]] = []
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    try:
                        if op.error is not None:
                            raise op.error
                        results.append(self._apply(op, auto_create))
                    except EsError as exc:
                        item: dict[str, Any] = {"_index": op.index, "status": exc.status, "error": exc.cause()}
                        if op.doc_id is not None:
                            item = {"_index": op.index, "_id": op.doc_id, "status": exc.status, "error": exc.cause()}
                        results.append((exc.status, item))
                self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (str(self._seq),))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                self._reload_after_rollback()
                raise
        return results

    def _reload_after_rollback(self) -> None:
        stored = self.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        self._seq = max(self._seq, int(stored[0]) if stored else 0)
        self._load_indices()

    def _meta_for_write(self, name: str, auto_create: bool) -> IndexMeta:
        meta = self._indices.get(name)
        if meta is not None:
            return meta
        if not auto_create:
            raise index_not_found(name)
        return self._create_index(name, None, None)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _apply(self, op: WriteOp, auto_create: bool) -> tuple[int, dict[str, Any]]:
        if op.action == "delete":
            return self._delete(op)
        meta = self._meta_for_write(op.index, auto_create)
        existing = None
        if op.doc_id is not None:
            existing = self.conn.execute(f"SELECT seq, version FROM {meta.docs} WHERE _id = ?", (op.doc_id,)).fetchone()
        source, raw = op.source, op.raw
        if op.action == "update":
            source, raw, noop = self._merge_update(meta, op, existing)
            if noop and existing is not None:
                return 200, self._item(meta, op.doc_id or "", existing[1], existing[0], "noop")
        if op.action == "create" and existing is not None:
            raise EsError(
                409,
                "version_conflict_engine_exception",
                f"[{op.doc_id}]: version conflict, document already exists (current version [{existing[1]}])",
                index_uuid=meta.uuid,
                shard="0",
                index=meta.name,
            )
        self._check_concurrency(meta, op, existing)
        doc_id = op.doc_id if op.doc_id is not None else self._ids()
        parser = DocumentParser(meta.mappings, doc_id, meta.mapping)
        parsed = parser.parse(source)
        if parsed.mapping_changed:
            self._sync_columns(meta)
        seq = self._next_seq()
        version = 1
        if existing is not None:
            self._retire(meta, existing[0], seq)
            version = existing[1] + 1
        names, values = ["seq", "_id", "version"], [seq, doc_id, version]
        multi_changed = False
        for path, found in parsed.values.items():
            col = meta.columns.get(path)
            if col is None or not found:
                continue
            distinct = set(found)
            if len(distinct) > 1 and not col.multi:
                meta.columns[path] = col = Column(col.name, col.kind, True)
                multi_changed = True
            names.append(col.name)
            values.append(min(distinct))
        if multi_changed:
            self._persist_meta(meta)
        marks = ", ".join("?" for _ in names)
        self.conn.execute(f"INSERT INTO {meta.docs} ({', '.join(names)}) VALUES ({marks})", values)
        text = raw if raw is not None else orjson.dumps(source).decode()
        self.conn.execute(f"INSERT INTO {meta.sources} (seq, source) VALUES (?, ?)", (seq, text))
        result = "updated" if existing is not None else "created"
        return (200 if existing is not None else 201), self._item(meta, doc_id, version, seq, result)

    def _merge_update(self, meta: IndexMeta, op: WriteOp, existing: Any) -> tuple[Any, str | None, bool]:
        if existing is None:
            if op.doc_as_upsert and op.source is not None:
                return op.source, None, False
            if op.upsert is not None:
                return op.upsert, None, False
            raise EsError(
                404,
                "document_missing_exception",
                f"[{op.doc_id}]: document missing",
                index_uuid=meta.uuid,
                shard="0",
                index=meta.name,
            )
        row = self.conn.execute(f"SELECT source FROM {meta.sources} WHERE seq = ?", (existing[0],)).fetchone()
        current = orjson.loads(row[0])
        merged = _deep_merge(current, op.source or {})
        return merged, None, merged == current

    def _check_concurrency(self, meta: IndexMeta, op: WriteOp, existing: Any) -> None:
        if op.if_seq_no is None and op.if_primary_term is None:
            return
        current_seq = existing[0] if existing is not None else None
        if current_seq != op.if_seq_no or (op.if_primary_term not in (None, 1)):
            state = (
                f"current document has seqNo [{current_seq}] and primary term [1]"
                if existing is not None
                else "document does not exist"
            )
            raise EsError(
                409,
                "version_conflict_engine_exception",
                f"[{op.doc_id}]: version conflict, required seqNo [{op.if_seq_no}], primary term "
                f"[{op.if_primary_term}]. but no document was found"
                if existing is None
                else f"[{op.doc_id}]: version conflict, required seqNo [{op.if_seq_no}], primary term "
                f"[{op.if_primary_term}]. {state}",
                index_uuid=meta.uuid,
                shard="0",
                index=meta.name,
            )

    def _delete(self, op: WriteOp) -> tuple[int, dict[str, Any]]:
        meta = self._indices.get(op.index)
        if meta is None:
            raise index_not_found(op.index)
        existing = self.conn.execute(f"SELECT seq, version FROM {meta.docs} WHERE _id = ?", (op.doc_id,)).fetchone()
        self._check_concurrency(meta, op, existing)
        seq = self._next_seq()
        if existing is None:
            return 404, self._item(meta, op.doc_id or "", 1, seq, "not_found")
        self._retire(meta, existing[0], seq)
        return 200, self._item(meta, op.doc_id or "", existing[1] + 1, seq, "deleted")

    def _item(self, meta: IndexMeta, doc_id: str, version: int, seq: int, result: str) -> dict[str, Any]:
        return {
            "_index": meta.name,
            "_id": doc_id,
            "_version": version,
            "result": result,
            "_shards": dict(SHARDS),
            "_seq_no": seq,
            "_primary_term": 1,
        }

    def _retire(self, meta: IndexMeta, seq: int, deleted_at: int) -> None:
        """Remove a live row; keep it in history when an open snapshot can still see it."""
        snapshots = self._snapshots.get(meta.id)
        if snapshots and any(s >= seq for s in snapshots):
            cols = meta.column_names()
            col_list = "".join(f", {c}" for c in cols)
            select = "".join(f", d.{c}" for c in cols)
            self.conn.execute(
                f"INSERT INTO {meta.history} (seq, _id, version, deleted_at, source{col_list}) "
                f"SELECT d.seq, d._id, d.version, ?, s.source{select} FROM {meta.docs} AS d "
                f"JOIN {meta.sources} AS s ON s.seq = d.seq WHERE d.seq = ?",
                (deleted_at, seq),
            )
        self.conn.execute(f"DELETE FROM {meta.docs} WHERE seq = ?", (seq,))
        self.conn.execute(f"DELETE FROM {meta.sources} WHERE seq = ?", (seq,))

    # ------------------------------------------------------------------------------------------- reads

    def get_doc(self, name: str, doc_id: str) -> StoredDoc | None:
        """One live document by ``_id``."""
        with self.lock:
            meta = self.get_index(name)
            row = self.conn.execute(
                f"SELECT d.seq, d.version, s.source FROM {meta.docs} AS d JOIN {meta.sources} AS s "
                "ON s.seq = d.seq WHERE d._id = ?",
                (doc_id,),
            ).fetchone()
            return StoredDoc(meta.name, doc_id, row[0], row[1], row[2]) if row else None

    def current_seq(self) -> int:
        """The last sequence number handed out (a snapshot taken now sees everything up to it)."""
        with self.lock:
            return self._seq

    def open_snapshot(self, meta: IndexMeta) -> int:
        """Pin the index as of now (point in time / scroll); returns the snapshot's sequence number."""
        with self.lock:
            seq = self._seq
            self._snapshots.setdefault(meta.id, Counter())[seq] += 1
            return seq

    def release_snapshot(self, index_id: int, seq: int) -> None:
        """Unpin a snapshot and drop history rows that no remaining snapshot can see."""
        with self.lock:
            snapshots = self._snapshots.get(index_id)
            if snapshots is None or snapshots[seq] <= 0:
                return
            snapshots[seq] -= 1
            if snapshots[seq] <= 0:
                del snapshots[seq]
            meta = next((m for m in self._indices.values() if m.id == index_id), None)
            if meta is None:
                return
            if not snapshots:
                self._snapshots.pop(index_id, None)
                self.conn.execute(f"DELETE FROM {meta.history}")
                return
            open_seqs = sorted(snapshots)
            stale = [
                row_seq
                for row_seq, deleted_at in self.conn.execute(f"SELECT seq, deleted_at FROM {meta.history}")
                if not any(row_seq <= s < deleted_at for s in open_seqs)
            ]
            for chunk in _chunks(stale, 500):
                marks = ", ".join("?" for _ in chunk)
                self.conn.execute(f"DELETE FROM {meta.history} WHERE seq IN ({marks})", chunk)

    def has_history(self, meta: IndexMeta) -> bool:
        """Whether old versions are being kept for an open snapshot (then snapshot reads union them in)."""
        return self.conn.execute(f"SELECT 1 FROM {meta.history} LIMIT 1").fetchone() is not None

    def from_clause(self, meta: IndexMeta, snapshot: int | None) -> tuple[str, list[Any], list[str]]:
        """``(FROM sql, its params, extra WHERE conditions)`` reading the index live or as of a snapshot."""
        if snapshot is None:
            return f"{meta.docs} AS d", [], []
        if not self.has_history(meta):
            # Unary plus: the snapshot bound must not steer SQLite's choice of index (it is rarely selective).
            return f"{meta.docs} AS d", [], [f"+d.seq <= {int(snapshot)}"]
        cols = "".join(f", {c}" for c in meta.column_names())
        sql = (
            f"(SELECT seq, _id, version{cols} FROM {meta.docs} WHERE seq <= ? UNION ALL "
            f"SELECT seq, _id, version{cols} FROM {meta.history} WHERE seq <= ? AND deleted_at > ?) AS d"
        )
        return sql, [snapshot, snapshot, snapshot], []

    def fetch_sources(self, meta: IndexMeta, seqs: list[int], snapshot: int | None) -> dict[int, str]:
        """``_source`` texts by seq (history included for snapshot reads)."""
        found: dict[int, str] = {}
        for chunk in _chunks(seqs, 500):
            marks = ", ".join("?" for _ in chunk)
            found.update(self.conn.execute(f"SELECT seq, source FROM {meta.sources} WHERE seq IN ({marks})", chunk))
            if snapshot is not None and len(found) < len(seqs):
                missing = [s for s in chunk if s not in found]
                if missing:
                    marks = ", ".join("?" for _ in missing)
                    found.update(
                        self.conn.execute(f"SELECT seq, source FROM {meta.history} WHERE seq IN ({marks})", missing)
                    )
        return found

    def iterate(self, sql: str, params: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        """Stream rows of a read query (callers hold :attr:`lock`)."""
        cursor = self.conn.execute(sql, list(params))
        try:
            while True:
                rows = cursor.fetchmany(500)
                if not rows:
                    return
                yield from rows
        finally:
            cursor.close()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _deep_merge(current: Any, update: Any) -> Any:
    if not isinstance(current, dict) or not isinstance(update, dict):
        return update
    merged = dict(current)
    for key, value in update.items():
        merged[key] = _deep_merge(current.get(key), value) if isinstance(value, dict) else value
    return merged
