"""NeMo Evaluator results: aggregate and per-sample scores under our metric names, paired by sample key.

The same names are read whichever produced the results (the real Evaluator or the simulator), so a number
means the same thing either way.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from agent_flywheel.evaluation.judge import scale_similarity
from agent_flywheel.evaluation.metrics import (
    FUNCTION_NAME_ACCURACY,
    FUNCTION_NAME_AND_ARGS_ACCURACY,
    SIMILARITY,
    TOOL_CALLING_CORRECTNESS,
)
from agent_flywheel.records.conversation import conversation_hash

# Evaluator (metric, score) -> our metric name.
EVALUATOR_SCORE_NAMES: dict[tuple[str, str], str] = {
    ("tool-calling-accuracy", "function_name_accuracy"): FUNCTION_NAME_ACCURACY,
    ("tool-calling-accuracy", "function_name_and_args_accuracy"): FUNCTION_NAME_AND_ARGS_ACCURACY,
    ("correctness", "rating"): TOOL_CALLING_CORRECTNESS,
    ("llm-judge", "similarity"): SIMILARITY,
}


def _our_name(metric: str, score: str) -> str:
    return EVALUATOR_SCORE_NAMES.get((metric, score), f"{metric}.{score}")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _map_scores(metrics: Any) -> dict[str, float | None]:
    """``{metric: {scores: {score: {value}}}}`` → ``{our_name: value}``, similarity scaled to 0–1."""
    result: dict[str, float | None] = {}
    if not isinstance(metrics, Mapping):
        return result
    for metric, body in metrics.items():
        scores = body.get("scores") if isinstance(body, Mapping) else None
        if not isinstance(scores, Mapping):
            continue
        for score, payload in scores.items():
            raw = payload.get("value") if isinstance(payload, Mapping) else payload
            value = _finite(raw)
            name = _our_name(str(metric), str(score))
            if name == SIMILARITY and value is not None:
                value = scale_similarity(value)
            result[name] = value
    return result


def parse_aggregate_results(payload: Mapping[str, Any]) -> dict[str, float]:
    """Evaluator ``GET /v1/evaluation/jobs/{id}/results`` → ``{our_metric_name: value}``.

    Known scores get our names (``correctness.rating`` → ``tool_calling_correctness``, similarity scaled
    to 0–1); others keep the Evaluator's ``<metric>.<score>`` so nothing disappears. Missing or
    non-numeric values are left out.
    """
    result: dict[str, float] = {}
    tasks = payload.get("tasks") if isinstance(payload, Mapping) else None
    if not isinstance(tasks, Mapping):
        return result
    for task in tasks.values():
        metrics = task.get("metrics") if isinstance(task, Mapping) else None
        for name, value in _map_scores(metrics).items():
            if value is not None:
                result[name] = value
    return result


def sample_key(item: Any, index: int) -> str:
    """The key that pairs a sample across evaluations: the conversation hash of the row, else ``#index``.

    ICL rows hash like their base rows because ``conversation_hash`` ignores the injected examples.
    """
    if isinstance(item, Mapping):
        request = item.get("request")
        if isinstance(request, Mapping) and isinstance(request.get("messages"), list):
            return conversation_hash(request["messages"], request.get("tools"))
        if isinstance(item.get("messages"), list):
            return conversation_hash(item["messages"], item.get("tools"))
    return f"#{index}"


class ResultsArchiveError(ValueError):
    """Per-sample results that hold no readable sample: the message lists what each file held instead."""


#: Keys under which a task's rows may sit when a task maps to an object instead of a list.
_ROW_LISTS = ("samples", "rows", "results", "data", "outputs")
#: File stems that name no task (``results.json``, ``results/samples.jsonl``): the folder above names it.
_GENERIC_STEMS = frozenset({"results", "result", "samples", "outputs", "output", "predictions"})


def _is_row(value: Any) -> bool:
    """A per-sample row: an object with the sample's ``metrics`` (and usually its ``item`` and ``sample``)."""
    return isinstance(value, Mapping) and (
        isinstance(value.get("metrics"), Mapping) or ("item" in value and "sample" in value)
    )


def _task_name(path: str) -> str:
    """The task a per-task file holds: its stem (``custom-tool-calling.jsonl``), or the folder above a
    generic name (``custom-tool-calling/results.json``)."""
    parts = [p for p in path.split("/") if p]
    if parts:
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    for part in reversed(parts):
        if part.lower() not in _GENERIC_STEMS:
            return part
    return "results"


def _rows_of(value: Any) -> list[Any] | None:
    """A task's rows: a list holding rows, or an object holding one under ``samples``/``rows``/...; else None."""
    if isinstance(value, list):
        return value if any(_is_row(v) for v in value) else None
    if isinstance(value, Mapping):
        for key in _ROW_LISTS:
            rows = _rows_of(value.get(key))
            if rows is not None:
                return rows
    return None


