"""Per-sample results archives in the layouts NeMo Evaluator's ``download-results`` uses, and the loud failure
when an archive holds no sample (it used to give an empty list, and the gate then said "no samples in common")."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from agent_flywheel.evaluation.metrics import FUNCTION_NAME_ACCURACY, FUNCTION_NAME_AND_ARGS_ACCURACY
from agent_flywheel.evaluation.results import (
    ResultsArchiveError,
    parse_sample_results,
    read_results_archive,
    sample_means,
)
from agent_flywheel.nemo.evaluator import parse_results_archive


def row(question: str, name_ok: float, args_ok: float | None) -> dict[str, Any]:
    scores: dict[str, Any] = {"function_name_accuracy": {"value": name_ok}}
    if args_ok is not None:
        scores["function_name_and_args_accuracy"] = {"value": args_ok}
    return {
        "item": {"request": {"messages": [{"role": "user", "content": question}]}},
        "sample": {"output_text": "", "response": {"choices": []}},
        "metrics": {"tool-calling-accuracy": {"scores": scores}},
    }


ROWS = [row("a", 1.0, 1.0), row("b", 1.0, None), row("c", 0.0, 0.0)]
TASK = "custom-tool-calling"
AGGREGATE = {
    "tasks": {TASK: {"metrics": {"tool-calling-accuracy": {"scores": {"function_name_accuracy": {"value": 0.7}}}}}}
}


def archive(files: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        for name, content in files.items():
            out.writestr(name, content if isinstance(content, str | bytes) else json.dumps(content))
    return buffer.getvalue()


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


LAYOUTS = {
    "results.json at the root": {"results.json": {TASK: ROWS}},
    "results.json under the job's results folder": {
        "eval-1/results/results.json": {TASK: ROWS},
        "eval-1/logs/run.log": "ok",
        "eval-1/config.yaml": "x: 1",
    },
    "rows under samples": {"out/results.json": {TASK: {"samples": ROWS}}},
    "wrapped in tasks": {"results.json": {"tasks": {TASK: ROWS}}},
    "per-task JSONL": {f"results/{TASK}.jsonl": jsonl(ROWS), "results/README.md": "x"},
    "per-task JSON list": {f"results/{TASK}.json": ROWS},
    "a task folder holding results.json": {f"{TASK}/results.json": ROWS},
    "the aggregate beside the samples": {"results/results.json": AGGREGATE, f"results/{TASK}.jsonl": jsonl(ROWS)},
    "the same samples twice": {"results.json": {TASK: ROWS}, f"results/{TASK}.jsonl": jsonl(ROWS)},
}


@pytest.mark.parametrize("files", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_every_documented_layout_gives_the_same_rows(files: dict[str, Any]) -> None:
    rows = parse_sample_results(archive(files))
    assert [(r["task"], r["index"]) for r in rows] == [(TASK, 0), (TASK, 1), (TASK, 2)]
    assert [r[FUNCTION_NAME_ACCURACY] for r in rows] == [1.0, 1.0, 0.0]
    assert [r[FUNCTION_NAME_AND_ARGS_ACCURACY] for r in rows] == [1.0, 0.0, 0.0]  # b: NeMo left it out: a failure
    assert list(parse_results_archive(archive(files))) == [TASK]
    assert len(parse_results_archive(archive(files))[TASK]) == 3


NO_SAMPLES = {
    "the aggregate only": ({"results.json": AGGREGATE}, "results.json: aggregate scores only"),
    "an empty task": ({"results.json": {TASK: []}}, "results.json: an object without sample rows"),
    "logs only": ({"logs/run.log": "ok"}, "no JSON files (files: logs/run.log)"),
    "broken JSON": ({"results.json": "{not json"}, "results.json: not JSON"),
    "rows without metrics": ({"results.json": {TASK: [{"item": {}}]}}, "without sample rows"),
}


@pytest.mark.parametrize(("files", "said"), NO_SAMPLES.values(), ids=NO_SAMPLES.keys())
def test_an_archive_without_samples_fails_loudly_saying_what_it_held(files: dict[str, Any], said: str) -> None:
    with pytest.raises(ResultsArchiveError, match="no per-sample rows") as caught:
        read_results_archive(archive(files))
    assert said in str(caught.value)
    with pytest.raises(ResultsArchiveError):
        parse_sample_results(archive(files))
    with pytest.raises(ResultsArchiveError):
        parse_results_archive(archive(files))


def test_no_zip_and_no_rows_are_results_errors() -> None:
    with pytest.raises(ResultsArchiveError, match="not a ZIP"):
        parse_results_archive(b"<html>gateway timeout</html>")
    with pytest.raises(ResultsArchiveError):
        parse_sample_results({TASK: []})


def test_unscorable_samples_stay_missing_and_means_follow_the_samples() -> None:
    unscorable = {**row("d", 0.0, None), "metrics": {"tool-calling-accuracy": {"scores": {}}}}
    rows = parse_sample_results({TASK: [*ROWS, unscorable]})
    assert rows[3].get(FUNCTION_NAME_ACCURACY) is None and rows[3].get(FUNCTION_NAME_AND_ARGS_ACCURACY) is None
    means = sample_means(rows, [FUNCTION_NAME_ACCURACY, FUNCTION_NAME_AND_ARGS_ACCURACY, "similarity"])
    assert means == {
        FUNCTION_NAME_ACCURACY: pytest.approx(2 / 3),
        FUNCTION_NAME_AND_ARGS_ACCURACY: pytest.approx(1 / 3),
    }
