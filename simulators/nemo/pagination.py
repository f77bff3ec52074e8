"""List endpoints the NeMo way: ``page``/``page_size``/``sort``/``filter[...]``/``search[...]`` and the envelope.

The SDK's auto-pagination asks for ``page + 1`` until a page comes back with an empty ``data``; so a
page past the end is a 200 with ``data: []``, never a 404. Filters arrive bracket-nested
(``filter[peft][finetuning_type]=lora``) with every value a string; :func:`matches` compares such a
string against a typed JSON value the way a user would expect (``"true"`` matches ``True``, ``"2"``
matches ``2``, a comma list matches any of its parts, ``{"gte": ..., "lte": ...}`` is a range).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simulators.nemo.errors import unprocessable

Record = dict[str, Any]
Resolver = Callable[[Record], Any]

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)((?:\[[^\[\]]*\])*)$")
_RANGE_KEYS = frozenset({"gte", "lte", "gt", "lt", "start", "end", "eq"})
DEFAULT_SORTABLE = frozenset({"created_at", "updated_at", "name", "id"})


@dataclass
class ListQuery:
    """A parsed list request."""

    page: int = 1
    page_size: int = 10
    sort: str = "created_at"
    filters: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)


def split_bracket_key(key: str) -> list[str] | None:
    """``filter[peft][lora]`` -> ``["filter", "peft", "lora"]``; None for a key that is not of that form."""
    match = _KEY.match(key)
    if not match:
        return None
    return [match.group(1), *_BRACKETS.findall(match.group(2))]


def _set_nested(target: dict[str, Any], path: list[str], value: str) -> None:
    node = target
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise unprocessable(
            ["query", name], "Input should be a valid integer, unable to parse string as an integer", raw, "int_parsing"
        ) from None
    if value < 1:
        raise unprocessable(["query", name], "Input should be greater than or equal to 1", raw, "greater_than_equal")
    return value


def parse_list_query(
    params: Iterable[tuple[str, str]],
    default_page_size: int = 10,
    default_sort: str = "created_at",
    sortable: frozenset[str] = DEFAULT_SORTABLE,
) -> ListQuery:
    """Read ``page``, ``page_size``, ``sort``, ``filter[...]``, ``search[...]``; bad values are a FastAPI-shaped 422."""
    query = ListQuery(page_size=default_page_size, sort=default_sort)
    for key, raw in params:
        if key == "page":
            query.page = _positive_int("page", raw)
        elif key == "page_size":
            query.page_size = _positive_int("page_size", raw)
        elif key == "sort":
            if raw.lstrip("-") not in sortable:
                allowed = ", ".join(f"'{s}', '-{s}'" for s in sorted(sortable))
                raise unprocessable(["query", "sort"], f"Input should be {allowed}", raw, "enum")
            query.sort = raw
        else:
            path = split_bracket_key(key)
            if path and path[0] in ("filter", "search") and len(path) > 1 and all(path[1:]):
                _set_nested(query.filters if path[0] == "filter" else query.search, path[1:], raw)
    return query


def _truthy(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _in_range(value: Any, bounds: Mapping[str, Any]) -> bool:
    if value is None:
        return False
    number = _as_number(value)
    for op, raw in bounds.items():
        bound_number = _as_number(raw)
        left: Any
        right: Any
        if number is not None and bound_number is not None:
            left, right = number, bound_number
        else:
            left, right = str(value).replace(" ", "T"), str(raw).replace(" ", "T")
        ok = {
            "gte": left >= right,
            "start": left >= right,
            "lte": left <= right,
            "end": left <= right,
            "gt": left > right,
            "lt": left < right,
            "eq": left == right,
        }[op]
        if not ok:
            return False
    return True


def _scalar_equals(value: Any, expected: str) -> bool:
    if value is None:
        return expected.strip().lower() in ("null", "none", "")
    if isinstance(value, bool):
        return _truthy(expected) is value
    number = _as_number(value) if isinstance(value, int | float) else None
    if number is not None:
        other = _as_number(expected)
        return other is not None and math.isclose(number, other)
    if isinstance(value, Mapping):
        truth = _truthy(expected)
        if truth is not None:
            return bool(value) is truth
        ref = f"{value.get('namespace')}/{value.get('name')}"
        return expected in (value.get("id"), ref, value.get("name"))
    if isinstance(value, list):
        return any(_scalar_equals(v, expected) for v in value)
    return str(value) == expected


def matches(value: Any, expected: Any, substring: bool = False) -> bool:
    """Does a stored JSON value satisfy a filter (or, with ``substring``, a search) value from the query?"""
    if isinstance(expected, Mapping):
        if expected and set(expected) <= _RANGE_KEYS:
            return _in_range(value, expected)
        if isinstance(value, Mapping):
            return all(matches(value.get(k), v, substring) for k, v in expected.items())
        return False
    text = str(expected)
    if substring and isinstance(value, str):
        return any(part.lower() in value.lower() for part in text.split(","))
    if _scalar_equals(value, text):
        return True
    if "," in text:
        return any(_scalar_equals(value, part) for part in text.split(",") if part)
    return False


def _field(record: Record, key: str, resolvers: Mapping[str, Resolver]) -> Any:
    resolver = resolvers.get(key)
    return resolver(record) if resolver else record.get(key)


def select(
    records: Iterable[Record], query: ListQuery, resolvers: Mapping[str, Resolver] | None = None
) -> list[Record]:
    """Records passing every ``filter[...]`` (exact) and ``search[...]`` (substring) condition."""
    resolvers = resolvers or {}
    kept = []
    for record in records:
        if all(matches(_field(record, k, resolvers), v) for k, v in query.filters.items()) and all(
            matches(_field(record, k, resolvers), v, substring=True) for k, v in query.search.items()
        ):
            kept.append(record)
    return kept


def _sort_key(value: Any) -> tuple[int, float, str]:
    if value is None:
        return (1, 0.0, "")
    number = _as_number(value) if isinstance(value, int | float) else None
    if number is not None:
        return (0, number, "")
    return (0, 0.0, str(value))


def order(records: list[Record], sort: str, resolvers: Mapping[str, Resolver] | None = None) -> list[Record]:
    """Sorted by ``sort`` (``-`` prefix: descending); stable, so equal keys keep creation order."""
    resolvers = resolvers or {}
    key = sort.lstrip("-")
    return sorted(records, key=lambda r: _sort_key(_field(r, key, resolvers)), reverse=sort.startswith("-"))


def envelope(records: list[Record], query: ListQuery) -> dict[str, Any]:
    """One page of already filtered and sorted records in the ``{object, data, pagination, sort}`` envelope."""
    total = len(records)
    start = (query.page - 1) * query.page_size
    data = records[start : start + query.page_size]
    return {
        "object": "list",
        "data": data,
        "pagination": {
            "page": query.page,
            "page_size": query.page_size,
            "current_page_size": len(data),
            "total_pages": math.ceil(total / query.page_size),
            "total_results": total,
        },
        "sort": query.sort,
    }


def list_page(
    records: Iterable[Record],
    params: Iterable[tuple[str, str]],
    *,
    default_page_size: int = 10,
    resolvers: Mapping[str, Resolver] | None = None,
    sortable: frozenset[str] = DEFAULT_SORTABLE,
) -> dict[str, Any]:
    """Parse the query, filter, sort and paginate: what every list endpoint returns."""
    query = parse_list_query(params, default_page_size=default_page_size, sortable=sortable)
    return envelope(order(select(records, query, resolvers), query.sort, resolvers), query)
