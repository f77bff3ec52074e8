"""Tests for agent_flywheel.datasets: filtering, dedupe, stratified split, ICL selection, files and manifest."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig, RemoteModelConfig
from agent_flywheel.datasets.build import DatasetBuild, InsufficientRecordsError, WorkloadType, build_datasets
from agent_flywheel.datasets.formats import to_eval_record, to_training_example
from agent_flywheel.datasets.icl_selection import (
    estimate_tokens,
    fit_examples,
    relevance_coverage_order,
    round_robin,
    uniform_bins,
)
from agent_flywheel.datasets.split import allocate_stratified, split_sizes, stratified_split
from agent_flywheel.records.conversation import conversation_hash, strip_examples
from agent_flywheel.records.keys import NO_TOOL
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.tool_arguments import arguments_string
from agent_flywheel.records.validation import validate_record
from tests.support.dataset_records import TOOLS, mixed, record

SMALL = NIMConfig(model_name="meta/llama-3.2-1b-instruct", context_length=8192)
BIG = NIMConfig(model_name="meta/llama-3.1-8b-instruct", context_length=32768)


def split_cfg(**overrides: Any) -> DataSplitConfig:
    values: dict[str, Any] = {"eval_size": 20, "val_ratio": 0.1, "min_total_records": 10, "limit": 1000}
    values["min_train_records"] = 1  # these tests are about other rules; test_split_rule.py covers this one
    values.update(overrides)
    return DataSplitConfig(**values)


def build(
    records: Any,
    tmp_path: Path,
    *,
    split: DataSplitConfig | None = None,
    icl: ICLConfig | None = None,
    evaluation: EvaluationConfig | None = None,
    models: list[NIMConfig] | None = None,
    name: str = "out",
    **kwargs: Any,
) -> DatasetBuild:
    return build_datasets(
        records,
        split or split_cfg(),
        icl or ICLConfig(),
        evaluation or EvaluationConfig(),
        [SMALL] if models is None else models,
        tmp_path / name,
        **kwargs,
    )


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def manifest(result: DatasetBuild) -> dict:
    return json.loads(result.manifest_path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# Filtering, workload type, dedupe, limit
# --------------------------------------------------------------------------------------------------


def test_workload_type_is_detected(tmp_path: Path) -> None:
    assert build(mixed(40), tmp_path).workload_type == WorkloadType.TOOL_CALLING
    generic = [record(i, None) for i in range(40)]
    result = build(generic, tmp_path, name="generic")
    assert result.workload_type == WorkloadType.GENERIC
    assert "tools" not in lines(result.train_path)[0]


def test_blueprint_bug_5_no_call_records_are_kept_in_every_split(tmp_path: Path) -> None:
    result = build(mixed(200), tmp_path)
    assert all(result.per_tool[split].get(NO_TOOL, 0) > 0 for split in ("eval", "validation", "train"))
    assert result.removed == {}
    eval_lines = lines(result.eval_path)
    assert any(not line["response"]["choices"][0]["message"].get("tool_calls") for line in eval_lines)


def test_no_call_records_are_counted_when_excluded(tmp_path: Path) -> None:
    result = build(mixed(200), tmp_path, evaluation=EvaluationConfig(include_no_call_records=False))
    assert result.removed == {"no_tool_call": 40}
    assert all(NO_TOOL not in counts for counts in result.per_tool.values())
    assert result.counts["usable"] == 160


def test_invalid_and_low_quality_records_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    records = mixed(50)
    records.append({"request": {"messages": []}, "response": {}})
    records.append("not a record")
    bad_type = record(1000, "get_order")
    bad_type["response"]["choices"][0]["message"]["tool_calls"][0]["type"] = "retrieval"
    bad_args = record(1001, "get_order")
    bad_args["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    records += [bad_type, bad_args]
    result = build(records, tmp_path)
    assert result.removed == {"invalid_format": 2, "malformed_tool_call": 1, "unparseable_arguments": 1}
    assert result.counts["read"] == 54 and result.counts["usable"] == 50
    assert manifest(result)["removed"] == result.removed


def test_unparseable_arguments_are_kept_when_parsing_is_off(tmp_path: Path) -> None:
    records = mixed(30)
    records[1]["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = "{not json"
    result = build(records, tmp_path, split=split_cfg(parse_function_arguments=False))
    assert result.removed == {}


def test_dedupe_keeps_the_newest_and_no_conversation_is_in_two_splits(tmp_path: Path) -> None:
    records = mixed(60)
    old = record(7, "return_item", question="Where is my parcel?", ts=1_600_000_000)
    new = record(8, "track_shipment", question="Where is  my parcel? ", ts=1_800_000_000)  # whitespace differs
    records += [old, new]
    result = build(records, tmp_path)
    assert result.removed == {"duplicate": 1}
    everything = lines(result.eval_path) + lines(result.train_path) + lines(result.val_path)
    parcel = [line for line in everything if "parcel" in json.dumps(line)]
    assert len(parcel) == 1
    assert "track_shipment" in json.dumps(parcel[0])
    hashes = manifest(result)["record_hashes"]
    eval_set, val_set, train_set = set(hashes["eval"]), set(hashes["validation"]), set(hashes["train"])
    assert not (eval_set & val_set or eval_set & train_set or val_set & train_set)
    assert len(eval_set | val_set | train_set) == 61


def test_min_total_records_error_names_the_counts(tmp_path: Path) -> None:
    records = mixed(8) + mixed(8)  # 8 unique conversations
    with pytest.raises(InsufficientRecordsError) as error:
        build(records, tmp_path, split=split_cfg(min_total_records=10))
    message = str(error.value)
    assert "8 usable records" in message and "min_total_records=10" in message
    assert "read 16" in message and "8 duplicate" in message


def test_limit_is_a_seeded_sample_after_dedupe(tmp_path: Path) -> None:
    records = mixed(300) + mixed(50)
    result = build(records, tmp_path, split=split_cfg(limit=100))
    assert result.counts["selected"] == 100
    assert result.removed == {"duplicate": 50, "over_limit": 200}
    assert result.counts["eval"] + result.counts["validation"] + result.counts["train"] == 100


def test_blueprint_bug_6_random_seed_zero_is_honoured(tmp_path: Path) -> None:
    records = mixed(300)

    def hashes(seed: int | None, name: str) -> dict:
        result = build(records, tmp_path, split=split_cfg(limit=100, random_seed=seed), name=name)
        assert result.seed == (seed if seed is not None else result.seed)
        return manifest(result)["record_hashes"]

    zero_a, zero_b, one = hashes(0, "a"), hashes(0, "b"), hashes(1, "c")
    assert zero_a == zero_b
    assert zero_a != one
    drawn = build(records, tmp_path, split=split_cfg(limit=100, random_seed=None), name="d")
    assert manifest(drawn)["seed_configured"] is None and isinstance(drawn.seed, int)
    again = build(records, tmp_path, split=split_cfg(limit=100, random_seed=drawn.seed), name="e")
    assert manifest(again)["record_hashes"] == manifest(drawn)["record_hashes"]


def test_output_does_not_depend_on_input_order(tmp_path: Path) -> None:
    records = mixed(120)
    first = build(records, tmp_path, name="a")
    second = build(list(reversed(records)), tmp_path, name="b")
    assert manifest(first)["record_hashes"] == manifest(second)["record_hashes"]


def test_iterator_input_is_spooled_and_gives_the_same_files(tmp_path: Path) -> None:
    records = mixed(120)
    from_list = build(records, tmp_path, name="list", models=[SMALL, BIG])
    from_iter = build(iter(records), tmp_path, name="iter", models=[SMALL, BIG])
    assert manifest(from_list)["files"] == manifest(from_iter)["files"]
    assert not list((tmp_path / "iter").glob(".spool*"))


def test_log_records_from_the_schema_are_accepted(tmp_path: Path) -> None:
    raw = mixed(60)
    records = [validate_record(r, source=f"test:{i}") for i, r in enumerate(raw)]
    assert all(isinstance(r, LogRecord) for r in records)
    from_models = build(records, tmp_path, name="models")
    from_dicts = build(raw, tmp_path, name="dicts")
    assert manifest(from_models)["record_hashes"] == manifest(from_dicts)["record_hashes"]
    assert from_models.counts == from_dicts.counts


# --------------------------------------------------------------------------------------------------
# The stratified split
# --------------------------------------------------------------------------------------------------


def test_blueprint_bug_4_a_singleton_tool_class_does_not_crash(tmp_path: Path) -> None:
    records = mixed(100)
    records.append(record(500, "cancel_subscription"))  # the only record with this tool
    result = build(records, tmp_path)
    total = sum(sum(counts.values()) for counts in result.per_tool.values())
    assert total == 101
    assert sum(result.per_tool[s].get("cancel_subscription", 0) for s in result.per_tool) == 1


def test_blueprint_bug_4_train_and_val_are_stratified(tmp_path: Path) -> None:
    rare = [record(1000 + i, "cancel_subscription") for i in range(10)]
    result = build(mixed(400) + rare, tmp_path, split=split_cfg(eval_size=50, val_ratio=0.1))
    val, train = result.per_tool["validation"], result.per_tool["train"]
    assert sum(val.values()) == math.ceil(0.1 * 360)
    assert set(val) == set(train)  # every class is in validation, the rare one included
    for label, count in train.items():
        share_train = count / sum(train.values())
        share_val = val[label] / sum(val.values())
        assert abs(share_train - share_val) < 0.05, label


def test_allocation_is_proportional_with_largest_remainders() -> None:
    assert allocate_stratified([50, 30, 20], 10) == [5, 3, 2]
    assert sum(allocate_stratified([7, 5, 3], 4)) == 4
    assert allocate_stratified([5, 5], 0) == [0, 0]
    assert allocate_stratified([5, 1], 6) == [5, 1]


def test_allocation_represents_every_class_with_two_records() -> None:
    alloc = allocate_stratified([1000, 2, 2, 2], 4)
    assert alloc[1:] == [1, 1, 1] and sum(alloc) == 4
    assert allocate_stratified([1, 1, 1, 10], 3) == [0, 0, 0, 3]
    assert allocate_stratified([1, 1, 1, 1], 2) == [1, 1, 0, 0]  # singletons only: no crash, first classes


def test_split_sizes() -> None:
    assert split_sizes(1000, 100, 0.1) == (100, 90, 810)
    assert split_sizes(50, 100, 0.1) == (50, 0, 0)
    assert split_sizes(12, 10, 0.9) == (10, 1, 1)
    assert split_sizes(11, 10, 0.5) == (10, 1, 0)
    assert split_sizes(30, 10, 0.0) == (10, 0, 20)


label_lists = st.lists(st.integers(min_value=0, max_value=11), min_size=1, max_size=150).map(
    lambda xs: [f"tool_{x}" if x else NO_TOOL for x in xs]
)


@settings(max_examples=150, deadline=None)
@given(labels=label_lists, eval_size=st.integers(1, 200), val_ratio=st.floats(0.0, 0.9), seed=st.integers(0, 2**40))
def test_split_properties(labels: list[str], eval_size: int, val_ratio: float, seed: int) -> None:
    n = len(labels)
    n_eval, n_val, n_train = split_sizes(n, eval_size, val_ratio)
    rest, eval_idx = stratified_split(labels, n_eval, seed)
    rest_labels = [labels[i] for i in rest]
    train_local, val_local = stratified_split(rest_labels, n_val, seed + 1)
    val_idx, train_idx = rest[val_local], rest[train_local]
    # every record lands in exactly one split, with the configured sizes
    assert sorted([*eval_idx, *val_idx, *train_idx]) == list(range(n))
    assert (len(eval_idx), len(val_idx), len(train_idx)) == (n_eval, n_val, n_train)
    # every class with two or more records is in eval when eval_size covers the classes
    counts = Counter(labels)
    if eval_size >= len(counts):
        in_eval = {labels[i] for i in eval_idx}
        assert {label for label, c in counts.items() if c >= 2} <= in_eval
    # deterministic per seed
    again_rest, again_eval = stratified_split(labels, n_eval, seed)
    assert np.array_equal(again_eval, eval_idx) and np.array_equal(again_rest, rest)
    # proportional within one record per class
    for label, count in counts.items():
        assert abs(sum(labels[i] == label for i in eval_idx) - n_eval * count / n) <= max(1.0, len(counts))


def test_stratified_split_is_seeded() -> None:
    labels = ["a"] * 50 + ["b"] * 50
    _, first = stratified_split(labels, 10, 1)
    _, same = stratified_split(labels, 10, 1)
    _, other = stratified_split(labels, 10, 2)
    assert np.array_equal(first, same) and not np.array_equal(first, other)
    assert Counter(labels[i] for i in first) == {"a": 5, "b": 5}


# --------------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------------


def test_training_lines_use_the_nemo_format() -> None:
    source = record(3, "get_order")
    source["request"]["messages"].append(
        {"role": "assistant", "content": None, "tool_calls": source["response"]["choices"][0]["message"]["tool_calls"]}
    )
    line = to_training_example(source, tool_calling=True)
    assert set(line) == {"messages", "tools"}
    assert [m["role"] for m in line["messages"]] == ["system", "user", "assistant", "assistant"]
    answer = line["messages"][-1]
    assert answer["content"] == ""
    assert answer["tool_calls"][0]["function"]["arguments"] == '{"order_id": "3"}'
    assert line["messages"][2]["content"] == ""
    assert isinstance(line["messages"][2]["tool_calls"][0]["function"]["arguments"], str)
    assert source["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == {"order_id": "3"}


def test_eval_lines_are_full_records_with_string_arguments_in_the_request() -> None:
    source = record(4, "get_order")
    source["extra_field"] = {"kept": True}
    source["request"]["messages"].append(
        {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}
    )
    line = to_eval_record(source)
    assert line["extra_field"] == {"kept": True} and line["workload_id"] == "support"
    assert line["request"]["messages"][-1]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert line["response"] == source["response"]


def test_files_manifest_and_hashes(tmp_path: Path) -> None:
    result = build(mixed(150), tmp_path, models=[SMALL, BIG])
    data = manifest(result)
    assert result.eval_path == tmp_path / "out" / "base" / "eval_data.jsonl"
    assert result.train_path.relative_to(tmp_path / "out").as_posix() == "train/training/train_data.jsonl"
    assert result.val_path.relative_to(tmp_path / "out").as_posix() == "train/validation/val_data.jsonl"
    for relative, digest in data["files"].items():
        assert hashlib.sha256((tmp_path / "out" / relative).read_bytes()).hexdigest() == digest
    assert len(lines(result.eval_path)) == data["counts"]["eval"] == 20
    assert len(lines(result.train_path)) == data["counts"]["train"]
    assert data["seed"] == 42 and data["config"]["data_split"]["eval_size"] == 20
    assert data["per_tool"]["eval"] == result.per_tool["eval"]
    eval_hashes = [
        conversation_hash(line["request"]["messages"], line["request"]["tools"]) for line in lines(result.eval_path)
    ]
    assert sorted(eval_hashes) == sorted(data["record_hashes"]["eval"])
    assert set(result.dataset_dirs) == {"base", "train", f"icl/{SMALL.model_name}", f"icl/{BIG.model_name}"}
    assert "record_hashes" not in result.manifest


# --------------------------------------------------------------------------------------------------
# ICL
# --------------------------------------------------------------------------------------------------


def icl_examples(path: Path) -> list[int]:
    counts = []
    for line in lines(path):
        _, count = strip_examples(line["request"]["messages"])
        counts.append(count)
    return counts


def test_icl_examples_come_from_train_only_and_strip_back_to_the_eval_record(tmp_path: Path) -> None:
    result = build(mixed(150), tmp_path)
    data = manifest(result)
    train = set(data["record_hashes"]["train"])
    chosen = data["icl"]["sets"]["8192"]["examples"]
    assert set(chosen) == set(data["record_hashes"]["eval"])
    assert all(set(examples) <= train for examples in chosen.values())
    base = {conversation_hash(line["request"]["messages"]): line for line in lines(result.eval_path)}
    for line in lines(result.icl_paths[SMALL.model_name]):
        stripped, count = strip_examples(line["request"]["messages"])
        assert count == 3
        assert base[conversation_hash(stripped)]["request"]["messages"] == stripped
        assert line["response"] == base[conversation_hash(stripped)]["response"]


def test_uniform_selection_covers_the_tools(tmp_path: Path) -> None:
    result = build(mixed(150), tmp_path, icl=ICLConfig(max_examples=5, min_examples=1))
    first = lines(result.icl_paths[SMALL.model_name])[0]["request"]["messages"][0]["content"]
    assert all(tool in first for tool in TOOLS) and "Happy to help" in first


def test_blueprint_bug_7_model_context_length_is_used(tmp_path: Path) -> None:
    tight = NIMConfig(model_name="tiny/model-0.5b", context_length=700)
    records = [record(i, TOOLS[i % 4] if i % 5 else None, pad=100) for i in range(150)]
    icl = ICLConfig(max_context_length=32768, reserved_tokens=256, max_examples=3, min_examples=0)
    result = build(records, tmp_path, icl=icl, models=[tight, BIG])
    small_counts, big_counts = (
        icl_examples(result.icl_paths[tight.model_name]),
        icl_examples(result.icl_paths[BIG.model_name]),
    )
    assert min(small_counts) >= 1 and max(small_counts) < 3
    assert big_counts == [3] * len(big_counts)
    sets = manifest(result)["icl"]["sets"]
    assert sets["700"]["models"] == [tight.model_name] and sets["32768"]["models"] == [BIG.model_name]
    for line in lines(result.icl_paths[tight.model_name]):
        prompt = json.dumps({"messages": line["request"]["messages"], "tools": line["request"]["tools"]})
        assert estimate_tokens(prompt) <= 700 - 256 + 10


def test_blueprint_bug_7_min_examples_is_honoured(tmp_path: Path) -> None:
    tight = NIMConfig(model_name="tiny/model-0.5b", context_length=700)
    records = [record(i, TOOLS[i % 4] if i % 5 else None, pad=100) for i in range(150)]
    strict = ICLConfig(max_context_length=32768, reserved_tokens=256, max_examples=3, min_examples=3)
    result = build(records, tmp_path, icl=strict, models=[tight], name="strict")
    icl_set = manifest(result)["icl"]["sets"]["700"]
    assert icl_set["dropped"] == {"context_too_small": 20} and icl_set["records"] == 0
    assert result.icl_sets[0].dropped == {"context_too_small": 20} and result.icl_sets[0].records == 0
    relaxed = ICLConfig(max_context_length=32768, reserved_tokens=256, max_examples=3, min_examples=1)
    result = build(records, tmp_path, icl=relaxed, models=[tight], name="relaxed")
    counts = icl_examples(result.icl_paths[tight.model_name])
    icl_set = manifest(result)["icl"]["sets"]["700"]
    assert len(counts) + sum(icl_set["dropped"].values()) == 20
    assert all(c >= 1 for c in counts)


def test_fitting_skips_an_example_that_does_not_fit_and_tries_the_next() -> None:
    costs = {1: 500, 2: 30, 3: 30, 4: 30}
    assert fit_examples([1, 2, 3, 4], costs, budget=100, max_examples=3) == [2, 3, 4]
    assert fit_examples([2, 1, 3], costs, budget=59, max_examples=3) == [2]
    assert fit_examples([2, 2, 3], costs, budget=100, max_examples=3) == [2, 3]


def test_round_robin_respects_quotas_then_fills_from_every_group() -> None:
    groups = [[1, 2, 3], [4, 5], [6]]
    assert round_robin(groups, [1, 1, 0]) == [1, 4, 2, 5, 6, 3]
    assert uniform_bins(3, 5) == [1, 1, 1, 0, 0]
    assert uniform_bins(5, 2) == [3, 2]


def test_relevance_then_coverage() -> None:
    labels = {1: "a", 2: "a", 3: "a", 4: "b", 5: "c"}
    assert relevance_coverage_order([1, 2, 3, 4, 5], labels, max_examples=3, relevance_ratio=0.7) == [1, 2, 4, 5, 3]
    assert relevance_coverage_order([1, 2, 3, 4, 5], labels, max_examples=3, relevance_ratio=0.0) == [1, 4, 5, 2, 3]


def bag_of_words(texts: list[str]) -> list[list[float]]:
    """A deterministic toy embedding: word counts hashed into 64 buckets."""
    vectors = []
    for text in texts:
        vector = [0.0] * 64
        for word in text.lower().split():
            vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
        vectors.append(vector)
    return vectors


def test_semantic_selection_prefers_similar_conversations(tmp_path: Path) -> None:
    topics = ["refund for my broken blender", "track the parcel to Berlin", "do you sell garden hoses"]
    records = [record(i, TOOLS[i % 3], question=f"{topics[i % 3]} {i}", pad=i % 7) for i in range(90)]
    icl = ICLConfig(
        example_selection="semantic_similarity",
        max_examples=2,
        min_examples=1,
        similarity_config={
            "relevance_ratio": 1.0,
            "embedding_nim_config": RemoteModelConfig(model_name="nvidia/embed", url="http://x/v1/embeddings"),
        },
    )
    calls: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return bag_of_words(texts)

    result = build(records, tmp_path, icl=icl, embed=embed)
    assert calls and max(calls) <= 64
    for line in lines(result.icl_paths[SMALL.model_name]):
        block = line["request"]["messages"][0]["content"]
        question = line["request"]["messages"][-1]["content"]
        topic = next(t for t in topics if question.startswith(t))
        examples = block.split("Example ")[1:]
        assert len(examples) == 2 and all(topic in example for example in examples)
    with pytest.raises(ValueError, match="embed"):
        build(records, tmp_path, icl=icl, name="no-embed")


def test_icl_is_off_without_examples_or_models(tmp_path: Path) -> None:
    result = build(mixed(60), tmp_path, icl=ICLConfig(max_examples=0, min_examples=0))
    assert result.icl_paths == {} and manifest(result)["icl"]["enabled"] is False
    result = build(mixed(60), tmp_path, models=[], name="none")
    assert result.icl_paths == {}


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 2  # ceil(4 / 4 * 1.2)
    assert estimate_tokens(400) == 120


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _json_values, max_size=5))
def test_arguments_are_written_as_json_dumps_writes_them(arguments: dict[str, Any]) -> None:
    """The reused C encoder must give NeMo the very string json.dumps gives (floats, escapes, NaN included)."""
    assert arguments_string(arguments) == json.dumps(arguments, ensure_ascii=False)