def tasks_with_samples(loaded: Any, default_task: str) -> tuple[dict[str, list[Any]], str]:
    """``{task: [rows]}`` from one parsed results document, whatever its documented shape, and what it held.

    Shapes: ``{task: [rows]}`` (what the blueprint reads), ``{task: {"samples": [rows]}}``, ``{"tasks": {...}}``
    around either, a bare list of rows (the task is ``default_task``), or the aggregate scores only
    (``{"tasks": {task: {"metrics": ...}}}``, no rows: an empty result, described as such).
    """
    if isinstance(loaded, Mapping) and isinstance(loaded.get("tasks"), Mapping):
        inner, what = tasks_with_samples(loaded["tasks"], default_task)
        if inner:
            return inner, what
        aggregate = any(isinstance(t, Mapping) and "metrics" in t for t in loaded["tasks"].values())
        return {}, "aggregate scores only (tasks.<task>.metrics), no per-sample rows" if aggregate else what
    rows = _rows_of(loaded)
    if isinstance(loaded, list):
        return ({default_task: rows}, f"{len(rows)} rows") if rows is not None else ({}, "a list without sample rows")
    if not isinstance(loaded, Mapping):
        return {}, f"a JSON {type(loaded).__name__}, not an object of tasks"
    found = {
        str(task): task_rows
        for task, value in loaded.items()
        if task not in _ROW_LISTS and (task_rows := _rows_of(value)) is not None
    }
    if found:
        return found, ", ".join(f"{task}: {len(rows)} rows" for task, rows in found.items())
    if rows is not None:
        return {default_task: rows}, f"{len(rows)} rows"
    keys = ", ".join(sorted(str(k) for k in loaded)[:6]) or "nothing"
    return {}, f"an object without sample rows (keys: {keys})"


def _parse_file(name: str, raw: bytes) -> Any:
    text = raw.decode("utf-8")
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def _file_order(name: str) -> tuple[int, int, str]:
    """``results.json`` first (shallowest first), then other JSON, then JSONL: the first file naming a task wins."""
    base = name.rsplit("/", 1)[-1]
    kind = 0 if base == "results.json" else 1 if base.endswith(".json") else 2
    return kind, name.count("/"), name


def read_results_archive(source: bytes | str | Path) -> dict[str, list[Any]]:
    """Per-sample rows by task from an Evaluator ``download-results`` ZIP (bytes or a path), in the layouts NeMo
    uses: ``results.json`` at the root or under a folder (``<job>/results/results.json``), per-task files
    (``results/<task>.json`` or ``.jsonl``), ``{task: [rows]}`` or the other shapes of :func:`tasks_with_samples`.

    Every JSON and JSONL file is read; a task found in more than one file is taken from the first (a
    ``results.json`` before per-task files, the shallower before the deeper), so no sample counts twice.
    Raises :class:`ResultsArchiveError` when no file holds a sample row, listing what each file held: an
    empty comparison must never reach the gate as "no samples in common".
    """
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    found: dict[str, list[Any]] = {}
    seen: list[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        for name in sorted((n for n in names if n.endswith((".json", ".jsonl"))), key=_file_order):
            try:
                loaded = _parse_file(name, archive.read(name))
            except (ValueError, UnicodeDecodeError) as exc:
                seen.append(f"{name}: not JSON ({exc})")
                continue
            tasks, what = tasks_with_samples(loaded, _task_name(name))
            seen.append(f"{name}: {what}")
            for task, rows in tasks.items():
                found.setdefault(task, rows)
    if not any(_is_row(row) for rows in found.values() for row in rows):
        listed = "; ".join(seen) if seen else f"no JSON files (files: {', '.join(names[:10]) or 'none'})"
        raise ResultsArchiveError(f"the results archive holds no per-sample rows: {listed}")
    return found


def _fill_args_accuracy(row: dict[str, Any]) -> None:
    """NeMo leaves ``function_name_and_args_accuracy`` out (NaN) when it cannot decode the prediction's arguments
    as JSON: the call was made with unusable arguments, a failure. Scored 0, so the sample stays in the paired
    comparison instead of dropping out of it (which would flatter a model that emits broken JSON)."""
    if row.get(FUNCTION_NAME_ACCURACY) is not None and row.get(FUNCTION_NAME_AND_ARGS_ACCURACY) is None:
        row[FUNCTION_NAME_AND_ARGS_ACCURACY] = 0.0


def parse_sample_results(results: Mapping[str, Any] | bytes | str | Path) -> list[dict[str, Any]]:
    """Per-sample rows from Evaluator per-sample results (``{task: [rows]}``, or the ZIP holding them).

    Each row: ``{"sample_key", "index", "task", <our metric>: float | None, ...}``. A value is None when
    the Evaluator could not score the sample (e.g. the judge reply did not parse), except the arguments
    accuracy of a scored call, which is 0 (:func:`_fill_args_accuracy`). Duplicate keys get a ``#n`` suffix
    so pairing stays one-to-one. No readable row at all is a :class:`ResultsArchiveError`.
    """
    if isinstance(results, Mapping):
        data, what = tasks_with_samples(results, "results")
        if not data:
            raise ResultsArchiveError(f"the per-sample results hold no rows: {what}")
    else:
        data = read_results_archive(results)
    rows: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for task, samples in data.items():
        for index, entry in enumerate(samples):
            if not isinstance(entry, Mapping):
                continue
            key = sample_key(entry.get("item"), index)
            seen[key] += 1
            if seen[key] > 1:
                key = f"{key}#{seen[key]}"
            row: dict[str, Any] = {"sample_key": key, "index": index, "task": str(task)}
            row.update(_map_scores(entry.get("metrics")))
            _fill_args_accuracy(row)
            rows.append(row)
    if not rows:
        raise ResultsArchiveError("the per-sample results hold no rows")
    return rows


def sample_means(rows: Iterable[Mapping[str, Any]], metrics: Iterable[str]) -> dict[str, float]:
    """The mean of each metric over the samples that have it: the figure the gate and the intervals use."""
    rows = list(rows)
    means = {}
    for metric in metrics:
        values = list(scores_by_sample(rows, metric).values())
        if values:
            means[metric] = sum(values) / len(values)
    return means


def scores_by_sample(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """``{sample_key: value}`` for one metric, leaving out samples where it is missing: the gate's input."""
    result: dict[str, float] = {}
    for row in rows:
        value = _finite(row.get(metric))
        if value is not None:
            result[str(row["sample_key"])] = value
    return result
