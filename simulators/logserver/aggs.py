"""Aggregations: ``terms`` (nested), ``composite`` (terms sources), ``max``, ``min``, ``sum``, ``avg``, ``stats``,
``value_count`` and ``cardinality``.

When the query needed no Python residual and every aggregated field has a single-valued column, they run
as SQLite ``GROUP BY`` queries on the column indexes, so "every (workload_id, client_id) pair with its count
and latest timestamp" over a million records is a couple of index scans. Otherwise the same results are
accumulated in Python over the matching documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from simulators.logserver.dates import format_millis, parse_date
from simulators.logserver.errors import EsError, fielddata_disabled, illegal_argument, parsing_error
from simulators.logserver.mapping import BOOLEAN, DATE, DOUBLE, LONG, TEXT, Field, Mapping, field_values
from simulators.logserver.sqlquery import Column

METRICS = ("max", "min", "sum", "avg", "value_count", "cardinality", "stats")
BUCKETS = ("terms", "composite")
_NUMERIC_ONLY = ("max", "min", "sum", "avg", "stats")
_TERMS_PARAMS = {
    "field",
    "size",
    "order",
    "min_doc_count",
    "missing",
    "shard_size",
    "show_term_doc_count_error",
    "execution_hint",
    "collect_mode",
    "value_type",
    "format",
}
SqlWhere = list[tuple[str, list[Any]]]


@dataclass
class AggSpec:
    """One named aggregation with its sub-aggregations."""

    name: str
    type: str
    params: dict[str, Any]
    subs: list[AggSpec] = field(default_factory=list)
    meta: Any = None

    @property
    def field(self) -> str | None:
        """The aggregated field (None for composite, whose fields are in its sources)."""
        value = self.params.get("field")
        return value if isinstance(value, str) else None


def parse_aggs(body: Any) -> list[AggSpec]:
    """The ``aggs``/``aggregations`` object of a search → specs; ES's parsing errors for unknown types."""
    if body is None:
        return []
    if not isinstance(body, dict):
        raise parsing_error("Expected [START_OBJECT] under [aggregations], but got a different token")
    specs: list[AggSpec] = []
    for name, spec in body.items():
        if not isinstance(spec, dict):
            raise parsing_error(f"Expected [START_OBJECT] under [{name}], but got a different token")
        subs_body = spec.get("aggs", spec.get("aggregations"))
        kinds = [k for k in spec if k not in ("aggs", "aggregations", "meta")]
        if len(kinds) != 1:
            raise parsing_error(f"Expected exactly one aggregation type for [{name}], found {kinds}")
        kind = kinds[0]
        if kind not in METRICS + BUCKETS:
            raise parsing_error(f"Unknown aggregation type [{kind}]")
        params = spec[kind]
        if not isinstance(params, dict):
            raise parsing_error(f"[{kind}] aggregation [{name}] must be an object")
        subs = parse_aggs(subs_body)
        if kind in METRICS and subs:
            raise EsError(
                400,
                "aggregation_initialization_exception",
                f"Aggregator [{name}] of type [{kind}] cannot accept sub-aggregations",
            )
        if kind == "terms":
            unknown = set(params) - _TERMS_PARAMS
            if unknown:
                raise parsing_error(f"[terms] unknown or unsupported field [{sorted(unknown)[0]}]")
        if kind in (*METRICS, "terms") and not isinstance(params.get("field"), str):
            raise parsing_error(f"Required one of fields [field, script], but none were specified for [{name}]")
        if kind == "composite":
            _check_composite(name, params)
        specs.append(AggSpec(name, kind, params, subs, spec.get("meta")))
    return specs


def _check_composite(name: str, params: dict[str, Any]) -> None:
    sources = params.get("sources")
    if not isinstance(sources, list) or not sources:
        raise parsing_error(f"Composite [sources] cannot be null or empty in [{name}]")
    for source in sources:
        if not isinstance(source, dict) or len(source) != 1:
            raise parsing_error(f"[composite] aggregation [{name}] has a malformed source")
        inner = next(iter(source.values()))
        if set(inner) != {"terms"} or not isinstance(inner["terms"].get("field"), str):
            raise parsing_error(f"[composite] aggregation [{name}] supports only [terms] sources with a field")
        if inner["terms"].get("missing_bucket"):
            raise parsing_error("[composite] [missing_bucket] is not supported by the local log server")


