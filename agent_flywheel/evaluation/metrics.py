"""The tool-calling metrics: their names, and the per-sample scores.

Per-sample values are 1.0 or 0.0; aggregates are means, and every comparison between models goes through
a bootstrap interval (:mod:`agent_flywheel.evaluation.bootstrap`), never a bare mean.

Difference from the blueprint, on purpose: a reference with no tool call matched by a prediction with
none is a *match* (we evaluate "no call" decisions; the blueprint drops those records and forces
``tool_choice: required``). The judge's differences are in :mod:`agent_flywheel.evaluation.judge`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from agent_flywheel.records.conversation import parse_arguments

FUNCTION_NAME_ACCURACY = "function_name_accuracy"
FUNCTION_NAME_AND_ARGS_ACCURACY = "function_name_and_args_accuracy"
TOOL_CALLING_CORRECTNESS = "tool_calling_correctness"
SIMILARITY = "similarity"
TOOL_CALLING_METRICS: tuple[str, ...] = (
    FUNCTION_NAME_ACCURACY,
    FUNCTION_NAME_AND_ARGS_ACCURACY,
    TOOL_CALLING_CORRECTNESS,
)
ALL_METRICS: tuple[str, ...] = (*TOOL_CALLING_METRICS, SIMILARITY)


def _normalise_value(value: Any) -> Any:
    """JSON value in a canonical form: integral floats become ints, so ``1`` and ``1.0`` compare equal."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise_value(v) for v in value]
    return value


def _canonical_arguments(arguments: Any) -> str:
    """Arguments as a canonical JSON string; absent or empty arguments are the empty object."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        arguments = {}
    parsed = parse_arguments(arguments)
    return json.dumps(_normalise_value(parsed), sort_keys=True, ensure_ascii=False, default=str)


def _calls(tool_calls: Any) -> list[tuple[str, str]]:
    """``(name, canonical args)`` per call from OpenAI-shaped calls, flat ``{name, arguments}`` or JSON text.

    ``None``, ``"null"``, ``""`` and ``[]`` all mean "no call". Anything that is not a call counts as a call
    with an invalid name, so a malformed prediction never matches a well-formed reference.
    """
    if isinstance(tool_calls, str):
        text = tool_calls.strip()
        if not text or text in ("null", "None"):
            return []
        try:
            tool_calls = json.loads(text)
        except json.JSONDecodeError:
            return [("<invalid>", text)]
    if tool_calls is None:
        return []
    if isinstance(tool_calls, Mapping):
        tool_calls = [tool_calls]
    if not isinstance(tool_calls, list):
        return [("<invalid>", repr(tool_calls))]
    result = []
    for call in tool_calls:
        if not isinstance(call, Mapping):
            result.append(("<invalid>", repr(call)))
            continue
        nested = call.get("function")
        function: Mapping[str, Any] = nested if isinstance(nested, Mapping) else call
        name = function.get("name")
        result.append((name if isinstance(name, str) else "<invalid>", _canonical_arguments(function.get("arguments"))))
    return result


def function_name_match(predicted_tool_calls: Any, reference_tool_calls: Any) -> float:
    """1.0 when the predicted calls name the same functions as the reference (as a multiset), else 0.0.

    Two empty sides match: choosing not to call a tool when the reference did not is a correct decision.
    """
    predicted = Counter(name for name, _ in _calls(predicted_tool_calls))
    reference = Counter(name for name, _ in _calls(reference_tool_calls))
    return 1.0 if predicted == reference else 0.0


def function_name_and_args_match(predicted_tool_calls: Any, reference_tool_calls: Any) -> float:
    """1.0 when names and parsed arguments match as a multiset of calls (order-insensitive), else 0.0.

    Arguments given as JSON strings or objects compare after parsing; key order and ``1`` vs ``1.0``
    do not matter, but types otherwise do (``"5"`` is not ``5``), as in an exact-match metric.
    """
    return 1.0 if Counter(_calls(predicted_tool_calls)) == Counter(_calls(reference_tool_calls)) else 0.0
