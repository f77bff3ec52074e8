"""The query DSL: parsed into a small tree, then evaluated against a document in Python.

The same tree is compiled to SQL by :mod:`.sqlquery` wherever the fields have indexed columns; this module
is the reference semantics and the fallback for what SQL cannot answer (``match`` on ``text``, fields
holding arrays). Unmapped fields match nothing, as in Elasticsearch.
"""

from __future__ import annotations

import fnmatch
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, timezone
from typing import Any

from simulators.logserver.dates import parse_date_math, parse_time_zone, split_formats
from simulators.logserver.errors import EsError, parsing_error
from simulators.logserver.mapping import (
    DATE,
    KEYWORD,
    TEXT,
    Field,
    Mapping,
    analyze,
    convert_value,
    field_values,
    source_values,
)


class Query:
    """A node of the parsed query tree."""


@dataclass
class MatchAll(Query):
    """``match_all`` (and an absent query)."""


@dataclass
class MatchNone(Query):
    """``match_none``."""


@dataclass
class Term(Query):
    """``term`` and ``terms``: any of the values, exactly (after the field's own normalisation)."""

    field: str
    values: list[Any]
    case_insensitive: bool = False


@dataclass
class Range(Query):
    """``range`` with ``gt``/``gte``/``lt``/``lte``; dates honour ``format``, ``time_zone`` and date math."""

    field: str
    gt: Any = None
    gte: Any = None
    lt: Any = None
    lte: Any = None
    format: str | None = None
    time_zone: str | None = None


@dataclass
class Exists(Query):
    """``exists``: the field has at least one indexed value."""

    field: str


@dataclass
class Ids(Query):
    """``ids``."""

    values: list[str]


@dataclass
class Match(Query):
    """``match`` (tokens, ``operator``, ``minimum_should_match``) and ``match_phrase``."""

    field: str
    query: Any
    operator: str = "or"
    minimum_should_match: Any = None
    phrase: bool = False


@dataclass
class Prefix(Query):
    """``prefix`` on a keyword (or a token of a text field)."""

    field: str
    value: str
    case_insensitive: bool = False


@dataclass
class Wildcard(Query):
    """``wildcard`` with ``*`` and ``?``."""

    field: str
    pattern: str
    case_insensitive: bool = False


@dataclass
class Bool(Query):
    """``bool`` with ``must``/``filter``/``should``/``must_not`` and ``minimum_should_match``."""

    must: list[Query] = field(default_factory=list)
    filter: list[Query] = field(default_factory=list)
    should: list[Query] = field(default_factory=list)
    must_not: list[Query] = field(default_factory=list)
    minimum_should_match: Any = None

    def required_should(self) -> int:
        """How many ``should`` clauses must match (ES: 1 without must/filter, else 0, unless given)."""
        count = len(self.should)
        if not count:
            return 0
        if self.minimum_should_match is None:
            return 0 if (self.must or self.filter) else 1
        return resolve_minimum_should_match(self.minimum_should_match, count)


def resolve_minimum_should_match(spec: Any, count: int) -> int:
    """``2``, ``-1``, ``"75%"``, ``"-25%"`` → a clause count, as ES computes it."""
    text = str(spec).strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            value = math.floor(count * abs(pct) / 100)
            required = count - value if pct < 0 else value
        else:
            number = int(text)
            required = count + number if number < 0 else number
    except ValueError:
        raise parsing_error(f"Failed to parse [minimum_should_match] value [{spec}]") from None
    return max(0, required)


def _single_field(kind: str, body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict):
        raise parsing_error(f"[{kind}] query malformed, no start_object after query name")
    items = [(k, v) for k, v in body.items() if k not in ("boost", "_name")]
    if len(items) != 1:
        raise parsing_error(f"[{kind}] query doesn't support multiple fields, found [{', '.join(k for k, _ in items)}]")
    return items[0]


def _clauses(name: str, value: Any) -> list[Query]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [parse_query(value)]
    if isinstance(value, list):
        return [parse_query(item) for item in value]
    raise parsing_error(f"[bool] query does not support [{name}]")