def _composite_sources(spec: AggSpec) -> list[tuple[str, str, bool]]:
    out = []
    for source in spec.params["sources"]:
        key, inner = next(iter(source.items()))
        terms = inner["terms"]
        out.append((key, terms["field"], str(terms.get("order", "asc")).lower() == "desc"))
    return out


def _fields_of(specs: list[AggSpec]) -> list[str]:
    names: list[str] = []
    for spec in specs:
        if spec.type == "composite":
            names.extend(f for _, f, _ in _composite_sources(spec))
        elif spec.field:
            names.append(spec.field)
        names.extend(_fields_of(spec.subs))
    return names


def check_fields(specs: list[AggSpec], mapping: Mapping, index: str) -> None:
    """ES refuses aggregations on ``text`` and numeric metrics on keywords; so do we, before any work."""
    for spec in specs:
        names = [f for _, f, _ in _composite_sources(spec)] if spec.type == "composite" else [spec.field or ""]
        for name in names:
            fld = mapping.field(name)
            if fld is None:
                continue
            if fld.kind == TEXT:
                raise fielddata_disabled(name, index)
            if spec.type in _NUMERIC_ONLY and fld.kind not in (LONG, DOUBLE, DATE, BOOLEAN):
                raise illegal_argument(
                    f"Field [{name}] of type [{fld.type}] is not supported for aggregation [{spec.type}]"
                )
        check_fields(spec.subs, mapping, index)


def sql_eligible(specs: list[AggSpec], mapping: Mapping, columns: dict[str, Column]) -> bool:
    """True when every aggregated field is unmapped or has a single-valued column."""
    for name in _fields_of(specs):
        fld = mapping.field(name)
        if fld is None:
            continue
        col = columns.get(name)
        if col is None or col.multi:
            return False
    return True


def _key_out(fld: Field | None, value: Any) -> dict[str, Any]:
    if fld is None:
        return {"key": value}
    if fld.kind == DATE:
        return {"key": int(value), "key_as_string": format_millis(int(value), fld.formats)}
    if fld.kind == BOOLEAN:
        return {"key": int(value), "key_as_string": "true" if value else "false"}
    if fld.kind == LONG:
        return {"key": int(value)}
    if fld.kind == DOUBLE:
        return {"key": float(value)}
    return {"key": value}


def _metric_out(kind: str, fld: Field | None, values: dict[str, Any]) -> dict[str, Any]:
    """Format a metric from its raw parts (count, min, max, sum, distinct)."""
    is_date = fld is not None and fld.kind == DATE
    formats = fld.formats if fld is not None else []

    def number(value: Any, with_string: bool = True) -> dict[str, Any]:
        if value is None:
            return {"value": None}
        out: dict[str, Any] = {"value": float(value)}
        if is_date and with_string:
            out["value_as_string"] = format_millis(int(value), formats)
        return out

    count = int(values.get("count") or 0)
    if kind in ("max", "min"):
        return number(values.get(kind) if count else None)
    if kind == "sum":
        return {"value": float(values.get("sum") or 0.0)}
    if kind == "avg":
        return number(values["sum"] / count if count else None, with_string=True)
    if kind == "value_count":
        return {"value": count}
    if kind == "cardinality":
        return {"value": int(values.get("distinct") or 0)}
    stats: dict[str, Any] = {
        "count": count,
        "min": float(values["min"]) if count else None,
        "max": float(values["max"]) if count else None,
        "avg": float(values["sum"]) / count if count else None,
        "sum": float(values.get("sum") or 0.0),
    }
    if is_date and count:
        for key in ("min", "max", "avg"):
            stats[f"{key}_as_string"] = format_millis(int(stats[key]), formats)
    return stats


def _with_meta(spec: AggSpec, body: dict[str, Any]) -> dict[str, Any]:
    return {"meta": spec.meta, **body} if spec.meta is not None else body


