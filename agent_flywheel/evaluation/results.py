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


def read_results_archive(source: bytes | str | Path) -> dict[str, Any]:
    """The ``results.json`` inside an Evaluator ``download-results`` ZIP (bytes or a path), anywhere in it."""
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = sorted((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "results.json"), key=len)
        if not names:
            raise ValueError(f"no results.json in the archive (files: {archive.namelist()[:10]})")
        loaded = json.loads(archive.read(names[0]))
    if not isinstance(loaded, dict):
        raise ValueError("results.json is not a JSON object of tasks")
    return loaded


def parse_sample_results(results: Mapping[str, Any] | bytes | str | Path) -> list[dict[str, Any]]:
    """Per-sample rows from Evaluator per-sample results (``results.json`` or the ZIP holding it).

    Each row: ``{"sample_key", "index", "task", <our metric>: float | None, ...}``. A value is None when
    the Evaluator could not score the sample (e.g. the judge reply did not parse). Duplicate keys get a
    ``#n`` suffix so pairing stays one-to-one.
    """
    data = results if isinstance(results, Mapping) else read_results_archive(results)
    rows: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for task, samples in data.items():
        if not isinstance(samples, list):
            continue
        for index, entry in enumerate(samples):
            if not isinstance(entry, Mapping):
                continue
            key = sample_key(entry.get("item"), index)
            seen[key] += 1
            if seen[key] > 1:
                key = f"{key}#{seen[key]}"
            row: dict[str, Any] = {"sample_key": key, "index": index, "task": str(task)}
            row.update(_map_scores(entry.get("metrics")))
            rows.append(row)
    return rows


def scores_by_sample(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[str, float]:
    """``{sample_key: value}`` for one metric, leaving out samples where it is missing: the gate's input."""
    result: dict[str, float] = {}
    for row in rows:
        value = _finite(row.get(metric))
        if value is not None:
            result[str(row["sample_key"])] = value
    return result
