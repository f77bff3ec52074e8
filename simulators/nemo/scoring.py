"""Scores of one evaluation sample and their aggregate, in NeMo Evaluator's result shapes.

The metric semantics are the project's own (:mod:`agent_flywheel.evaluation.metrics`), shared with the code
that reads real Evaluator results, so a simulated score and a real one mean the same thing.
A value that could not be computed (judge reply without a score, unrenderable ground truth) is
``None`` here: counted in ``nan_count``, left out of the mean, never a crash.
"""

from __future__ import annotations

import math
from typing import Any

from agent_flywheel.evaluation.judge import parse_judge_score
from agent_flywheel.evaluation.metrics import function_name_and_args_match, function_name_match

FUNCTION_NAME = "function_name_accuracy"
FUNCTION_NAME_AND_ARGS = "function_name_and_args_accuracy"


def first_message(response: Any) -> dict[str, Any]:
    """``choices[0].message`` of a chat completion, or an empty dict."""
    try:
        message = response["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return {}
    return message if isinstance(message, dict) else {}


def output_text(response: Any) -> str:
    """``sample.output_text``: the first choice's content ("" when the model only called tools)."""
    content = first_message(response).get("content")
    return content if isinstance(content, str) else ""


def tool_calling_scores(response: Any, ground_truth: Any) -> dict[str, float | None]:
    """``function_name_accuracy`` and ``function_name_and_args_accuracy`` of one sample (1.0 or 0.0)."""
    predicted = first_message(response).get("tool_calls")
    return {
        FUNCTION_NAME: function_name_match(predicted, ground_truth),
        FUNCTION_NAME_AND_ARGS: function_name_and_args_match(predicted, ground_truth),
    }


def judge_scores(reply: str, scores: dict[str, Any]) -> dict[str, float | None]:
    """Each configured score parsed from the judge's reply with its regex and cast to its type."""
    parsed: dict[str, float | None] = {}
    for name, spec in scores.items():
        parser = spec.get("parser") or {}
        pattern = parser.get("pattern") or r"(\d+(?:\.\d+)?)"
        cast = "int" if spec.get("type", "int") == "int" else "float"
        parsed[name] = parse_judge_score(reply, pattern, cast)
    return parsed


def aggregate(values: list[float | None]) -> dict[str, Any]:
    """``{"value": mean, "stats": {...}}`` over the samples; ``value`` is null when no sample had a value."""
    valid = [v for v in values if v is not None and math.isfinite(v)]
    count = len(valid)
    total = float(sum(valid))
    mean = total / count if count else None
    variance = sum((v - total / count) ** 2 for v in valid) / (count - 1) if count > 1 else (0.0 if count else None)
    stddev = math.sqrt(variance) if variance is not None else None
    stats = {
        "count": count,
        "sum": total,
        "mean": mean,
        "min": min(valid) if valid else None,
        "max": max(valid) if valid else None,
        "variance": variance,
        "stddev": stddev,
        "stderr": stddev / math.sqrt(count) if stddev is not None and count else None,
        "sum_squared": float(sum(v * v for v in valid)),
        "nan_count": len(values) - count,
    }
    return {"value": mean, "stats": stats}