def _terms_order(spec: AggSpec) -> list[tuple[str, bool]]:
    order = spec.params.get("order", {"_count": "desc"})
    items = order if isinstance(order, list) else [order]
    out: list[tuple[str, bool]] = []
    for item in items:
        if not isinstance(item, dict) or len(item) != 1:
            raise parsing_error("[terms] [order] must be an object with one key")
        key, direction = next(iter(item.items()))
        key = "_key" if key == "_term" else key
        if key not in ("_count", "_key"):
            target = next((s for s in spec.subs if s.name == key.split(".")[0]), None)
            if target is None or target.type not in METRICS:
                raise EsError(
                    400,
                    "aggregation_execution_exception",
                    f"Invalid aggregation order path [{key}]. The provided aggregation [{key}] either does not "
                    "exist, or is a pipeline aggregation and cannot be used to sort the buckets.",
                )
        out.append((key, str(direction).lower() == "desc"))
    return out


def _sort_buckets(buckets: list[dict[str, Any]], order: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    """Order buckets as ES does: the requested keys, then the key ascending as the tiebreak."""

    def value_of(bucket: dict[str, Any], key: str) -> Any:
        if key == "_count":
            return bucket["doc_count"]
        if key == "_key":
            return bucket["key"]
        name, _, prop = key.partition(".")
        value = bucket.get(name, {}).get(prop or "value")
        return value if value is not None else float("-inf")

    ordered = sorted(buckets, key=lambda b: b["key"])
    for key, descending in reversed(order):
        ordered.sort(key=lambda b, k=key: value_of(b, k), reverse=descending)  # type: ignore[misc]
    return ordered


class SqlAggregator:
    """Aggregations as ``GROUP BY`` queries over one index's columns."""

    def __init__(
        self, conn: Any, mapping: Mapping, columns: dict[str, Column], from_sql: str, from_params: list[Any]
    ) -> None:
        self.conn = conn
        self.mapping = mapping
        self.columns = columns
        self.from_sql = from_sql
        self.from_params = from_params

    def run(self, specs: list[AggSpec], where: SqlWhere) -> dict[str, Any]:
        """Every aggregation of one level under the given conditions."""
        out: dict[str, Any] = {}
        metrics = [s for s in specs if s.type in METRICS]
        if metrics:
            exprs, readers = self._metric_exprs(metrics, 0)
            row = self._query(f"SELECT {', '.join(exprs)}", where)[0]
            for spec, reader in zip(metrics, readers, strict=True):
                out[spec.name] = _with_meta(spec, reader(row))
        for spec in specs:
            if spec.type == "terms":
                out[spec.name] = _with_meta(spec, self._terms(spec, where))
            elif spec.type == "composite":
                out[spec.name] = _with_meta(spec, self._composite(spec, where))
        return {spec.name: out[spec.name] for spec in specs}

    def _expr(self, name: str | None) -> tuple[Field | None, str | None]:
        fld = self.mapping.field(name or "")
        col = self.columns.get(name or "") if fld is not None else None
        return fld, (f"d.{col.name}" if col is not None else None)

    def _metric_exprs(self, metrics: list[AggSpec], offset: int) -> tuple[list[str], list[MetricReader]]:
        exprs: list[str] = []
        readers: list[MetricReader] = []
        for spec in metrics:
            fld, expr = self._expr(spec.field)
            column = expr or "NULL"
            parts = {
                "count": f"count({column})",
                "min": f"min({column})",
                "max": f"max({column})",
                "sum": f"total({column})",
                "distinct": f"count(DISTINCT {column})",
            }
            wanted = _METRIC_PARTS[spec.type]
            readers.append(MetricReader(spec.type, fld, wanted, offset + len(exprs)))
            exprs.extend(parts[w] for w in wanted)
        return exprs, readers

    def _query(
        self,
        select: str,
        where: SqlWhere,
        tail: str = "",
        select_params: list[Any] | None = None,
        tail_params: list[Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        conds = " AND ".join(f"({sql})" for sql, _ in where) or "1"
        params = [*(select_params or []), *self.from_params, *(p for _, ps in where for p in ps), *(tail_params or [])]
        return list(self.conn.execute(f"{select} FROM {self.from_sql} WHERE {conds} {tail}", params))

    def _terms(self, spec: AggSpec, where: SqlWhere) -> dict[str, Any]:
        fld, expr = self._expr(spec.field)
        if expr is None or fld is None:
            return {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": []}
        size = int(spec.params.get("size", 10))
        order = _terms_order(spec)
        missing = spec.params.get("missing")
        if missing is None:
            key_expr, key_where, key_params = expr, [*where, (f"{expr} IS NOT NULL", [])], []
        else:
            key_expr, key_where, key_params = f"IFNULL({expr}, ?)", list(where), [missing]
        metrics = [s for s in spec.subs if s.type in METRICS]
        exprs, readers = self._metric_exprs(metrics, 2)
        min_count = max(1, int(spec.params.get("min_doc_count", 1)))
        tail = f"GROUP BY {key_expr} HAVING count(*) >= {min_count}"
        tail_params = list(key_params)
        sql_order = _sql_order(order)
        if sql_order is not None:
            tail += f" ORDER BY {sql_order} LIMIT ?"
            tail_params.append(size)
        select = f"SELECT {key_expr}, count(*){''.join(', ' + e for e in exprs)}"
        rows = self._query(select, key_where, tail, key_params, tail_params)
        buckets: list[dict[str, Any]] = []
        raw_keys: dict[int, Any] = {}
        for row in rows:
            bucket: dict[str, Any] = {**_key_out(fld, row[0]), "doc_count": int(row[1])}
            for sub, reader in zip(metrics, readers, strict=True):
                bucket[sub.name] = reader(row)
            raw_keys[id(bucket)] = row[0]
            buckets.append(bucket)
        if sql_order is None:
            buckets = _sort_buckets(buckets, order)[:size]
        other = 0
        if len(buckets) >= size:
            other = int(self._query("SELECT count(*)", key_where)[0][0]) - sum(b["doc_count"] for b in buckets)
        nested = [s for s in spec.subs if s.type in BUCKETS]
        for bucket in buckets:
            raw = raw_keys[id(bucket)]
            if nested:
                if missing is None:
                    cond: tuple[str, list[Any]] = (f"{expr} = ?", [raw])
                else:
                    cond = (f"IFNULL({expr}, ?) = ?", [missing, raw])
                bucket.update(self.run(nested, [*where, cond]))
            subs = {s.name: bucket.pop(s.name) for s in spec.subs}
            bucket.update(subs)
        return {"doc_count_error_upper_bound": 0, "sum_other_doc_count": max(0, other), "buckets": buckets}

    def _composite(self, spec: AggSpec, where: SqlWhere) -> dict[str, Any]:
        resolved = [(key, *self._expr(name), desc) for key, name, desc in _composite_sources(spec)]
        if any(expr is None for _, _, expr, _ in resolved):
            return {"buckets": []}
        size = int(spec.params.get("size", 10))
        conds = list(where) + [(f"{expr} IS NOT NULL", []) for _, _, expr, _ in resolved]
        after = spec.params.get("after")
        if after is not None:
            conds.append(_after_condition(resolved, after))
        metrics = [s for s in spec.subs if s.type in METRICS]
        exprs, readers = self._metric_exprs(metrics, len(resolved) + 1)
        keys = ", ".join(str(expr) for _, _, expr, _ in resolved)
        order = ", ".join(f"{i + 1} {'DESC' if desc else 'ASC'}" for i, (_, _, _, desc) in enumerate(resolved))
        select = f"SELECT {keys}, count(*){''.join(', ' + e for e in exprs)}"
        rows = self._query(select, conds, f"GROUP BY {keys} ORDER BY {order} LIMIT ?", tail_params=[size])
        nested = [s for s in spec.subs if s.type in BUCKETS]
        buckets = []
        for row in rows:
            key = {name: _key_out(fld, row[i])["key"] for i, (name, fld, _, _) in enumerate(resolved)}
            bucket: dict[str, Any] = {"key": key, "doc_count": int(row[len(resolved)])}
            for sub, reader in zip(metrics, readers, strict=True):
                bucket[sub.name] = reader(row)
            if nested:
                extra = [(f"{expr} = ?", [row[i]]) for i, (_, _, expr, _) in enumerate(resolved)]
                bucket.update(self.run(nested, [*where, *extra]))
            bucket.update({s.name: bucket.pop(s.name) for s in spec.subs})
            buckets.append(bucket)
        result: dict[str, Any] = {"buckets": buckets}
        if buckets:
            result = {"after_key": buckets[-1]["key"], **result}
        return result


_METRIC_PARTS = {
    "max": ["count", "max"],
    "min": ["count", "min"],
    "sum": ["count", "sum"],
    "avg": ["count", "sum"],
    "value_count": ["count"],
    "cardinality": ["distinct"],
    "stats": ["count", "min", "max", "sum"],
}


@dataclass
class MetricReader:
    """Reads one metric's raw parts out of a SQL result row and formats it."""

    kind: str
    fld: Field | None
    parts: list[str]
    offset: int

    def __call__(self, row: tuple[Any, ...]) -> dict[str, Any]:
        raw = dict(zip(self.parts, row[self.offset : self.offset + len(self.parts)], strict=True))
        if "count" not in raw:
            raw["count"] = raw.get("distinct", 0)
        return _metric_out(self.kind, self.fld, raw)


def _sql_order(order: list[tuple[str, bool]]) -> str | None:
    """ORDER BY for count/key orders (column 1 is the key); None when a sub-aggregation decides."""
    parts = []
    for key, descending in order:
        direction = "DESC" if descending else "ASC"
        if key == "_count":
            parts.append(f"count(*) {direction}")
        elif key == "_key":
            parts.append(f"1 {direction}")
        else:
            return None
    parts.append("1 ASC")
    return ", ".join(parts)


def _after_value(fld: Field | None, value: Any) -> Any:
    if fld is not None and fld.kind == DATE and isinstance(value, str):
        return parse_date(value, [*fld.formats, "epoch_millis"])
    if fld is not None and fld.kind == BOOLEAN and isinstance(value, bool | str):
        return 1 if value in (True, "true") else 0
    return value


def _after_condition(resolved: list[tuple[str, Field | None, str | None, bool]], after: Any) -> tuple[str, list[Any]]:
    if not isinstance(after, dict):
        raise parsing_error("[composite] [after] must be an object")
    ors: list[str] = []
    params: list[Any] = []
    for i in range(len(resolved)):
        parts = []
        for name, fld, expr, _ in resolved[:i]:
            parts.append(f"{expr} = ?")
            params.append(_after_value(fld, after.get(name)))
        name, fld, expr, desc = resolved[i]
        parts.append(f"{expr} {'<' if desc else '>'} ?")
        params.append(_after_value(fld, after.get(name)))
        ors.append("(" + " AND ".join(parts) + ")")
    return " OR ".join(ors), params


class _Acc:
    """Python accumulation of one aggregation over documents."""

    def __init__(self, spec: AggSpec, mapping: Mapping) -> None:
        self.spec = spec
        self.mapping = mapping
        self.fld = mapping.field(spec.field or "") if spec.type != "composite" else None
        self.count = 0
        self.low: Any = None
        self.high: Any = None
        self.total = 0.0
        self.distinct: set[Any] = set()
        self.buckets: dict[Any, tuple[int, list[_Acc]]] = {}

    def collect(self, source: dict[str, Any]) -> None:
        """Add one document."""
        if self.spec.type in METRICS:
            for value in field_values(self.fld, source) if self.fld else []:
                self.count += 1
                self.low = value if self.low is None or value < self.low else self.low
                self.high = value if self.high is None or value > self.high else self.high
                if not isinstance(value, str):
                    self.total += value
                self.distinct.add(value)
            return
        for key in self._keys(source):
            count, subs = self.buckets.get(key, (0, []))
            if not subs and self.spec.subs:
                subs = [_Acc(s, self.mapping) for s in self.spec.subs]
            for sub in subs:
                sub.collect(source)
            self.buckets[key] = (count + 1, subs)

    def _keys(self, source: dict[str, Any]) -> Iterable[Any]:
        if self.spec.type == "terms":
            values = set(field_values(self.fld, source)) if self.fld else set()
            if not values and self.spec.params.get("missing") is not None:
                values = {self.spec.params["missing"]}
            return values
        per_source = []
        for _, name, _ in _composite_sources(self.spec):
            fld = self.mapping.field(name)
            found = sorted(set(field_values(fld, source))) if fld else []
            if not found:
                return []
            per_source.append(found)
        keys: list[tuple[Any, ...]] = [()]
        for options in per_source:
            keys = [(*k, v) for k in keys for v in options]
        return keys

    def result(self) -> dict[str, Any]:
        """The aggregation's response body."""
        spec = self.spec
        if spec.type in METRICS:
            raw = {"count": self.count, "min": self.low, "max": self.high, "sum": self.total}
            raw["distinct"] = len(self.distinct)
            return _with_meta(spec, _metric_out(spec.type, self.fld, raw))
        if spec.type == "terms":
            return _with_meta(spec, self._terms_result())
        return _with_meta(spec, self._composite_result())

    def _bucket(self, key_body: dict[str, Any], count: int, subs: list[_Acc]) -> dict[str, Any]:
        bucket = {**key_body, "doc_count": count}
        for sub in subs:
            bucket[sub.spec.name] = sub.result()
        if not subs:
            for sub_spec in self.spec.subs:
                bucket[sub_spec.name] = _Acc(sub_spec, self.mapping).result()
        return bucket

    def _terms_result(self) -> dict[str, Any]:
        size = int(self.spec.params.get("size", 10))
        min_count = max(1, int(self.spec.params.get("min_doc_count", 1)))
        buckets = [
            self._bucket(_key_out(self.fld, key), count, subs)
            for key, (count, subs) in self.buckets.items()
            if count >= min_count
        ]
        ordered = _sort_buckets(buckets, _terms_order(self.spec))
        kept = ordered[:size]
        other = sum(b["doc_count"] for b in ordered[size:])
        return {"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": kept}

    def _composite_result(self) -> dict[str, Any]:
        sources = _composite_sources(self.spec)
        fields = [self.mapping.field(name) for _, name, _ in sources]
        size = int(self.spec.params.get("size", 10))
        after = self.spec.params.get("after")
        keys = list(self.buckets)
        for i in reversed(range(len(sources))):
            keys.sort(key=lambda k, i=i: k[i], reverse=sources[i][2])  # type: ignore[misc]
        if after is not None:
            marker = tuple(_after_value(f, after.get(name)) for f, (name, _, _) in zip(fields, sources, strict=True))
            keys = [k for k in keys if _after_key(k, marker, [s[2] for s in sources])]
        buckets = []
        for key in keys[:size]:
            count, subs = self.buckets[key]
            key_dict = {name: _key_out(f, v)["key"] for (name, _, _), f, v in zip(sources, fields, key, strict=True)}
            buckets.append(self._bucket({"key": key_dict}, count, subs))
        result: dict[str, Any] = {"buckets": buckets}
        if buckets:
            result = {"after_key": buckets[-1]["key"], **result}
        return result


def _after_key(key: tuple[Any, ...], marker: tuple[Any, ...], descending: list[bool]) -> bool:
    for value, mark, desc in zip(key, marker, descending, strict=True):
        if value == mark:
            continue
        try:
            return value < mark if desc else value > mark
        except TypeError:
            return False
    return False


class PythonAggregator:
    """Aggregations accumulated document by document (used when the query has a Python residual)."""

    def __init__(self, specs: list[AggSpec], mapping: Mapping) -> None:
        self.accs = [_Acc(spec, mapping) for spec in specs]

    def collect(self, source: dict[str, Any]) -> None:
        """Add one matching document."""
        for acc in self.accs:
            acc.collect(source)

    def result(self) -> dict[str, Any]:
        """Every aggregation's response body by name."""
        return {acc.spec.name: acc.result() for acc in self.accs}
