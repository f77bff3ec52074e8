"""The LLM-as-judge behaviour of the NIM simulator: deterministic and always right by its own rules.

A request is a judge request when its prompt looks like one of the two judge prompts the Evaluator sends:

* **tool-calling correctness**: the prompt asks for ``RATING:`` and the user message holds
  ``*Ground Truth*: ...`` and ``*Prediction*: ...`` (JSON or the Python repr a Jinja template prints).
  The answer is ``RATING: 1`` when both hold the same calls (same function names, same arguments after
  parsing, with strings compared case- and punctuation-insensitively and numbers by value), else
  ``RATING: 0``; then ``EXPLANATION: ...``.
* **similarity**: the system prompt asks for a 1-10 similarity score and the user message holds
  ``REFERENCE ANSWER <<< ... >>>`` and ``CANDIDATE ANSWER <<< ... >>>``. The answer is ``10`` when the two
  texts are equal after normalisation, else ``1 + round(8 * F1)`` of their bags of words (so 1..9),
  then ``EXPLANATION: ...`` (which holds no digits, so a ``(\\d)`` parser still reads the score's first
  digit; note that such a parser reads ``10`` as ``1``).

Any model answers judge prompts this way, so the judge's quality does not depend on which model is used.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from simulators.nim.conversation import decoded_arguments
from simulators.nim.text import content_text, normalise, word_f1

Call = tuple[str, Any]  # (function name, decoded arguments)

_GROUND_TRUTH = re.compile(
    r"\*?\s*ground\s*truth\s*\*?\s*:\s*(.*?)\s*\n\s*\*?\s*prediction\s*\*?\s*:\s*(.*)$", re.IGNORECASE | re.DOTALL
)
_REFERENCE = re.compile(r"REFERENCE ANSWER\s*<<<\s*(.*?)\s*>>>", re.DOTALL | re.IGNORECASE)
_CANDIDATE = re.compile(r"CANDIDATE ANSWER\s*<<<\s*(.*?)\s*>>>", re.DOTALL | re.IGNORECASE)
_SCALE = re.compile(r"\b1\s*(?:-|–|to)\s*10\b")


def _texts(messages: Sequence[Any], role: str) -> str:
    return "\n".join(
        content_text(m.get("content")) for m in messages if isinstance(m, Mapping) and m.get("role") == role
    )


def judge_kind(messages: Sequence[Any]) -> str | None:
    """``"tool_calling"``, ``"similarity"`` or ``None`` (not a judge prompt), by keywords."""
    system, user = _texts(messages, "system"), _texts(messages, "user")
    everything = f"{system}\n{user}"
    if "RATING" in everything.upper() and _GROUND_TRUTH.search(user):
        return "tool_calling"
    lowered = system.lower() or user.lower()
    if "similar" in lowered and _SCALE.search(lowered) and _REFERENCE.search(user) and _CANDIDATE.search(user):
        return "similarity"
    return None


def _calls(value: list[Any]) -> list[Call]:
    """The OpenAI-shaped calls of a list; a call without a usable name keeps an empty one (so it never matches)."""
    calls = []
    for call in value:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            name = function.get("name")
            calls.append((name if isinstance(name, str) else "", decoded_arguments(function.get("arguments"))))
    return calls


def _parse_calls(text: str) -> list[Call] | None:
    """Calls from a JSON or Python-literal rendering; ``None`` when it is not a list of calls (or null)."""
    text = text.strip()
    if text in ("", "None", "null", "[]"):
        return []
    value: Any = None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return None
    if isinstance(value, Mapping):
        value = value.get("tool_calls", [value])
    if value is None:
        return []
    if not isinstance(value, list):
        return None
    return _calls(value)


def _normal_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return normalise(value)
    if isinstance(value, list):
        return [_normal_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _normal_value(v) for k, v in value.items()}
    return value


def _normal_call(call: Call) -> tuple[str, str]:
    name, arguments = call
    return name, json.dumps(_normal_value(arguments), sort_keys=True)


def tool_call_rating(ground_truth: str, prediction: str) -> tuple[int, str]:
    """(0 or 1, why) for two renderings of tool calls."""
    truth, predicted = _parse_calls(ground_truth), _parse_calls(prediction)
    if predicted is None:
        return 0, "The prediction is not a valid list of tool calls."
    if truth is None:
        return 0, "The ground truth could not be read."
    if not truth and not predicted:
        return 1, "Neither the ground truth nor the prediction calls a tool."
    if not predicted:
        return 0, "The prediction makes no tool call."
    if sorted(name for name, _ in truth) != sorted(name for name, _ in predicted):
        return 0, "The predicted function name does not match the ground truth."
    if sorted(_normal_call(c) for c in truth) != sorted(_normal_call(c) for c in predicted):
        return 0, "The function name matches but the arguments differ."
    return 1, "The prediction calls the same function with the same arguments."


def similarity_score(reference: str, candidate: str) -> int:
    """1..10: 10 for equal texts after normalisation, else ``1 + round(8 * word F1)``."""
    if normalise(reference) == normalise(candidate):
        return 10
    return 1 + round(8 * word_f1(reference, candidate))


def judge_answer(messages: Sequence[Any]) -> str | None:
    """The judge's reply to a judge prompt, or ``None`` when ``messages`` are not one."""
    kind = judge_kind(messages)
    user = _texts(messages, "user")
    if kind == "tool_calling":
        match = _GROUND_TRUTH.search(user)
        assert match is not None
        rating, why = tool_call_rating(match.group(1), match.group(2))
        return f"RATING: {rating}\nEXPLANATION: {why}"
    if kind == "similarity":
        reference, candidate = _REFERENCE.search(user), _CANDIDATE.search(user)
        assert reference is not None and candidate is not None
        score = similarity_score(reference.group(1), candidate.group(1))
        if score == 10:
            why = "The candidate says the same as the reference."
        elif score >= 6:
            why = "The candidate shares most of the reference's content."
        else:
            why = "The candidate shares little of the reference's content."
        return f"{score}\nEXPLANATION: {why}"
    return None
