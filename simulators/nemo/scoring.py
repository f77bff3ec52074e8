"""Scores of one evaluation sample and their aggregate, computed the way NeMo Evaluator defines them.

Written from NeMo Evaluator's documentation, not from the code under test, so an end-to-end run checks the
product against an independent reading of the metrics.

**``tool-calling``** (NeMo Evaluator docs, "Agentic Evaluation Metrics" > "Tool Calling"): two scores per
sample, ``function_name_accuracy`` and ``function_name_and_args_accuracy``, each 1.0 or 0.0. The reference
is a list of OpenAI-style tool calls (``[{"function": {"name", "arguments": {...}}}]``, arguments as an
object); the prediction is ``choices[0].message.tool_calls`` of the model's answer, whose ``arguments`` are
a JSON string. Names are compared case-sensitively and the order of the calls is ignored (parallel calls
may come in any order). Where the documentation is silent, the simulator does what the Evaluator does:

* names are compared as *sets*: calling the same function twice where the reference calls it once still
  matches; function names are not rewritten (the docs ask users to replace dots with underscores);
* ``function_name_and_args_accuracy`` is 0.0 whenever the names differ; otherwise each call's arguments
  must equal the reference's (again as a set of calls), comparing JSON values: object key order does not
  matter and ``1`` equals ``1.0``, but ``"5"`` is not ``5`` and ``true`` is not ``1``; the reference's
  arguments are taken as given (a JSON *string* there never equals an object);
* a prediction's ``arguments`` must be a JSON string (absent means ``{}``); when one cannot be decoded the
  sample has no ``function_name_and_args_accuracy`` (null, counted in ``nan_count``), while its
  ``function_name_accuracy`` stands;
* predicted calls without a function name are ignored; no calls (absent, null or ``[]``) is the empty set;
* a reference that is not a list of calls with ``function.name`` and ``function.arguments`` (``null``
  included: "no call expected" is ``[]``), or an answer without ``choices[0].message``, cannot be scored:
  both scores are null.

**``llm-judge`` scores** (docs, "Evaluate with LLM-as-a-Judge" > "Score Parsers"): each score's
``parser: {type: regex, pattern}`` is applied to the judge's reply with ``method`` ``match`` (from the
start of the reply, the default) or ``search`` (anywhere, first occurrence); the value is the pattern's
first capture group cast to the score's ``type`` (``int``: Python's ``int()`` of the captured text, so
``"8.0"`` does not cast; otherwise ``float()``). An empty reply, no match, a pattern without a group, a
cast that fails or a value that is not finite gives null.

A null value is counted in ``nan_count`` and left out of the mean, never a crash.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

FUNCTION_NAME = "function_name_accuracy"
FUNCTION_NAME_AND_ARGS = "function_name_and_args_accuracy"

Score = float | None


class _Unscorable(Exception):
    """The sample cannot be scored (malformed reference or answer)."""


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


def _json_value(value: Any) -> Any:
    """A hashable form of a JSON value in which equal JSON values are equal (``1`` and ``1.0`` too)."""
    if value is None or isinstance(value, bool | str):
        return (type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", value)  # Python's 1 == 1.0 (and equal hashes) is JSON's number equality
    if isinstance(value, list):
        return ("array", tuple(_json_value(item) for item in value))
    if isinstance(value, Mapping):
        return ("object", frozenset((str(key), _json_value(item)) for key, item in value.items()))
    raise _Unscorable(f"not a JSON value: {type(value).__name__}")


def _reference_calls(ground_truth: Any) -> list[tuple[str, Any]]:
    """``(name, arguments)`` of each reference call; raises _Unscorable when the reference is malformed."""
    if not isinstance(ground_truth, list):
        raise _Unscorable("the reference is not a list of tool calls (no call expected is [])")
    calls = []
    for call in ground_truth:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _Unscorable("a reference call has no function.name")
        if "arguments" not in function:
            raise _Unscorable("a reference call has no function.arguments")
        calls.append((function["name"], function["arguments"]))
    return calls


def _predicted_calls(response: Any) -> list[tuple[str, Any]]:
    """``(name, raw arguments)`` of each named call in ``choices[0].message.tool_calls``."""
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise _Unscorable("the answer has no choices")
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        raise _Unscorable("the answer has no message")
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise _Unscorable("tool_calls is not a list")
    calls = []
    for call in tool_calls:
        if not isinstance(call, Mapping):
            raise _Unscorable("a tool call is not an object")
        function = call.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            calls.append((function["name"], function.get("arguments")))
    return calls


def _decoded(arguments: Any) -> Any:
    """A prediction's arguments decoded from their JSON string; raises ValueError when they cannot be."""
    if arguments is None:
        return {}
    if not isinstance(arguments, str):
        raise ValueError("arguments are not a JSON string")
    try:
        return json.loads(arguments)
    except RecursionError as exc:
        raise ValueError("arguments nest too deeply") from exc


def tool_calling_scores(response: Any, ground_truth: Any) -> dict[str, Score]:
    """``function_name_accuracy`` and ``function_name_and_args_accuracy`` of one sample (1.0, 0.0 or null)."""
    try:
        reference = _reference_calls(ground_truth)
        predicted = _predicted_calls(response)
        names_match = {name for name, _ in reference} == {name for name, _ in predicted}
        try:
            decoded = [(name, _decoded(arguments)) for name, arguments in predicted]
        except ValueError:
            return {FUNCTION_NAME: 1.0 if names_match else 0.0, FUNCTION_NAME_AND_ARGS: None}
        same_calls = names_match and (
            {(name, _json_value(arguments)) for name, arguments in reference}
            == {(name, _json_value(arguments)) for name, arguments in decoded}
        )
    except _Unscorable:
        return {FUNCTION_NAME: None, FUNCTION_NAME_AND_ARGS: None}
    return {FUNCTION_NAME: 1.0 if names_match else 0.0, FUNCTION_NAME_AND_ARGS: 1.0 if same_calls else 0.0}


def parse_score(reply: Any, parser: Any, kind: Any) -> Score:
    """One judge score: the regex parser's first group in ``reply``, cast to ``kind``; null when there is none."""
    if not isinstance(reply, str) or not reply or not isinstance(parser, Mapping):
        return None
    if parser.get("type", "regex") != "regex" or not isinstance(parser.get("pattern"), str):
        return None
    try:
        pattern = re.compile(parser["pattern"])
    except re.error:
        return None
    found = pattern.search(reply) if parser.get("method") == "search" else pattern.match(reply)
    if found is None or not found.groups() or found.group(1) is None:
        return None
    text = found.group(1)
    try:
        value = float(int(text)) if kind in ("int", "integer") else float(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def judge_scores(reply: str, scores: dict[str, Any]) -> dict[str, Score]:
    """Each configured score (``scores.<name>: {type, parser}``) parsed from the judge's reply."""
    return {
        name: parse_score(reply, spec.get("parser"), spec.get("type")) if isinstance(spec, Mapping) else None
        for name, spec in scores.items()
    }


def aggregate(values: list[Score]) -> dict[str, Any]:
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
