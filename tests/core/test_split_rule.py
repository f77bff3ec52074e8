"""Scarce records: training first, the eval set gives way down to the gate's minimum, else a precise refusal;
and when filters leave too little, the message names each filter, its counts and the line to change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig, PromotionGateConfig
from agent_flywheel.datasets.build import InsufficientRecordsError, build_datasets
from agent_flywheel.datasets.shortfall import SourceFilters
from agent_flywheel.datasets.split import ShortOfRecords, plan_split, records_for_training, split_sizes
from agent_flywheel.logstore.reader import extract
from agent_flywheel.records.cache import RecordCache
from agent_flywheel.records.model_filter import ModelFilter
from agent_flywheel.records.quarantine import QuarantineWriter
from tests.support.dataset_records import mixed
from tests.support.fake_es import FakeLogStoreClient
from tests.support.nat_records import NAT_CLIENT_ID, NAT_WORKLOAD_ID, nat_lost_tool_call, nat_tool_call

SMALL = NIMConfig(model_name="meta/llama-3.2-1b-instruct")
GATE = PromotionGateConfig()  # margin 0.05, confidence 0.95: 61 eval samples at least


def build(records: Any, tmp_path: Path, split: DataSplitConfig, **kwargs: Any) -> Any:
    return build_datasets(records, split, ICLConfig(), EvaluationConfig(), [SMALL], tmp_path / "out", **kwargs)


def test_plenty_of_records_split_exactly_as_configured() -> None:
    for n in (300, 1000, 5000):
        plan = plan_split(n, 200, 0.1, 50, 61)
        assert (plan.n_eval, plan.n_val, plan.n_train) == split_sizes(n, 200, 0.1) and not plan.warnings


def test_the_eval_set_gives_way_to_training_down_to_the_gates_minimum() -> None:
    """The reported run: 120 valid records, eval_size 200 put everything into evaluation and trained on nothing."""
    plan = plan_split(120, 200, 0.1, 50, 61, "margin 0.05")
    assert (plan.n_eval, plan.n_val, plan.n_train) == (64, 6, 50)
    assert "eval_size 200 reduced to 64" in plan.warnings[0] and "meaningful gate is 61" in plan.warnings[0]


def test_too_few_for_both_stops_and_says_how_many_are_needed() -> None:
    with pytest.raises(ShortOfRecords) as short:
        plan_split(100, 200, 0.1, 50, 61)
    assert short.value.needed == 61 + records_for_training(50, 0.1) == 117
    assert "needs at least 117" in str(short.value) and "min_train_records=50" in str(short.value)


@pytest.mark.parametrize("min_train", [1, 7, 50, 333])
@pytest.mark.parametrize("val_ratio", [0.0, 0.1, 0.25, 0.5])
def test_records_for_training_is_the_least_that_leaves_min_train(min_train: int, val_ratio: float) -> None:
    rest = records_for_training(min_train, val_ratio)
    assert split_sizes(rest, 0, val_ratio)[2] >= min_train
    assert rest == min_train or split_sizes(rest - 1, 0, val_ratio)[2] < min_train


def test_the_build_never_writes_an_empty_training_set(tmp_path: Path) -> None:
    split = DataSplitConfig(eval_size=200, min_total_records=50, random_seed=1)
    result = build(mixed(130), tmp_path, split, gate=GATE)
    assert result.counts["train"] >= 50 and result.counts["eval"] >= 61
    assert result.counts["eval"] + result.counts["validation"] + result.counts["train"] == result.counts["selected"]
    assert any("reduced to" in warning for warning in result.warnings)
    assert result.train_path.read_text().count("\n") == result.counts["train"]


def test_the_build_stops_before_writing_anything_when_records_are_too_few(tmp_path: Path) -> None:
    split = DataSplitConfig(eval_size=200, min_total_records=50, random_seed=1)
    with pytest.raises(InsufficientRecordsError) as error:
        build(mixed(100), tmp_path, split, gate=GATE)
    assert "needs at least 117" in str(error.value)
    assert "the minimum for a meaningful gate: promotion_gate margin 0.05 at confidence 0.95" in str(error.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def cache_from_store(tmp_path: Path, raws: list[dict[str, Any]], teacher: str) -> RecordCache:
    """Records read into a record cache the way the flywheel's extraction does, with the teacher filter."""
    cache = RecordCache(tmp_path / "records", NAT_WORKLOAD_ID, NAT_CLIENT_ID)
    es = FakeLogStoreClient([(f"doc-{i}", raw) for i, raw in enumerate(raws)])
    with QuarantineWriter(tmp_path / "quarantine.jsonl") as quarantine:
        cache.replace_window(
            "window-1",
            lambda sink: extract(
                es,  # type: ignore[arg-type]
                "flywheel",
                workload_id=NAT_WORKLOAD_ID,
                client_id=NAT_CLIENT_ID,
                quarantine=quarantine,
                sink=sink,
            ),
            keep=ModelFilter({teacher}),
        )
    return cache