def parse_query(body: Any) -> Query:
    """A query DSL object → a tree; ES's ``parsing_exception`` for unknown or malformed queries."""
    if body is None:
        return MatchAll()
    if not isinstance(body, dict) or len(body) != 1:
        raise parsing_error("[_na] query malformed, must start with start_object")
    kind, spec = next(iter(body.items()))
    if kind == "match_all":
        return MatchAll()
    if kind == "match_none":
        return MatchNone()
    if kind == "bool":
        if not isinstance(spec, dict):
            raise parsing_error("[bool] query malformed, no start_object after query name")
        unknown = set(spec) - {"must", "filter", "should", "must_not", "minimum_should_match", "boost", "_name"}
        if unknown:
            raise parsing_error(f"[bool] query does not support [{sorted(unknown)[0]}]")
        return Bool(
            must=_clauses("must", spec.get("must")),
            filter=_clauses("filter", spec.get("filter")),
            should=_clauses("should", spec.get("should")),
            must_not=_clauses("must_not", spec.get("must_not")),
            minimum_should_match=spec.get("minimum_should_match"),
        )
    if kind == "constant_score":
        if not isinstance(spec, dict) or "filter" not in spec:
            raise parsing_error("[constant_score] requires a 'filter' element")
        return Bool(filter=[parse_query(spec["filter"])])
    if kind == "ids":
        if not isinstance(spec, dict) or not isinstance(spec.get("values"), list):
            raise parsing_error("[ids] query malformed, [values] must be an array")
        return Ids([str(v) for v in spec["values"]])
    if kind == "exists":
        if not isinstance(spec, dict) or not isinstance(spec.get("field"), str):
            raise parsing_error("[exists] must be provided with a [field]")
        return Exists(spec["field"])
    if kind == "terms":
        if not isinstance(spec, dict):
            raise parsing_error("[terms] query malformed")
        pairs = [(k, v) for k, v in spec.items() if k not in ("boost", "_name")]
        if len(pairs) != 1 or not isinstance(pairs[0][1], list):
            raise parsing_error("[terms] query does not support multiple fields, or values are not an array")
        return Term(pairs[0][0], list(pairs[0][1]))
    if kind in ("term", "match", "match_phrase", "range", "prefix", "wildcard"):
        name, value = _single_field(kind, spec)
        return _parse_leaf(kind, name, value)
    raise parsing_error(f"unknown query [{kind}]")


def _parse_leaf(kind: str, name: str, value: Any) -> Query:
    if kind == "range":
        if not isinstance(value, dict):
            raise parsing_error(f"[range] query malformed, no start_object after field [{name}]")
        known = {"gt", "gte", "lt", "lte", "format", "time_zone", "boost", "relation", "from", "to"}
        unknown = set(value) - known - {"include_lower", "include_upper"}
        if unknown:
            raise parsing_error(f"[range] query does not support [{sorted(unknown)[0]}]")
        node = Range(name, value.get("gt"), value.get("gte"), value.get("lt"), value.get("lte"))
        if "from" in value and value["from"] is not None:
            if value.get("include_lower", True):
                node.gte = value["from"]
            else:
                node.gt = value["from"]
        if "to" in value and value["to"] is not None:
            if value.get("include_upper", True):
                node.lte = value["to"]
            else:
                node.lt = value["to"]
        node.format, node.time_zone = value.get("format"), value.get("time_zone")
        return node
    options: dict[str, Any] = value if isinstance(value, dict) else {}
    if kind == "term":
        term = options.get("value") if options else value
        if options and "value" not in options:
            raise parsing_error("[term] query requires a [value]")
        return Term(name, [term], bool(options.get("case_insensitive", False)))
    if kind in ("match", "match_phrase"):
        text = options.get("query") if options else value
        if options and "query" not in options:
            raise parsing_error(f"[{kind}] query requires a [query]")
        return Match(
            name,
            text,
            str(options.get("operator", "or")).lower(),
            options.get("minimum_should_match"),
            phrase=kind == "match_phrase",
        )
    text = options.get("value") if options else value
    if options and kind == "wildcard" and text is None:
        text = options.get("wildcard")
    if not isinstance(text, str):
        raise parsing_error(f"[{kind}] query requires a string [value]")
    insensitive = bool(options.get("case_insensitive", False))
    return Prefix(name, text, insensitive) if kind == "prefix" else Wildcard(name, text, insensitive)


def query_score(node: Query) -> float:
    """Relevance is not modelled: 1.0 for scoring queries, 0.0 for a pure filter (as ES reports them)."""
    if isinstance(node, Bool) and not node.must and not node.should:
        return 0.0
    return 1.0


