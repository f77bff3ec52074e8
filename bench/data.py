"""Synthetic log records in the blueprint's format, fast enough to make a million of them.

Why synthetic: the benchmarks need 10k to 1M records of realistic size (2-8 KB) with a known share of
duplicates and bad records, and the demo agent cannot produce that many in minutes. Every record is a
pure function of ``(seed, index)``, so generation needs no memory beyond one record, a duplicate can
rebuild the request of the record it repeats, and two runs produce the same bytes.

Two files per size:

- ``raw.jsonl``: what producers log (epoch-second or ISO timestamps, tool-call ``arguments`` as JSON
  strings as OpenAI returns them or as objects as AIVA logs them), duplicates and bad records mixed in.
  This is what the log store is loaded with.
- ``cache.jsonl``: what extraction hands to the dataset build. The good records (duplicates included,
  as the record cache accumulates them across incremental runs) in canonical form: ISO ``...Z``
  timestamps, ``arguments`` as objects, then written as the record cache writes them
  (:func:`agent_flywheel.records.cache.cache_line`: the request's arguments as JSON strings).
  ``check_cache_equivalence`` verifies on a sample that the canonical form is exactly what
  :func:`agent_flywheel.records.documents.to_document` makes of the raw record.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agent_flywheel.records.cache import cache_line

WORKLOAD_ID = "customer-support"
CLIENT_ID = "bench"
DUPLICATE_SHARE = 0.10
BAD_SHARE = 0.02
MIN_BYTES, MAX_BYTES = 2048, 8192
START_EPOCH = 1_746_000_000  # 2025-04-30

_WORDS = (  # noqa: SIM905 - a sentence of words reads better than a 75-item list
    "order package delivery refund return warranty invoice account billing address shipping tracking "
    "customer support agent request status update cancel replace exchange product item size colour "
    "headphones jacket laptop charger backpack monitor keyboard camera speaker watch blender kettle "
    "please thanks could would should today yesterday week month arrived damaged missing late early "
    "the a an to of for with on in at by from my your our their this that it is was will can "
).split()

_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string", "description": f"The {p.replace('_', ' ')}."} for p in params},
                "required": list(params[:2]),
            },
        },
    }
    for name, description, params in [
        ("get_order_status", "Look up the status of an order.", ("order_id", "user_id", "channel")),
        ("initiate_return", "Start a return for an item.", ("order_id", "item_id", "reason", "user_id")),
        ("search_products", "Search the catalogue.", ("query", "category", "max_price", "in_stock_only")),
        ("get_refund_status", "Refund status of a return.", ("order_id", "return_id", "user_id")),
        ("update_address", "Change a delivery address.", ("order_id", "street", "city", "postcode", "country")),
        ("cancel_order", "Cancel an order not yet shipped.", ("order_id", "reason", "user_id")),
        ("track_shipment", "Carrier tracking for a parcel.", ("tracking_number", "carrier")),
        ("escalate_to_human", "Hand the conversation to a person.", ("summary", "priority", "user_id")),
    ]
]
_TOOL_WEIGHTS = [30, 15, 20, 10, 6, 8, 8, 3]
_BAD_KINDS = (
    "empty_messages",
    "no_choices",
    "arguments_not_json",
    "bad_role",
    "missing_response",
    "content_not_text",
)


def _corpus(seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choices(_WORDS, k=60_000))


_CORPUS = _corpus(7)


def _text(rng: random.Random, length: int) -> str:
    start = rng.randrange(0, len(_CORPUS) - length - 1)
    return _CORPUS[start : start + length].strip() or "hello"


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one generated dataset holds (the counts are exact, from :func:`plan`)."""

    records: int
    seed: int = 1
    duplicate_share: float = DUPLICATE_SHARE
    bad_share: float = BAD_SHARE


def _kind(seed: int, index: int, spec: Spec) -> tuple[str, int]:
    """``("good", i)``, ``("duplicate", j)`` (repeats record j's request) or ``("bad:<kind>", i)``."""
    rng = random.Random(seed * 1_000_003 + index)
    draw = rng.random()
    if index > 10 and draw < spec.duplicate_share:
        return "duplicate", rng.randrange(0, index)
    if draw < spec.duplicate_share + spec.bad_share:
        return "bad:" + _BAD_KINDS[index % len(_BAD_KINDS)], index
    return "good", index


