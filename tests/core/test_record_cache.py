"""The record cache and its key files: a build from the cache equals a build from the records in hand,
whatever state the key files are in, and a failed write leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig
from agent_flywheel.datasets.build import DatasetBuild, build_datasets
from agent_flywheel.datasets.formats import to_training_example
from agent_flywheel.jsonlines import load_line
from agent_flywheel.records.cache import RecordCache
from agent_flywheel.records.keys import KEYS_VERSION, key_file, read_key_file, record_keys
from tests.support.dataset_records import mixed, record

MODELS = [
    NIMConfig(model_name="meta/llama-3.2-1b-instruct", context_length=8192),
    NIMConfig(model_name="meta/llama-3.1-8b-instruct", context_length=32768),
]


def documents() -> list[dict[str, Any]]:
    """Mixed records with duplicates, records of no usable shape and one unparseable tool call."""
    docs = mixed(150)
    docs += [dict(docs[i], timestamp=1_800_000_000 + i) for i in range(0, 40, 3)]  # newer duplicates
    docs.append({"timestamp": 1, "request": {"messages": []}, "response": {"choices": []}})
    docs.append({"timestamp": 2, "request": {"messages": [{"role": "user", "content": "hi"}]}})
    bad = record(999, "get_order")
    bad["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    docs.append(bad)
    for i, arguments in enumerate([{"order_id": "é-7", "qty": 1.5e-05}, '{"order_id": "8"}', None]):
        follow_up = record(2000 + i, "get_order")  # a second turn: the first call and its result in the history
        call = {"id": f"h-{i}", "type": "function", "function": {"name": "get_order", "arguments": arguments}}
        follow_up["request"]["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"h-{i}", "content": "shipped"},
        ]
        docs.append(follow_up)
    return docs


def fill(cache: RecordCache, docs: list[dict[str, Any]], segments: int = 3) -> None:
    step = -(-len(docs) // segments)
    for i in range(segments):
        cache.append(docs[i * step : (i + 1) * step], label=f"part-{i}")


def build(records: Any, out: Path, **split: Any) -> DatasetBuild:
    cfg = DataSplitConfig(eval_size=20, val_ratio=0.1, min_total_records=10, limit=1000, **split)
    return build_datasets(records, cfg, ICLConfig(), EvaluationConfig(), MODELS, out)


def files(result: DatasetBuild) -> dict[str, bytes]:
    return {p.relative_to(result.out_dir).as_posix(): p.read_bytes() for p in result.out_dir.rglob("*") if p.is_file()}


def test_a_build_from_the_cache_equals_a_build_from_the_records(tmp_path: Path) -> None:
    docs = documents()
    cache = RecordCache(tmp_path / "records", "support", "dev")
    fill(cache, docs)
    assert len(cache.segments()) == 3
    assert all(read_key_file(segment) is not None for segment in cache.segments())
    assert cache.count() == len(docs)

    # the request's tool-call arguments are kept as the JSON strings every dataset line needs
    history = [load_line(line)["request"]["messages"] for s in cache.segments() for line in s.read_bytes().splitlines()]
    stored = [c["function"]["arguments"] for ms in history for m in ms for c in m.get("tool_calls") or []]
    assert stored == ['{"order_id": "é-7", "qty": 1.5e-05}', '{"order_id": "8"}', None]  # absent stays absent

    from_cache = build(cache, tmp_path / "cache")
    from_list = build(docs, tmp_path / "list")
    assert files(from_cache) == files(from_list)
    assert from_cache.removed == from_list.removed
    assert from_cache.removed["duplicate"] == 14 and from_cache.removed["invalid_format"] == 2
    assert from_cache.removed["unparseable_arguments"] == 1
    assert from_cache.counts["read"] == len(docs)


def test_unparseable_arguments_stay_when_arguments_are_not_parsed(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path / "records", "support", "dev")
    fill(cache, documents())
    result = build(cache, tmp_path / "out", parse_function_arguments=False)
    assert "unparseable_arguments" not in result.removed


@pytest.mark.parametrize("damage", ["missing", "old_version", "segment_grew", "truncated", "garbage"])
def test_a_missing_or_stale_key_file_is_rebuilt_from_the_segment(tmp_path: Path, damage: str) -> None:
    docs = documents()
    cache = RecordCache(tmp_path / "records", "support", "dev")
    fill(cache, docs[:-20], segments=2)
    segment = cache.segments()[0]
    keys = key_file(segment)
    if damage == "missing":
        keys.unlink()
    elif damage == "old_version":
        header, _, body = keys.read_bytes().partition(b"\n")
        keys.write_bytes(json.dumps({**json.loads(header), "version": KEYS_VERSION - 1}).encode() + b"\n" + body)
    elif damage == "segment_grew":  # appended to behind the cache's back: the new records must count
        with segment.open("ab") as handle:
            handle.writelines(json.dumps(d).encode() + b"\n" for d in docs[-20:])
    elif damage == "truncated":
        keys.write_bytes(keys.read_bytes()[:-7])
    else:
        keys.write_bytes(b"\x00\x01 not a key file")

    in_cache = list(cache.iter_documents())
    assert cache.count() == len(in_cache)
    reference = build(in_cache, tmp_path / "reference")
    result = build(cache, tmp_path / "out")
    assert files(result) == files(reference)
    assert read_key_file(segment) is not None  # saved again for the next build


def test_a_corrupt_line_is_counted_not_fatal(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path / "records", "support", "dev")
    fill(cache, mixed(60), segments=1)
    segment = cache.segments()[0]
    with segment.open("ab") as handle:
        handle.write(b'{"timestamp": 5, "request": \n')
    result = build(cache, tmp_path / "out")
    assert result.removed["invalid_format"] == 1
    assert result.counts["read"] == 61


def test_a_failed_write_leaves_no_segment(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path / "records", "support", "dev")

    def failing() -> Any:
        yield from mixed(5)
        raise RuntimeError("log store went away")

    with pytest.raises(RuntimeError):
        cache.append(failing(), label="run")
    assert cache.segments() == []
    assert list(cache.dir.iterdir()) == []
    assert cache.append([], label="empty") == (None, 0)
    assert list(cache.dir.iterdir()) == []


def test_keys_of_a_document_equal_keys_of_its_line(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path / "records", "support", "dev")
    docs = documents()
    fill(cache, docs, segments=1)
    for doc, line in zip(docs, cache.segments()[0].read_bytes().splitlines(), strict=True):
        assert record_keys(doc) == record_keys(load_line(line))


def test_training_example_shares_unchanged_messages_and_leaves_the_record_alone() -> None:
    rec = record(3, "get_order")
    rec["request"]["messages"].append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "get_order", "arguments": {"order_id": "1"}}}
            ],
        }
    )
    before = json.dumps(rec, sort_keys=True)
    line = to_training_example(rec, tool_calling=True)
    assert json.dumps(rec, sort_keys=True) == before
    assert line["messages"][0] is rec["request"]["messages"][0]
    assert line["messages"][2]["content"] == ""
    assert line["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"order_id": "1"}'
    assert line["messages"][-1]["tool_calls"][0]["function"]["arguments"] == '{"order_id": "3"}'
