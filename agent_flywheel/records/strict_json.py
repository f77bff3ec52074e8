"""Whether a value is strict, encodable JSON within a record's size and depth limits, and what stops it."""

from __future__ import annotations

import math
from typing import Any

import orjson

from agent_flywheel.records.problems import Reason, path_text, shown

#: A record bigger than this (serialised, in bytes) is quarantined as ``too_large``. Real chat logs are
#: kilobytes; a multi-megabyte record is a bug upstream (a base64 image, a runaway loop) and would bloat
#: every dataset file it lands in.
MAX_RECORD_BYTES = 8 * 1024 * 1024
#: Nesting deeper than this is quarantined as ``too_large``: JSON Schemas of tools are the deepest legitimate
#: part (about 10-20 levels); deeper structures only come from broken or hostile producers and would hit
#: Python's recursion limit in ``json`` and in the conversation hash.
MAX_RECORD_DEPTH = 64


JSON_WHITESPACE = " \t\r\n"


def reject_constant(name: str) -> Any:
    """``parse_constant`` for ``json.loads``: NaN and the infinities are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def json_problem(value: Any, max_depth: int, max_bytes: int, skip_top: frozenset[str] = frozenset()) -> Any:
    """The first thing that stops ``value`` being strict, encodable JSON within the limits, or None.

    Iterative (no recursion limit), stops as soon as the size budget is spent (so shared references
    or cycles cannot make it run long), and checks non-ASCII strings for lone surrogates by encoding
    them, which is also how their UTF-8 size is measured. Returns ``(reason, path, problem)``.
    """
    size = 0
    # (value, depth, path as a linked list (parent, key)) - O(1) per node, a path is built only on error
    stack: list[tuple[Any, int, Any]] = [(value, 0, None)]
    while stack:
        item, depth, link = stack.pop()
        if depth > max_depth:
            return Reason.TOO_LARGE, _unlink(link), f"nested deeper than {max_depth} levels"
        if isinstance(item, str):
            if item.isascii():
                size += len(item) + 2
            else:
                try:
                    size += len(item.encode("utf-8")) + 2
                except UnicodeEncodeError:
                    return Reason.NOT_JSON, _unlink(link), "string holds a lone surrogate (not valid Unicode)"
        elif isinstance(item, bool) or item is None:
            size += 5
        elif isinstance(item, int):
            size += 8
        elif isinstance(item, float):
            if not math.isfinite(item):
                return Reason.NOT_JSON, _unlink(link), f"{item!r} is not valid JSON"
            size += 8
        elif isinstance(item, dict):
            size += 2
            for key, child in item.items():
                if not isinstance(key, str):
                    return Reason.NOT_JSON, _unlink(link), f"object key {shown(key)} is not a string"
                try:
                    size += len(key.encode("utf-8")) + 4
                except UnicodeEncodeError:
                    return Reason.NOT_JSON, _unlink(link), "object key holds a lone surrogate"
                if depth == 0 and key in skip_top:
                    continue
                stack.append((child, depth + 1, (link, key)))
        elif isinstance(item, list):
            size += 2
            for index, child in enumerate(item):
                size += 1
                stack.append((child, depth + 1, (link, index)))
        else:
            return Reason.NOT_JSON, _unlink(link), f"holds a {type(item).__name__}, which JSON cannot represent"
        if size > max_bytes:
            return Reason.TOO_LARGE, None, f"larger than {max_bytes} bytes"
    return None


def _unlink(link: Any) -> str | None:
    parts: list[str | int] = []
    while link is not None:
        link, key = link
        parts.append(key)
    return path_text(tuple(reversed(parts))) if parts else None


# Refuse every subclass and non-JSON type (datetimes and dataclasses included) rather than convert it;
# indent by two spaces, so that a node at depth d starts a line with 2d spaces.
_PLAIN_JSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_INDENT_2
)
# json_problem counts at most this many bytes per byte of orjson's text (8 for an integer written as 1 digit).
_SIZE_PER_TEXT_BYTE = 8


def plainly_json(value: Any, max_depth: int, max_bytes: int, skip_top: frozenset[str] = frozenset()) -> bool:
    """True only when :func:`json_problem` would find nothing; the same check done in C, for trees.

    orjson writes the value (it refuses non-string keys, lone surrogates, integers beyond 64 bits,
    subclasses and every type JSON does not have) indented, so a line indented deeper than
    ``2 * max_depth`` spaces is a node nested too deep; reading the text back gives a value equal to the
    original only if nothing was converted on the way (NaN and infinities become null, tuples lists,
    enums and UUIDs their values). ``json_problem`` counts at most 8 bytes per byte of that text, so an
    eighth of ``max_bytes`` is within the limit. False means "not sure": run ``json_problem``, which
    also names the problem. Only for trees (what a JSON parser returns): orjson writes a shared object
    once per reference, so a small structure that shares objects at every level could expand without
    bound, where ``json_problem`` stops at ``max_bytes``.
    """
    slack = 0
    skipped = [key for key in skip_top if key in value] if type(value) is dict else []
    if skipped:  # json_problem counts a skipped key but not its value
        slack = sum(len(key.encode("utf-8")) + 4 for key in skipped)
        value = {key: child for key, child in value.items() if key not in skip_top}
    try:
        text = orjson.dumps(value, option=_PLAIN_JSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: not plain JSON, or nested past orjson's own limit
        return False
    if _SIZE_PER_TEXT_BYTE * len(text) + slack > max_bytes:
        return False
    if b"\n" + b" " * (2 * max_depth + 2) in text:
        return False
    try:
        return bool(orjson.loads(text) == value)
    except (orjson.JSONDecodeError, RecursionError):  # pragma: no cover - orjson reads what it writes
        return False


def is_json(value: Any, max_depth: int, max_bytes: int, *, parsed: bool) -> bool:
    """Whether ``value`` is strict, encodable JSON within the limits (see :func:`json_problem`)."""
    if parsed and plainly_json(value, max_depth, max_bytes):
        return True
    return json_problem(value, max_depth, max_bytes) is None