def _conversation(seed: int, index: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str, dict[str, Any]]:
    """(messages, tools, tool name, arguments) of record ``index``: a pure function of the two numbers."""
    rng = random.Random(seed * 7_919 + index * 104_729)
    target = rng.randint(MIN_BYTES, MAX_BYTES)
    tool_index = rng.choices(range(len(_TOOLS)), weights=_TOOL_WEIGHTS)[0]
    tool = _TOOLS[tool_index]["function"]
    offered = [_TOOLS[i] for i in sorted(set(rng.sample(range(len(_TOOLS)), rng.randint(3, 8))) | {tool_index})]
    user_id = f"U{rng.randrange(100_000):05d}"
    order_id = f"ORD-{index:08d}"
    arguments = {
        name: f"{order_id}" if name == "order_id" else _text(rng, 12) for name in tool["parameters"]["properties"]
    }
    arguments["user_id"] = user_id
    system = "You are a customer support assistant for an online shop. " + _text(rng, rng.randint(300, 900))
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    size = len(system) + len(orjson.dumps(offered)) + 600
    turn = 0
    while size < target - 500:
        history_call = {
            "id": f"call_{index}_{turn}",
            "type": "function",
            "function": {"name": "get_order_status", "arguments": {"order_id": f"ORD-{index:08d}", "user_id": user_id}},
        }
        question = _text(rng, rng.randint(80, 400))
        result = _text(rng, rng.randint(80, 500))
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": None, "tool_calls": [history_call]},
            {"role": "tool", "content": result, "tool_call_id": f"call_{index}_{turn}"},
        ]
        size += len(question) + len(result) + 260
        turn += 1
    last = f"About order {order_id}: " + _text(rng, max(20, min(900, target - size)))
    messages.append({"role": "user", "content": last})
    return messages, offered, tool["name"], arguments