@dataclass
class RangeBounds:
    """A range query resolved for one field: normalised lower/upper bounds and inclusiveness."""

    lower: Any = None
    lower_inclusive: bool = True
    upper: Any = None
    upper_inclusive: bool = True


def resolve_range(node: Range, fld: Field, now_ms: int | None = None) -> RangeBounds:
    """Bounds of a range in the field's normalised form (date math and ``format`` for dates)."""
    bounds = RangeBounds()
    try:
        tz: timezone = parse_time_zone(node.time_zone) if node.time_zone else UTC
    except ValueError as exc:
        raise parsing_error(str(exc)) from None
    formats = split_formats(node.format) if node.format else (fld.formats or split_formats(None))

    def convert(value: Any, round_up: bool) -> Any:
        if fld.kind == DATE:
            return parse_date_math(value, formats, round_up=round_up, tz=tz, now_ms=now_ms)
        if fld.kind in (KEYWORD, TEXT):
            return value if isinstance(value, str) else convert_value(fld, value)
        return convert_value(fld, value)

    try:
        if node.gt is not None:
            bounds.lower, bounds.lower_inclusive = convert(node.gt, True), False
        if node.gte is not None:
            bounds.lower, bounds.lower_inclusive = convert(node.gte, False), True
        if node.lt is not None:
            bounds.upper, bounds.upper_inclusive = convert(node.lt, False), False
        if node.lte is not None:
            bounds.upper, bounds.upper_inclusive = convert(node.lte, True), True
    except (ValueError, TypeError, OverflowError) as exc:
        raise EsError(400, "parse_exception", f"failed to parse range bound for field [{fld.path}]: {exc}") from None
    return bounds


def term_values(node: Term, fld: Field) -> list[Any]:
    """The terms of a term/terms query in the field's normalised form (values that cannot fit are dropped)."""
    out: list[Any] = []
    for value in node.values:
        try:
            if fld.kind == DATE:
                out.append(parse_date_math(value, fld.formats))
            elif fld.kind == TEXT:
                out.append(value if isinstance(value, str) else convert_value(fld, value))
            else:
                out.append(convert_value(fld, value))
        except (ValueError, TypeError, OverflowError):
            if fld.kind not in (KEYWORD, TEXT):
                raise EsError(
                    400, "query_shard_exception", f'failed to create query: For input string: "{value}"'
                ) from None
    return out


