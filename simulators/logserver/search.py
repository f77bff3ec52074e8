"""Search execution: sort, ``search_after``, paging, ``_source`` filtering, total hits and aggregations.

Every search is one ordered SQL query over the index's columns (``ORDER BY`` the sort keys then ``seq``),
so paging with ``search_after`` or a scroll cursor is an index range scan; sources are fetched only for the
page. A Python residual (see :mod:`.sqlquery`) is applied while streaming, so memory stays bounded.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulators.logserver.aggs import (
    AggSpec,
    PythonAggregator,
    SqlAggregator,
    check_fields,
    parse_aggs,
    sql_eligible,
)
from simulators.logserver.dates import format_millis, parse_date, split_formats
from simulators.logserver.errors import EsError, fielddata_disabled, illegal_argument, parsing_error
from simulators.logserver.mapping import BOOLEAN, DATE, KEYWORD, LONG, TEXT
from simulators.logserver.query import Evaluator, MatchAll, Query, parse_query, query_score
from simulators.logserver.sqlquery import SqlCompiler
from simulators.logserver.storage import IndexMeta, Storage

LONG_MAX, LONG_MIN = 2**63 - 1, -(2**63)
MAX_RESULT_WINDOW = 10_000
DEFAULT_TRACK_TOTAL = 10_000
SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
_SEARCH_KEYS = {
    "query",
    "size",
    "from",
    "sort",
    "search_after",
    "track_total_hits",
    "_source",
    "aggs",
    "aggregations",
    "pit",
    "version",
    "seq_no_primary_term",
    "track_scores",
    "timeout",
    "stored_fields",
    "explain",
    "min_score",
    "terminate_after",
    "runtime_mappings",
    "highlight",
    "fields",
    "docvalue_fields",
    "profile",
    "slice",
}


@dataclass
class SourceFilter:
    """``_source``: false, a list of patterns, or ``{"includes", "excludes"}``."""

    enabled: bool = True
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)

    @property
    def raw(self) -> bool:
        """True when the stored JSON text can be sent as it is, without parsing."""
        return self.enabled and not self.includes and not self.excludes


@dataclass
class SortSpec:
    """One requested sort key, before it is resolved against an index."""

    field: str
    descending: bool
    missing: Any = "_last"
    unmapped_type: str | None = None
    format: str | None = None


@dataclass
class SearchRequest:
    """A parsed search body plus URL parameters."""

    query: Query = field(default_factory=MatchAll)
    size: int = 10
    from_: int = 0
    sort: list[SortSpec] | None = None
    search_after: list[Any] | None = None
    track_total_hits: bool | int = DEFAULT_TRACK_TOTAL
    source: SourceFilter = field(default_factory=SourceFilter)
    aggs: list[AggSpec] = field(default_factory=list)
    pit_id: str | None = None
    pit_keep_alive: str | None = None
    slice: tuple[int, int] | None = None  # (id, max)
    version: bool = False
    seq_no_primary_term: bool = False


def _bool_param(value: Any) -> bool:
    return value in (True, "true", "", "1")


def parse_source_filter(value: Any, includes: str | None = None, excludes: str | None = None) -> SourceFilter:
    """``_source`` in a body or ``_source``/``_source_includes``/``_source_excludes`` URL parameters."""
    filt = SourceFilter()
    if isinstance(value, bool):
        filt.enabled = value
    elif isinstance(value, str):
        if value in ("true", "false"):
            filt.enabled = value == "true"
        else:
            filt.includes = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, list):
        filt.includes = [str(v) for v in value]
    elif isinstance(value, dict):
        inc = value.get("includes", value.get("include", []))
        exc = value.get("excludes", value.get("exclude", []))
        filt.includes = [inc] if isinstance(inc, str) else list(inc or [])
        filt.excludes = [exc] if isinstance(exc, str) else list(exc or [])
    elif value is not None:
        raise parsing_error("[_source] must be a boolean, a string, an array or an object")
    if includes:
        filt.includes = [p.strip() for p in includes.split(",") if p.strip()]
    if excludes:
        filt.excludes = [p.strip() for p in excludes.split(",") if p.strip()]
    return filt


def filter_source(source: dict[str, Any], filt: SourceFilter) -> dict[str, Any]:
    """Keep the included paths (wildcards allowed) and drop the excluded ones, as ES's source filtering."""
    return _filter_node(source, "", filt) if isinstance(source, dict) else source