def _response(
    rng: random.Random, index: int, tool_name: str, arguments: dict[str, Any], as_string: bool
) -> dict[str, Any]:
    call_args: Any = json.dumps(arguments) if as_string else arguments
    return {
        "id": f"chatcmpl-{index:010d}",
        "object": "chat.completion",
        "created": START_EPOCH + index,
        "model": "meta/llama-3.3-70b-instruct",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": tool_name, "arguments": call_args},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 900 + rng.randrange(900),
            "completion_tokens": 20 + rng.randrange(40),
            "total_tokens": 0,
        },
    }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _arguments_as_strings(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {
                **message,
                "tool_calls": [
                    {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                    for c in calls
                ],
            }
        out.append(message)
    return out


def record(seed: int, index: int, spec: Spec) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """``(kind, raw record, canonical record or None for a bad one)`` of record ``index``."""
    kind, source = _kind(seed, index, spec)
    messages, tools, tool_name, arguments = _conversation(seed, source)
    rng = random.Random(seed * 31 + index)
    epoch = START_EPOCH + index  # one record a second; newer records have higher indexes
    as_string = index % 3 != 0  # two thirds OpenAI-style string arguments, one third AIVA-style objects
    response = _response(rng, index, tool_name, arguments, as_string)
    request: dict[str, Any] = {
        "messages": _arguments_as_strings(messages) if as_string else messages,
        "tools": tools,
        "model": "meta/llama-3.3-70b-instruct",
        "temperature": 0.2,
        "max_tokens": 1024,
    }
    raw: dict[str, Any] = {
        "timestamp": epoch if index % 2 else _iso(epoch),
        "workload_id": WORKLOAD_ID,
        "client_id": CLIENT_ID,
        "request": request,
        "response": response,
    }
    if kind.startswith("bad:"):
        _spoil(raw, kind[4:])
        return kind, raw, None
    canonical_request = {**request, "messages": messages}
    canonical_response = {
        **response,
        "choices": [
            {
                **response["choices"][0],
                "message": {
                    **response["choices"][0]["message"],
                    "tool_calls": [
                        {
                            "id": f"call_{index}",
                            "type": "function",
                            "function": {"name": tool_name, "arguments": arguments},
                        }
                    ],
                },
            }
        ],
    }
    canonical = {
        "timestamp": _iso(epoch),
        "workload_id": WORKLOAD_ID,
        "client_id": CLIENT_ID,
        "request": canonical_request,
        "response": canonical_response,
    }
    return kind, raw, canonical


def _spoil(raw: dict[str, Any], kind: str) -> None:
    """Make one record invalid in a way the log index still accepts (request/response are not indexed)."""
    if kind == "empty_messages":
        raw["request"]["messages"] = []
    elif kind == "no_choices":
        raw["response"]["choices"] = []
    elif kind == "arguments_not_json":
        raw["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{order_id: ORD-1, user"
    elif kind == "bad_role":
        raw["request"]["messages"][-1]["role"] = "customer"
    elif kind == "missing_response":
        del raw["response"]
    elif kind == "content_not_text":
        raw["request"]["messages"][-1]["content"] = 12345


@dataclasses.dataclass
class Counts:
    """What a generated file holds."""

    records: int = 0
    good: int = 0
    duplicates: int = 0
    bad: int = 0
    raw_bytes: int = 0
    cache_bytes: int = 0
    cache_records: int = 0
    distinct: int = 0

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def iter_records(spec: Spec) -> Iterator[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """Every record of ``spec`` in index order."""
    for index in range(spec.records):
        yield record(spec.seed, index, spec)


def generate(spec: Spec, directory: Path) -> Counts:
    """Write ``raw.jsonl`` and ``cache.jsonl`` for ``spec`` into ``directory`` (reused when complete)."""
    directory.mkdir(parents=True, exist_ok=True)
    done = directory / "counts.json"
    if done.exists():
        return Counts(**json.loads(done.read_text()))
    counts = Counts()
    sources: set[int] = set()
    with open(directory / "raw.jsonl.tmp", "wb") as raw_file, open(directory / "cache.jsonl.tmp", "wb") as cache_file:
        for index in range(spec.records):
            kind, raw, canonical = record(spec.seed, index, spec)
            counts.records += 1
            line = orjson.dumps(raw) + b"\n"
            raw_file.write(line)
            counts.raw_bytes += len(line)
            if canonical is None:
                counts.bad += 1
                continue
            if kind == "duplicate":
                counts.duplicates += 1
            else:
                counts.good += 1
            sources.add(_kind(spec.seed, index, spec)[1])  # the conversation this record carries
            cline = cache_line(canonical)
            cache_file.write(cline)
            counts.cache_bytes += len(cline)
            counts.cache_records += 1
    counts.distinct = len(sources)
    (directory / "raw.jsonl.tmp").rename(directory / "raw.jsonl")
    (directory / "cache.jsonl.tmp").rename(directory / "cache.jsonl")
    done.write_text(json.dumps(counts.to_json()))
    return counts


def check_cache_equivalence(spec: Spec, sample: int = 200) -> int:
    """Validate a sample of raw records with the project's validator; their documents must equal the cache's.

    Returns how many were compared; raises ``AssertionError`` on the first difference, so the dataset
    build benchmark is known to read exactly what extraction would have written.
    """
    from agent_flywheel.records.documents import to_document
    from agent_flywheel.records.schema import LogRecord
    from agent_flywheel.records.validation import validate_record

    compared = 0
    rng = random.Random(spec.seed)
    for index in sorted(rng.sample(range(spec.records), min(sample, spec.records))):
        kind, raw, canonical = record(spec.seed, index, spec)
        result = validate_record(raw, source=f"bench:{index}")
        if canonical is None:
            assert not isinstance(result, LogRecord), f"record {index} ({kind}) should be quarantined"
            continue
        assert isinstance(result, LogRecord), f"record {index} ({kind}) should be valid: {result}"
        assert to_document(result) == canonical, f"record {index}: canonical form differs"
        compared += 1
    return compared
