"""Compile query trees to SQLite ``WHERE`` clauses over an index's extracted columns.

Whatever cannot be expressed on a column (``text`` fields, fields seen with several values, fields past the
column cap) is returned as a *residual* query that :class:`.query.Evaluator` checks in Python; a document
matches when the SQL part and the residual both hold. ``term`` on ``workload_id`` plus ``range`` on
``timestamp`` therefore run entirely on SQLite indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulators.logserver.mapping import KEYWORD, TEXT, Field, Mapping
from simulators.logserver.query import (
    Bool,
    Evaluator,
    Exists,
    Ids,
    Match,
    MatchAll,
    MatchNone,
    Prefix,
    Query,
    Range,
    Term,
    Wildcard,
    resolve_range,
    term_values,
)

TRUE, FALSE = "1", "0"
SqlPart = tuple[str, list[Any]]


@dataclass(frozen=True)
class Column:
    """Where a field's normalised value lives: SQL column name, kind, and whether any doc had several values."""

    name: str
    kind: str
    multi: bool = False


def _glob(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(f"[{nxt}]" if nxt in "*?[]" else nxt)
            i += 2
            continue
        out.append(f"[{char}]" if char in "[]" else char)
        i += 1
    return "".join(out)


class SqlCompiler:
    """Turns query nodes into SQL over the columns of one index (alias ``d``).

    With ``index_ranges=False`` range and prefix conditions are written on ``+column``, which SQLite can
    evaluate but not use to pick an index (for scans in document order).
    """

    def __init__(
        self, mapping: Mapping, columns: dict[str, Column], index: str, alias: str = "d", index_ranges: bool = True
    ) -> None:
        self.mapping = mapping
        self.columns = columns
        self.index = index
        self.alias = alias
        self.index_ranges = index_ranges

    def column_for(self, name: str) -> tuple[Field | None, Column | None]:
        """The mapped field and its usable column (None when the column is missing or holds arrays)."""
        fld = self.mapping.field(name)
        col = self.columns.get(name) if fld is not None else None
        if col is not None and col.multi:
            col = None
        return fld, col

    def equality_columns(self, node: Query) -> set[str]:
        """SQL columns the query pins to one value in every match (term filters under must/filter)."""
        if isinstance(node, Bool):
            found: set[str] = set()
            for clause in node.must + node.filter:
                found |= self.equality_columns(clause)
            return found
        if isinstance(node, Term | Match) and not getattr(node, "case_insensitive", False):
            values = node.values if isinstance(node, Term) else [node.query]
            fld, col = self.column_for(node.field)
            if fld is not None and col is not None and fld.kind != TEXT and len(values) == 1:
                return {col.name}
        return set()

    def split(self, node: Query) -> tuple[str, list[Any], Query | None]:
        """``(where_sql, params, residual)``: as much of the query as possible in SQL, the rest for Python."""
        if not isinstance(node, Bool):
            compiled = self.compile(node)
            if compiled is None:
                return TRUE, [], node
            return compiled[0], compiled[1], None
        sql_parts: list[str] = []
        params: list[Any] = []
        residual = Bool()
        for clause in node.must + node.filter:
            sql, clause_params, rest = self.split(clause)
            if sql != TRUE:
                sql_parts.append(f"({sql})")
                params.extend(clause_params)
            if rest is not None:
                residual.filter.append(rest)
        for clause in node.must_not:
            compiled = self.compile(clause)
            if compiled is None:
                residual.must_not.append(clause)
            else:
                sql_parts.append(f"NOT IFNULL(({compiled[0]}), 0)")
                params.extend(compiled[1])
        required = node.required_should()
        if required:
            compiled = self._should(node.should, required)
            if compiled is None:
                residual.should, residual.minimum_should_match = node.should, required
            else:
                sql_parts.append(f"({compiled[0]})")
                params.extend(compiled[1])
        has_residual = residual.filter or residual.must_not or residual.should
        return (" AND ".join(sql_parts) or TRUE), params, (residual if has_residual else None)

    def _should(self, clauses: list[Query], required: int) -> SqlPart | None:
        if required > len(clauses):
            return FALSE, []
        compiled = [self.compile(c) for c in clauses]
        if any(c is None for c in compiled):
            return None
        parts = [c for c in compiled if c is not None]
        params = [p for c in parts for p in c[1]]
        if required == 1:
            return " OR ".join(f"({sql})" for sql, _ in parts), params
        total = " + ".join(f"IFNULL(({sql}), 0)" for sql, _ in parts)
        return f"({total}) >= {int(required)}", params

    def compile(self, node: Query) -> SqlPart | None:
        """One node as SQL, or None when it needs Python."""
        if isinstance(node, MatchAll):
            return TRUE, []
        if isinstance(node, MatchNone):
            return FALSE, []
        if isinstance(node, Bool):
            sql, params, residual = self.split(node)
            return None if residual is not None else (sql, params)
        if isinstance(node, Ids):
            return self._in(f"{self.alias}._id", [str(v) for v in node.values])
        if isinstance(node, Exists):
            return self._exists(node.field)
        name = getattr(node, "field", "")
        if name == "_id":
            return self._id(node)
        if name == "_index":
            return (TRUE if Evaluator(self.mapping, self.index).index_matches(node) else FALSE), []
        fld, col = self.column_for(name)
        if fld is None:
            return FALSE, []
        if col is None or fld.kind == TEXT:
            return None
        expr = f"{self.alias}.{col.name}"
        if isinstance(node, Match):
            node = Term(node.field, [node.query])
        if isinstance(node, Term):
            if node.case_insensitive:
                return None
            return self._in(expr, term_values(node, fld))
        if isinstance(node, Range):
            return self._range(expr if self.index_ranges else f"+{expr}", node, fld)
        if isinstance(node, Prefix):
            if node.case_insensitive or fld.kind != KEYWORD:
                return None
            return self._prefix(expr if self.index_ranges else f"+{expr}", node.value)
        if isinstance(node, Wildcard):
            if node.case_insensitive or fld.kind != KEYWORD:
                return None
            return f"{expr} GLOB ?", [_glob(node.pattern)]
        return None

    def _in(self, expr: str, values: list[Any]) -> SqlPart:
        if not values:
            return FALSE, []
        if len(values) == 1:
            return f"{expr} = ?", list(values)
        return f"{expr} IN ({', '.join('?' for _ in values)})", list(values)

    def _id(self, node: Query) -> SqlPart | None:
        expr = f"{self.alias}._id"
        if isinstance(node, Term):
            return self._in(expr, [str(v) for v in node.values])
        if isinstance(node, Match):
            return self._in(expr, [str(node.query)])
        if isinstance(node, Prefix) and not node.case_insensitive:
            return self._prefix(expr, node.value)
        return None

    def _prefix(self, expr: str, prefix: str) -> SqlPart:
        if not prefix:
            return f"{expr} IS NOT NULL", []
        last = prefix[-1]
        if ord(last) >= 0x10FFFF:
            return f"substr({expr}, 1, {len(prefix)}) = ?", [prefix]
        return f"{expr} >= ? AND {expr} < ?", [prefix, prefix[:-1] + chr(ord(last) + 1)]

    def _exists(self, name: str) -> SqlPart | None:
        if name in ("_id", "_index"):
            return TRUE, []
        fld = self.mapping.field(name)
        if fld is not None:
            return self._exists_leaf(fld)
        if name in self.mapping.objects:
            parts = [self._exists_leaf(leaf) for leaf in self.mapping.leaf_fields_under(name)]
            if any(p is None for p in parts):
                return None
            sqls = [p[0] for p in parts if p is not None]
            return (" OR ".join(sqls) or FALSE), []
        return FALSE, []

    def _exists_leaf(self, fld: Field) -> SqlPart | None:
        col = self.columns.get(fld.path)
        if col is None or fld.kind == TEXT:
            return None
        return f"{self.alias}.{col.name} IS NOT NULL", []

    def _range(self, expr: str, node: Range, fld: Field) -> SqlPart:
        bounds = resolve_range(node, fld)
        parts: list[str] = []
        params: list[Any] = []
        if bounds.lower is not None:
            parts.append(f"{expr} {'>=' if bounds.lower_inclusive else '>'} ?")
            params.append(bounds.lower)
        if bounds.upper is not None:
            parts.append(f"{expr} {'<=' if bounds.upper_inclusive else '<'} ?")
            params.append(bounds.upper)
        if not parts:
            return f"{expr} IS NOT NULL", []
        return " AND ".join(parts), params