def wildcard_regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    """An ES wildcard (``*``, ``?``, backslash escapes) as an anchored regex."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.DOTALL | (re.IGNORECASE if case_insensitive else 0))


class Evaluator:
    """Decides whether a document matches a query tree, reading values from ``_source`` via the mapping."""

    def __init__(self, mapping: Mapping, index: str) -> None:
        self.mapping = mapping
        self.index = index
        self.now_ms = int(time.time() * 1000)
        self._cache: dict[int, Any] = {}

    def matches(self, node: Query, doc_id: str, source: dict[str, Any]) -> bool:
        """True when the document ``(doc_id, source)`` matches ``node``."""
        if isinstance(node, MatchAll):
            return True
        if isinstance(node, MatchNone):
            return False
        if isinstance(node, Bool):
            return self._bool(node, doc_id, source)
        if isinstance(node, Ids):
            return doc_id in node.values
        if isinstance(node, Exists):
            return self._exists(node.field, doc_id, source)
        name = getattr(node, "field", "")
        if name == "_id":
            return self._id_matches(node, doc_id)
        if name == "_index":
            return self.index_matches(node)
        fld = self.mapping.field(name)
        if fld is None:
            return False
        values = field_values(fld, source) if fld.kind != TEXT else [str(v) for v in source_values(source, name)]
        if isinstance(node, Term):
            return self._term(node, fld, values)
        if isinstance(node, Range):
            return self._range(node, fld, values)
        if isinstance(node, Match):
            return self._match(node, fld, values)
        if isinstance(node, Prefix | Wildcard):
            return self._pattern(node, fld, values)
        raise parsing_error(f"unsupported query [{type(node).__name__}]")

    def _bool(self, node: Bool, doc_id: str, source: dict[str, Any]) -> bool:
        for clause in node.must + node.filter:
            if not self.matches(clause, doc_id, source):
                return False
        for clause in node.must_not:
            if self.matches(clause, doc_id, source):
                return False
        required = node.required_should()
        if required == 0:
            return True
        hits = 0
        for clause in node.should:
            if self.matches(clause, doc_id, source):
                hits += 1
                if hits >= required:
                    return True
        return False

    def _exists(self, name: str, doc_id: str, source: dict[str, Any]) -> bool:
        if name in ("_id", "_index"):
            return True
        fld = self.mapping.field(name)
        if fld is not None:
            if fld.kind == TEXT:
                return bool(source_values(source, name))
            return bool(field_values(fld, source))
        if name in self.mapping.objects:
            return any(self._exists(leaf.path, doc_id, source) for leaf in self.mapping.leaf_fields_under(name))
        return False

    def _id_matches(self, node: Query, doc_id: str) -> bool:
        if isinstance(node, Term):
            return doc_id in [str(v) for v in node.values]
        if isinstance(node, Prefix):
            return doc_id.startswith(node.value)
        if isinstance(node, Wildcard):
            return bool(wildcard_regex(node.pattern, node.case_insensitive).match(doc_id))
        if isinstance(node, Match):
            return doc_id == str(node.query)
        return False

    def index_matches(self, node: Query) -> bool:
        """Queries on ``_index`` are constant for one index."""
        if isinstance(node, Term):
            return self.index in [str(v) for v in node.values]
        if isinstance(node, Match):
            return self.index == str(node.query)
        if isinstance(node, Prefix | Wildcard):
            pattern = node.value + "*" if isinstance(node, Prefix) else node.pattern
            return fnmatch.fnmatchcase(self.index, pattern)
        return False

    def _term(self, node: Term, fld: Field, values: list[Any]) -> bool:
        if fld.kind == TEXT:
            tokens = {t for v in values for t in analyze(v)}
            wanted = {str(v) for v in node.values}
            if node.case_insensitive:
                return bool({t.lower() for t in tokens} & {w.lower() for w in wanted})
            return bool(tokens & wanted)
        key = id(node)
        wanted_values = self._cache.get(key)
        if wanted_values is None:
            wanted_values = set(term_values(node, fld))
            self._cache[key] = wanted_values
        if node.case_insensitive and fld.kind == KEYWORD:
            lowered = {str(w).lower() for w in wanted_values}
            return any(str(v).lower() in lowered for v in values)
        return any(v in wanted_values for v in values)

    def _range(self, node: Range, fld: Field, values: list[Any]) -> bool:
        key = id(node)
        bounds = self._cache.get(key)
        if bounds is None:
            bounds = resolve_range(node, fld, self.now_ms)
            self._cache[key] = bounds
        if fld.kind == TEXT:
            values = [t for v in values for t in analyze(v)]
        return any(_in_range(v, bounds) for v in values)

    def _match(self, node: Match, fld: Field, values: list[Any]) -> bool:
        if fld.kind != TEXT:
            probe = Term(node.field, [node.query])
            return self._term(probe, fld, values) if node.query is not None else False
        wanted = analyze(str(node.query))
        if not wanted:
            return False
        if node.phrase:
            return any(_contains_phrase(analyze(v), wanted) for v in values)
        tokens = {t for v in values for t in analyze(v)}
        hits = sum(1 for t in wanted if t in tokens)
        if node.operator == "and":
            return hits == len(wanted)
        required = 1
        if node.minimum_should_match is not None:
            required = max(1, resolve_minimum_should_match(node.minimum_should_match, len(wanted)))
        return hits >= required

    def _pattern(self, node: Prefix | Wildcard, fld: Field, values: list[Any]) -> bool:
        candidates = [t for v in values for t in analyze(v)] if fld.kind == TEXT else [str(v) for v in values]
        if isinstance(node, Prefix):
            if node.case_insensitive:
                return any(c.lower().startswith(node.value.lower()) for c in candidates)
            return any(c.startswith(node.value) for c in candidates)
        regex = wildcard_regex(node.pattern, node.case_insensitive)
        return any(regex.match(c) for c in candidates)


def _in_range(value: Any, bounds: RangeBounds) -> bool:
    try:
        if bounds.lower is not None and (
            value < bounds.lower or (value == bounds.lower and not bounds.lower_inclusive)
        ):
            return False
        return not (
            bounds.upper is not None
            and (value > bounds.upper or (value == bounds.upper and not bounds.upper_inclusive))
        )
    except TypeError:
        return False


def _contains_phrase(tokens: list[str], phrase: list[str]) -> bool:
    size = len(phrase)
    return any(tokens[i : i + size] == phrase for i in range(len(tokens) - size + 1))