def test_a_teacher_name_that_matches_nothing_is_named_with_the_line_to_change(tmp_path: Path) -> None:
    """Records by meta/llama-3.1-70b-instruct (the blueprint's example) against the default teacher 3.3."""
    raws = [nat_tool_call(i) for i in range(60)] + [nat_lost_tool_call(100 + i) for i in range(5)]
    teacher = "meta/llama-3.3-70b-instruct"
    cache = cache_from_store(tmp_path, raws, teacher)
    filters = SourceFilters(NAT_WORKLOAD_ID, NAT_CLIENT_ID, teacher=teacher, teacher_only=True)
    with pytest.raises(InsufficientRecordsError) as error:
        build(cache, tmp_path, DataSplitConfig(), gate=GATE, filters=filters)
    message = str(error.value)
    assert message.startswith(
        "0 usable records for workload '<workflow>' / client 'nat-support-agent', fewer than min_total_records=50"
    )
    assert "- log store: 65 records read in 1 read(s); 5 quarantined (5 tool_calls_missing)" in message
    assert (
        "- teacher filter (extraction.teacher_only: true, teacher.model_name: meta/llama-3.3-70b-instruct): "
        "60 records skipped as answered by another model. Models seen: meta/llama-3.1-70b-instruct: 60"
    ) in message
    assert "- dataset build: read 0; removed none" in message
    assert (
        "change in configs/flywheel.yaml: `teacher.model_name: meta/llama-3.1-70b-instruct` (or) "
        "`extraction.teacher_only: false`"
    ) in message


def test_a_workload_id_that_matches_nothing_says_so(tmp_path: Path) -> None:
    cache = cache_from_store(tmp_path, [], "meta/llama-3.3-70b-instruct")
    filters = SourceFilters(NAT_WORKLOAD_ID, NAT_CLIENT_ID, teacher="meta/llama-3.3-70b-instruct", teacher_only=True)
    with pytest.raises(InsufficientRecordsError) as error:
        build(cache, tmp_path, DataSplitConfig(), filters=filters)
    assert "no record of this workload and client was found in 1 read(s)" in str(error.value)
    assert "'<workflow>'" in str(error.value)


def test_duplicates_and_dropped_no_call_answers_are_counted_with_their_switch(tmp_path: Path) -> None:
    records = mixed(30) + mixed(30)
    split = DataSplitConfig(eval_size=10, min_total_records=50, min_train_records=1)
    with pytest.raises(InsufficientRecordsError) as error:
        build_datasets(
            records, split, ICLConfig(), EvaluationConfig(include_no_call_records=False), [SMALL], tmp_path / "o"
        )
    message = str(error.value)
    assert "24 usable records, fewer than min_total_records=50" in message
    assert "- dataset build: read 60; removed 24 duplicate, 12 no_tool_call" in message
    assert "`evaluation_config.include_no_call_records: true`" in message


def test_a_full_rebuild_forgets_what_earlier_reads_filtered(tmp_path: Path) -> None:
    cache = cache_from_store(tmp_path, [nat_tool_call(1)], "other/model")
    assert cache.read_summary().skipped_models == {"meta/llama-3.1-70b-instruct": 1}
    cache.clear()
    assert cache.read_summary().windows == 0
