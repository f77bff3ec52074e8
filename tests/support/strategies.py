"""Hypothesis strategies for log records: valid ones, hostile JSON and valid records with random damage."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

safe_text = st.text(max_size=30)
odd_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=20),  # includes lone surrogates
    st.sampled_from(["\ud800", "x\udfffy", "\x00", "\u202e", "🧾" * 3, "\ufeff", "NaN", ""]),
)
safe_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), safe_text
)
# Hypothesis rarely draws NaN or lone surrogates by itself, so the hostile values are listed explicitly.
SPECIALS = [
    math.nan,
    math.inf,
    -math.inf,
    10**400,
    2**64,
    -1,
    "\ud800",
    "x\udfffy",
    "",
    "\x00",
    "\u202e",
    True,
    None,
    [],
    {},
]
hostile_scalars = st.one_of(st.sampled_from(SPECIALS), safe_scalars, st.floats(), st.integers(), odd_text)
safe_json = st.recursive(
    safe_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(safe_text, inner, max_size=3),
    max_leaves=8,
)
hostile_json = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.one_of(safe_text, odd_text), inner, max_size=3),
    max_leaves=10,
)

BASE_RECORD: dict[str, Any] = {
    "timestamp": 1746138417,
    "workload_id": "w",
    "client_id": "c",
    "request": {"messages": [{"role": "user", "content": "hi"}]},
    "response": {"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
}
non_empty_name = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")
T_MIN = datetime(2000, 1, 1, tzinfo=UTC)


@st.composite
def timestamps(draw: st.DrawFn) -> Any:
    moment = T_MIN + timedelta(
        seconds=draw(st.integers(0, 40 * 365 * 86400)), microseconds=draw(st.integers(0, 999999))
    )
    form = draw(st.sampled_from(["int", "float", "numeric", "iso_z", "iso_naive", "iso_offset"]))
    if form == "int":
        return int(moment.timestamp())
    if form == "float":
        return moment.timestamp()
    if form == "numeric":
        return str(int(moment.timestamp()))
    if form == "iso_z":
        return moment.isoformat().replace("+00:00", "Z")
    if form == "iso_naive":
        return moment.replace(tzinfo=None).isoformat()
    return moment.astimezone(datetime.now().astimezone().tzinfo).isoformat()


@st.composite
def tool_calls(draw: st.DrawFn) -> list[dict[str, Any]]:
    calls = []
    for _ in range(draw(st.integers(1, 2))):
        arguments = draw(st.dictionaries(safe_text, safe_json, max_size=3))
        as_string = draw(st.booleans())
        calls.append(
            {
                "id": draw(safe_text),
                "type": "function",
                "function": {
                    "name": draw(non_empty_name),
                    "arguments": json.dumps(arguments) if as_string else arguments,
                },
            }
        )
    return calls


@st.composite
def contents(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(st.text(max_size=50))
    return [{"type": "text", "text": draw(safe_text)} for _ in range(draw(st.integers(0, 2)))]


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        role = draw(st.sampled_from(["system", "user", "assistant", "tool", "developer"]))
        message: dict[str, Any] = {"role": role, "content": draw(contents())}
        if role == "assistant" and draw(st.booleans()):
            message["tool_calls"] = draw(tool_calls())
        messages.append(message)
    answer: dict[str, Any] = {"role": "assistant", "content": draw(st.one_of(st.none(), st.text(max_size=40)))}
    if draw(st.booleans()):
        answer["tool_calls"] = draw(tool_calls())
    if not answer.get("tool_calls") and not (answer["content"] or "").strip():
        # an answer needs text or a tool call (an empty one is quarantined as empty_answer)
        answer["content"] = draw(st.text(max_size=40).filter(str.strip))
    request: dict[str, Any] = {"model": "m", "messages": messages}
    if draw(st.booleans()):
        request["tools"] = [{"type": "function", "function": {"name": draw(non_empty_name), "parameters": {}}}]
    raw = {
        "timestamp": draw(timestamps()),
        "workload_id": draw(non_empty_name),
        "client_id": draw(non_empty_name),
        "request": request,
        "response": {"choices": [{"index": 0, "message": answer}], "usage": draw(safe_json)},
    }
    raw.update(
        draw(st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: k not in raw), safe_json, max_size=2))
    )
    return raw


def all_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths.extend(all_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths.extend(all_paths(child, (*prefix, index)))
    return paths


@st.composite
def mutated_records(draw: st.DrawFn) -> Any:
    """A valid record with a few random paths deleted or replaced by hostile values (or wrapped deeply)."""
    raw: Any = draw(valid_records())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(all_paths(raw)))
        action = draw(st.sampled_from(["delete", "replace", "deep"]))
        if not path:
            raw = draw(hostile_json) if action == "replace" else raw
            continue
        parent: Any = raw
        for part in path[:-1]:
            parent = parent[part]
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(hostile_json)
        else:
            nested: Any = parent[path[-1]]
            for _ in range(draw(st.integers(60, 300))):
                nested = [nested]
            parent[path[-1]] = nested
        if not isinstance(raw, dict | list):
            break
    return raw