def _filter_node(node: dict[str, Any], prefix: str, filt: SourceFilter) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = prefix + key
        if any(fnmatch.fnmatchcase(path, p) for p in filt.excludes):
            continue
        included = not filt.includes or any(
            fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path, p + ".*") or path.startswith(p + ".")
            for p in filt.includes
        )
        if included:
            out[key] = _filter_value(value, path, SourceFilter(True, [], filt.excludes))
        elif isinstance(value, dict | list) and _may_include_below(path, filt.includes):
            filtered = _filter_value(value, path, filt)
            if filtered not in ({}, []):
                out[key] = filtered
    return out


def _filter_value(value: Any, path: str, filt: SourceFilter) -> Any:
    if isinstance(value, dict):
        return _filter_node(value, path + ".", filt)
    if isinstance(value, list):
        items = [_filter_value(v, path, filt) for v in value]
        return [v for v in items if not (isinstance(v, dict) and not v and filt.includes)]
    return value


def _may_include_below(path: str, includes: list[str]) -> bool:
    depth = len(path.split("."))
    for pattern in includes:
        parts = pattern.split(".")
        if len(parts) <= depth and "*" not in pattern:
            continue
        if "*" in pattern and fnmatch.fnmatchcase(path + ".", pattern.split("*")[0] + "*"):
            return True
        if all(fnmatch.fnmatchcase(a, b) for a, b in zip(path.split("."), parts[:depth], strict=False)):
            return True
    return False


def parse_sort(value: Any) -> list[SortSpec]:
    """``sort`` as a string, ``"field:desc"`` list, objects or a mix."""
    items = value if isinstance(value, list) else [value]
    specs: list[SortSpec] = []
    for item in items:
        if isinstance(item, str):
            for part in [p for p in item.split(",") if p]:
                name, _, direction = part.partition(":")
                default_desc = name == "_score"
                specs.append(SortSpec(name, direction.lower() == "desc" if direction else default_desc))
        elif isinstance(item, dict) and len(item) == 1:
            name, options = next(iter(item.items()))
            if isinstance(options, str):
                specs.append(SortSpec(name, options.lower() == "desc"))
            elif isinstance(options, dict):
                order = options.get("order", "desc" if name == "_score" else "asc")
                specs.append(
                    SortSpec(
                        name,
                        str(order).lower() == "desc",
                        options.get("missing", "_last"),
                        options.get("unmapped_type"),
                        options.get("format"),
                    )
                )
            else:
                raise parsing_error(f"[sort] malformed option for [{name}]")
        else:
            raise parsing_error("[sort] must be a string, an object with one field, or an array of those")
    return specs


def _int_param(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise illegal_argument(f"Failed to parse int parameter [{name}] with value [{value}]") from None


def parse_search(body: dict[str, Any] | None, params: dict[str, str]) -> SearchRequest:
    """A search request from its JSON body and URL parameters (URL wins, as in ES)."""
    body = body or {}
    unknown = set(body) - _SEARCH_KEYS
    if unknown:
        raise parsing_error(f"Unknown key for a START_OBJECT in [{sorted(unknown)[0]}].")
    req = SearchRequest(query=parse_query(body.get("query")))
    req.size = _int_param(params.get("size", body.get("size", 10)), "size")
    req.from_ = _int_param(params.get("from", body.get("from", 0)), "from")
    if req.size < 0:
        raise illegal_argument(f"[size] parameter cannot be negative, found [{req.size}]")
    if req.from_ < 0 and req.from_ != -1:
        raise illegal_argument(f"[from] parameter cannot be negative but was [{req.from_}]")
    req.from_ = max(req.from_, 0)
    sort_value = params.get("sort", body.get("sort"))
    req.sort = parse_sort(sort_value) if sort_value is not None else None
    after = body.get("search_after")
    if after is not None and not isinstance(after, list):
        raise parsing_error("[search_after] must be an array")
    req.search_after = after
    tth = params.get("track_total_hits", body.get("track_total_hits", DEFAULT_TRACK_TOTAL))
    if isinstance(tth, str):
        tth = True if tth == "true" else False if tth == "false" else _int_param(tth, "track_total_hits")
    req.track_total_hits = tth
    req.source = parse_source_filter(
        params.get("_source", body.get("_source")), params.get("_source_includes"), params.get("_source_excludes")
    )
    req.aggs = parse_aggs(body.get("aggs", body.get("aggregations")))
    pit = body.get("pit")
    if pit is not None:
        if not isinstance(pit, dict) or not isinstance(pit.get("id"), str):
            raise parsing_error("[pit] requires an [id]")
        req.pit_id, req.pit_keep_alive = pit["id"], pit.get("keep_alive")
    req.slice = parse_slice(body.get("slice"))
    req.version = _bool_param(params.get("version", body.get("version", False)))
    req.seq_no_primary_term = _bool_param(params.get("seq_no_primary_term", body.get("seq_no_primary_term", False)))
    if req.search_after is not None and req.from_ > 0:
        raise illegal_argument("[from] parameter must be set to 0 when [search_after] is used")
    return req


def parse_slice(value: Any) -> tuple[int, int] | None:
    """``slice: {"id", "max"}`` of a sliced point-in-time or scroll search, checked as Elasticsearch checks it.

    Only the default slicing field is served (``_shard_doc`` for a point in time): documents are split by a
    hash of their place in the index, so the slices are disjoint and together hold every match.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise parsing_error("[slice] must be an object")
    unknown = set(value) - {"id", "max", "field"}
    if unknown:
        raise parsing_error(f"[slice] unknown field [{sorted(unknown)[0]}]")
    field_name = value.get("field")
    if field_name not in (None, "_shard_doc"):
        raise illegal_argument(f"the local log server slices only on [_shard_doc], not [{field_name}]")
    slice_id, slice_max = value.get("id"), value.get("max")
    if not isinstance(slice_id, int) or isinstance(slice_id, bool) or slice_id < 0:
        raise illegal_argument("id must be greater than or equal to 0")
    if not isinstance(slice_max, int) or isinstance(slice_max, bool) or slice_max <= 1:
        raise illegal_argument("max must be greater than 1")
    if slice_id >= slice_max:
        raise illegal_argument("max must be greater than id")
    return slice_id, slice_max


@dataclass
class SortKey:
    """A sort key resolved against an index: SQL expressions, and how values go in and out."""

    spec: SortSpec
    kind: str
    column: str | None = None
    formats: list[str] = field(default_factory=list)
    nullable: bool = False

    def order_exprs(self) -> list[tuple[str, bool]]:
        """``(expr, descending)`` pairs in ORDER BY; empty for keys that cannot tell documents apart."""
        desc = self.spec.descending
        if self.kind == "score" or self.kind == "none":
            return []
        if self.kind == "seq":
            return [("d.seq", desc)]
        if self.kind == "id":
            return [("d._id", desc)]
        assert self.column is not None
        if not self.nullable:
            return [(self.column, desc)]
        missing = self.spec.missing
        if self.kind == KEYWORD:
            if missing in ("_last", "_first"):
                return [(f"({self.column} IS NULL)", missing == "_first"), (f"IFNULL({self.column}, '')", desc)]
            return [(f"IFNULL({self.column}, {_sql_literal(str(missing))})", desc)]
        return [(f"IFNULL({self.column}, {_sql_literal(self._missing_number())})", desc)]

    def _missing_number(self) -> Any:
        missing, desc = self.spec.missing, self.spec.descending
        if missing == "_last":
            return LONG_MIN if desc else LONG_MAX
        if missing == "_first":
            return LONG_MAX if desc else LONG_MIN
        return self.convert_in(missing)

    def convert_in(self, value: Any) -> Any:
        """A ``search_after`` value in the column's normalised form."""
        if value is None:
            return None
        if self.kind == "seq":
            return int(value)
        if self.kind == DATE and isinstance(value, str):
            formats = split_formats(self.spec.format) if self.spec.format else [*self.formats, "epoch_millis"]
            return parse_date(value, formats)
        if self.kind in (LONG, DATE) and isinstance(value, int | float | str):
            return int(float(value)) if not isinstance(value, int) else value
        if self.kind == BOOLEAN:
            return 1 if value in (True, "true", 1) else 0
        if self.kind in (KEYWORD, "id"):
            return str(value)
        return float(value) if isinstance(value, str) else value

    def after_values(self, value: Any) -> list[Any]:
        """The values of :meth:`order_exprs` for a client's ``search_after`` entry."""
        exprs = self.order_exprs()
        if not exprs:
            return []
        if self.kind == KEYWORD and self.nullable and self.spec.missing in ("_last", "_first"):
            return [1 if value is None else 0, "" if value is None else self.convert_in(value)]
        if value is None and self.nullable:
            return [self._missing_number() if self.kind != KEYWORD else str(self.spec.missing)]
        converted = self.convert_in(value)
        if converted is None:
            raise parsing_error(f"[search_after] value for [{self.spec.field}] cannot be null")
        return [converted]

    def value_out(self, raw: Any, seq: int, score: float | None) -> Any:
        """A hit's sort value as ES prints it (missing numerics as Long.MAX/MIN, dates as millis)."""
        if self.kind == "score":
            return score
        if self.kind == "seq":
            return seq
        if raw is None:
            if self.kind in (KEYWORD, "id"):
                return None if self.spec.missing in ("_last", "_first") else self.spec.missing
            if self.kind == "none" and self.spec.unmapped_type in ("keyword", "text", None):
                return None
            return self._missing_number()
        if self.kind == DATE and self.spec.format:
            return format_millis(int(raw), split_formats(self.spec.format))
        return raw


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def resolve_sort(storage: Storage, meta: IndexMeta, specs: list[SortSpec]) -> list[SortKey]:
    """Map sort specs to columns; ES's errors for text fields and unmapped fields without ``unmapped_type``."""
    keys: list[SortKey] = []
    for spec in specs:
        if spec.field == "_score":
            keys.append(SortKey(spec, "score"))
        elif spec.field in ("_doc", "_shard_doc"):
            keys.append(SortKey(spec, "seq"))
        elif spec.field == "_id":
            keys.append(SortKey(spec, "id", "d._id"))
        else:
            keys.append(_field_key(storage, meta, spec))
    return keys


def _field_key(storage: Storage, meta: IndexMeta, spec: SortSpec) -> SortKey:
    fld = meta.mapping.field(spec.field)
    if fld is None:
        if spec.unmapped_type:
            return SortKey(spec, "none")
        raise EsError(400, "query_shard_exception", f"No mapping found for [{spec.field}] in order to sort on")
    if fld.kind == TEXT:
        raise fielddata_disabled(spec.field, meta.name)
    col = meta.columns.get(spec.field)
    if col is None:
        raise illegal_argument(f"sorting on [{spec.field}] is not supported by the local log server (not indexed)")
    nullable = (
        storage.conn.execute(f"SELECT 1 FROM {meta.docs} WHERE {col.name} IS NULL LIMIT 1").fetchone() is not None
        or storage.conn.execute(f"SELECT 1 FROM {meta.history} WHERE {col.name} IS NULL LIMIT 1").fetchone() is not None
    )
    return SortKey(spec, col.kind, f"d.{col.name}", fld.formats, nullable)


def after_condition(exprs: list[tuple[str, bool]], values: list[Any]) -> tuple[str, list[Any]]:
    """Strictly after ``values`` in the lexicographic order of ``exprs``.

    Spelled out as ``k1 >= v1 AND (k1 > v1 OR (k1 = v1 AND k2 > v2) ...)`` rather than as a row-value
    comparison: with row values SQLite's planner picks a worse index when a range filter is also present.
    """
    if not exprs:
        return "1", []
    if len(exprs) == 1:
        return f"{exprs[0][0]} {'<' if exprs[0][1] else '>'} ?", [values[0]]
    first, first_desc = exprs[0]
    sql = f"{first} {'<=' if first_desc else '>='} ? AND ("
    params: list[Any] = [values[0]]
    ors: list[str] = []
    for i, (expr, desc) in enumerate(exprs):
        parts = [f"{e} = ?" for e, _ in exprs[:i]] + [f"{expr} {'<' if desc else '>'} ?"]
        params.extend(values[: i + 1])
        ors.append("(" + " AND ".join(parts) + ")")
    return sql + " OR ".join(ors) + ")", params


@dataclass
class Hit:
    """One page entry: the row's identity, its sort values and (later) its source."""

    seq: int
    doc_id: str
    version: int
    raw_sort: list[Any]
    internal_key: list[Any]
    source: str | None = None


@dataclass
class SearchResult:
    """What the search APIs format into a response."""

    hits: list[Hit]
    total: int | None
    total_relation: str
    aggregations: dict[str, Any] | None
    keys: list[SortKey]
    score: float | None
    show_sort: bool
    order_exprs: list[tuple[str, bool]]
    sort_score: float = 1.0


class SearchEngine:
    """Runs searches and counts against :class:`.storage.Storage` (callers may hold ``storage.lock``)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def count(self, meta: IndexMeta, query: Query, snapshot: int | None = None) -> int:
        """``_count``: an indexed ``count(*)`` unless part of the query needs Python."""
        with self.storage.lock:
            where, params, residual = SqlCompiler(meta.mapping, meta.columns, meta.name).split(query)
            from_sql, from_params, extra = self.storage.from_clause(meta, snapshot)
            conds = " AND ".join([f"({where})", *extra])
            if residual is None:
                row = self.storage.conn.execute(f"SELECT count(*) FROM {from_sql} WHERE {conds}", from_params + params)
                return int(row.fetchone()[0])
            evaluator = Evaluator(meta.mapping, meta.name)
            sql = f"SELECT d.seq, d._id FROM {from_sql} WHERE {conds} ORDER BY d.seq"
            with closing(self._stream(meta, sql, from_params + params, residual, evaluator, snapshot)) as rows:
                return sum(1 for _ in rows)

    def _stream(
        self,
        meta: IndexMeta,
        sql: str,
        params: list[Any],
        residual: Query | None,
        evaluator: Evaluator,
        snapshot: int | None,
        with_sources: bool = False,
    ) -> Generator[tuple[tuple[Any, ...], str | None], None, None]:
        """Rows of ``sql`` (seq first, _id second) that pass the residual, with their sources when asked."""
        batch: list[tuple[Any, ...]] = []

        def flush() -> Iterator[tuple[tuple[Any, ...], str | None]]:
            sources = self.storage.fetch_sources(meta, [r[0] for r in batch], snapshot)
            for row in batch:
                text = sources.get(row[0])
                if text is None:
                    continue
                if residual is None or evaluator.matches(residual, row[1], orjson.loads(text)):
                    yield row, text

        need_sources = with_sources or residual is not None
        for row in self.storage.iterate(sql, params):
            if not need_sources:
                yield row, None
                continue
            batch.append(row)
            if len(batch) >= 200:
                yield from flush()
                batch = []
        if batch:
            yield from flush()

    def search(
        self,
        meta: IndexMeta,
        req: SearchRequest,
        snapshot: int | None = None,
        *,
        pit: bool = False,
        cursor: list[Any] | None = None,
        total_known: tuple[int | None, str] | None = None,
    ) -> SearchResult:
        """One page of hits (plus total and aggregations) for a request; ``cursor`` resumes a scroll."""
        if cursor is None and req.search_after is None and req.from_ + req.size > MAX_RESULT_WINDOW:
            raise illegal_argument(
                f"Result window is too large, from + size must be less than or equal to: [{MAX_RESULT_WINDOW}] but "
                f"was [{req.from_ + req.size}]. See the scroll api for a more efficient way to request large data sets."
            )
        with self.storage.lock:
            return self._search(meta, req, snapshot, pit, cursor, total_known)

    def _search(
        self,
        meta: IndexMeta,
        req: SearchRequest,
        snapshot: int | None,
        pit: bool,
        cursor: list[Any] | None,
        total_known: tuple[int | None, str] | None,
    ) -> SearchResult:
        check_fields(req.aggs, meta.mapping, meta.name)
        specs = list(req.sort) if req.sort else [SortSpec("_score", True)]
        if pit and not any(s.field == "_shard_doc" for s in specs):
            specs.append(SortSpec("_shard_doc", False))
        keys = resolve_sort(self.storage, meta, specs)
        order_exprs = [e for key in keys for e in key.order_exprs()]
        if not any(e == "d.seq" for e, _ in order_exprs):
            order_exprs.append(("d.seq", False))
        compiler = SqlCompiler(meta.mapping, meta.columns, meta.name)
        where, where_params, residual = compiler.split(req.query)
        from_sql, from_params, extra = self.storage.from_clause(meta, snapshot)
        if req.slice is not None:
            slice_id, slice_max = req.slice
            # a multiplicative hash of the document's place, so that no pattern of writes lands in one slice
            # (its high bits: the low bits of an odd multiple keep the pattern)
            extra = [*extra, f"((d.seq * 2654435761) % 4294967296 / 65536 % {int(slice_max)}) = {int(slice_id)}"]
        conds = [f"({where})", *extra]
        page_where, page_where_params = where, where_params
        if order_exprs[0][0] == "d.seq":
            # In document order, ranges must not drive the index: walking rowids and filtering is linear over
            # all pages, while sorting a range's matches again for every page is quadratic.
            seq_compiler = SqlCompiler(meta.mapping, meta.columns, meta.name, index_ranges=False)
            page_where, page_where_params, _ = seq_compiler.split(req.query)
        evaluator = Evaluator(meta.mapping, meta.name)
        score = query_score(req.query)
        base_params = from_params + where_params

        total, relation = (
            total_known
            if total_known is not None
            else self._total(req, meta, from_sql, conds, base_params, residual, evaluator, snapshot)
        )
        page_conds, page_params = [f"({page_where})", *extra], from_params + page_where_params
        page_from = from_sql
        if from_sql == f"{meta.docs} AS d":
            hint = self._index_hint(meta, order_exprs, compiler.equality_columns(req.query))
            page_from = f"{from_sql} INDEXED BY {hint}" if hint else from_sql
        if cursor is not None:
            sql, params = after_condition(order_exprs, cursor)
            page_conds.append(f"({sql})")
            page_params.extend(params)
        elif req.search_after is not None:
            visible = [k for k in keys if k.order_exprs()]
            values = self._after_values(keys, req.search_after)
            prefix = [e for key in visible for e in key.order_exprs()]
            sql, params = after_condition(prefix, values)
            page_conds.append(f"({sql})")
            page_params.extend(params)
        hits = self._page(
            meta, req, keys, order_exprs, page_from, page_conds, page_params, residual, evaluator, snapshot
        )
        aggregations = None
        if req.aggs and cursor is None:
            aggregations = self._aggregate(
                meta, req, from_sql, from_params, conds, where_params, residual, evaluator, snapshot
            )
        show_sort = req.sort is not None or pit
        scored = not req.sort or any(k.kind == "score" for k in keys)
        return SearchResult(
            hits, total, relation, aggregations, keys, score if scored else None, show_sort, order_exprs, score
        )

    def _index_hint(self, meta: IndexMeta, order_exprs: list[tuple[str, bool]], equalities: set[str]) -> str | None:
        """The index that serves every term filter and then the sort column, when one exists.

        Without statistics SQLite sometimes prefers a shorter index when a range filter and the
        ``search_after`` bound both constrain the sort column; a page would then read rows of other
        workloads. When an index covers all the equalities followed by the sort column, it is the best.
        """
        first = order_exprs[0][0]
        if not equalities or not first.startswith("d.c") or not first[3:].isdigit():
            return None
        column = first[2:]
        for name, cols in self.storage.sql_indexes(meta).items():
            if cols and cols[-1] == column and set(cols[:-1]) == equalities and len(cols) == len(equalities) + 1:
                return name
        return None

    def _after_values(self, keys: list[SortKey], search_after: list[Any]) -> list[Any]:
        if len(search_after) != len(keys):
            raise illegal_argument(f"search_after has {len(search_after)} value(s) but sort has {len(keys)}.")
        values: list[Any] = []
        for key, value in zip(keys, search_after, strict=True):
            try:
                values.extend(key.after_values(value))
            except (ValueError, TypeError) as exc:
                raise parsing_error(f"Failed to parse search_after value for field [{key.spec.field}]: {exc}") from None
        return values

    def _total(
        self,
        req: SearchRequest,
        meta: IndexMeta,
        from_sql: str,
        conds: list[str],
        params: list[Any],
        residual: Query | None,
        evaluator: Evaluator,
        snapshot: int | None,
    ) -> tuple[int | None, str]:
        tth = req.track_total_hits
        if tth is False:
            return None, "eq"
        cap = None if tth is True else max(0, int(tth))
        where = " AND ".join(conds)
        if residual is None:
            limit = f" LIMIT {cap + 1}" if cap is not None else ""
            sql = f"SELECT count(*) FROM (SELECT 1 FROM {from_sql} WHERE {where}{limit})"
            count = int(self.storage.conn.execute(sql, params).fetchone()[0])
        else:
            sql = f"SELECT d.seq, d._id FROM {from_sql} WHERE {where} ORDER BY d.seq"
            count = 0
            with closing(self._stream(meta, sql, params, residual, evaluator, snapshot)) as rows:
                for _ in rows:
                    count += 1
                    if cap is not None and count > cap:
                        break
        if cap is not None and count > cap:
            return cap, "gte"
        return count, "eq"

    def _page(
        self,
        meta: IndexMeta,
        req: SearchRequest,
        keys: list[SortKey],
        order_exprs: list[tuple[str, bool]],
        from_sql: str,
        conds: list[str],
        params: list[Any],
        residual: Query | None,
        evaluator: Evaluator,
        snapshot: int | None,
    ) -> list[Hit]:
        if req.size == 0:
            return []
        raw_cols = [k.column or "NULL" for k in keys]
        select = ", ".join(["d.seq", "d._id", "d.version", *raw_cols, *(e for e, _ in order_exprs)])
        order = ", ".join(f"{e} {'DESC' if desc else 'ASC'}" for e, desc in order_exprs)
        sql = f"SELECT {select} FROM {from_sql} WHERE {' AND '.join(conds)} ORDER BY {order}"
        if residual is None:
            sql += f" LIMIT {int(req.size)} OFFSET {int(req.from_)}"
        hits: list[Hit] = []
        skipped = 0
        width = len(keys)
        with closing(self._stream(meta, sql, params, residual, evaluator, snapshot)) as rows:
            for row, text in rows:
                if residual is not None and skipped < req.from_:
                    skipped += 1
                    continue
                hits.append(Hit(row[0], row[1], row[2], list(row[3 : 3 + width]), list(row[3 + width :]), text))
                if len(hits) >= req.size:
                    break
        missing = [h.seq for h in hits if h.source is None]
        if missing:
            sources = self.storage.fetch_sources(meta, missing, snapshot)
            for hit in hits:
                if hit.source is None:
                    hit.source = sources.get(hit.seq, "{}")
        return hits

    def _aggregate(
        self,
        meta: IndexMeta,
        req: SearchRequest,
        from_sql: str,
        from_params: list[Any],
        conds: list[str],
        where_params: list[Any],
        residual: Query | None,
        evaluator: Evaluator,
        snapshot: int | None,
    ) -> dict[str, Any]:
        if residual is None and sql_eligible(req.aggs, meta.mapping, meta.columns):
            aggregator = SqlAggregator(self.storage.conn, meta.mapping, meta.columns, from_sql, from_params)
            return aggregator.run(req.aggs, [(" AND ".join(conds), list(where_params))])
        python = PythonAggregator(req.aggs, meta.mapping)
        sql = f"SELECT d.seq, d._id FROM {from_sql} WHERE {' AND '.join(conds)} ORDER BY d.seq"
        for _, text in self._stream(meta, sql, from_params + where_params, residual, evaluator, snapshot, True):
            python.collect(orjson.loads(text or "{}"))
        return python.result()


def render_hits(meta: IndexMeta, req: SearchRequest, result: SearchResult) -> dict[str, Any]:
    """The ``hits`` object of a search response."""
    hits = []
    for hit in result.hits:
        body: dict[str, Any] = {"_index": meta.name, "_id": hit.doc_id, "_score": result.score}
        if req.version:
            body["_version"] = hit.version
        if req.seq_no_primary_term:
            body["_seq_no"], body["_primary_term"] = hit.seq, 1
        if req.source.enabled:
            text = hit.source or "{}"
            if req.source.raw:
                body["_source"] = orjson.Fragment(text)
            else:
                parsed = orjson.loads(text)
                body["_source"] = parsed if req.source.raw else filter_source(parsed, req.source)
        if result.show_sort:
            body["sort"] = [
                k.value_out(raw, hit.seq, result.sort_score) for k, raw in zip(result.keys, hit.raw_sort, strict=True)
            ]
        hits.append(body)
    out: dict[str, Any] = {}
    if result.total is not None:
        out["total"] = {"value": result.total, "relation": result.total_relation}
    out["max_score"] = result.score if result.hits and result.score is not None else None
    out["hits"] = hits
    return out


def search_response(meta: IndexMeta, req: SearchRequest, result: SearchResult, started: float) -> dict[str, Any]:
    """A whole search response body (``pit_id``/``_scroll_id`` are added by the caller)."""
    body: dict[str, Any] = {
        "took": int((time.monotonic() - started) * 1000),
        "timed_out": False,
        "_shards": dict(SHARDS),
        "hits": render_hits(meta, req, result),
    }
    if result.aggregations is not None:
        body["aggregations"] = result.aggregations
    return body


def empty_search_response(req: SearchRequest) -> dict[str, Any]:
    """A search over no index at all (a wildcard that matched nothing)."""
    hits: dict[str, Any] = {"max_score": None, "hits": []}
    if req.track_total_hits is not False:
        hits = {"total": {"value": 0, "relation": "eq"}, **hits}
    return {"took": 0, "timed_out": False, "_shards": {**SHARDS, "total": 0, "successful": 0}, "hits": hits}
