"""The quality model of the NIM simulator: how often a model answers like the teacher, and how it errs.

**Reference answer.** For a request, the reference is what the teacher answered to the same conversation:
the logged answer found in the log server under ``conversation_key(messages, tools)`` (the key ignores an
ICL block, :mod:`.conversation`), or, when nothing is logged, the rule-based teacher policy (:mod:`.teacher`).

**Probability of answering like the reference** (defaults; all in ``nim.quality`` and ``nim.models``):

* size ``s`` in billions of parameters, parsed from the model name (``-1b-``, ``70b``; a LoRA adapter uses
  its root model): ``p_base`` is piecewise linear in ``log(s)`` through the anchors
  ``1B: 0.60, 3B: 0.70, 8B: 0.80, 70B: 0.99`` and clamped outside them (``nim.models.<id>.p_base`` overrides);
* a LoRA adapter trained on ``n`` records moves it towards ``lora_ceiling = 0.985``:
  ``p = p_base + (0.985 - p_base) * (1 - exp(-n_eff / 150))``, ``n_eff = n * min(epochs, 1) / 1``
  (``lora_epoch_saturation``); an adapter never makes a model worse;
* ``k`` in-context examples close a share ``0.2 * min(k, 3) / 3`` of the remaining gap to 1
  (so a 1B model gains +0.08 with three examples, an 8B one +0.04).

So a base 1B model agrees with the teacher ~60% of the time, with 3 ICL examples ~68%, after LoRA on
1,000 records ~98.3%, and the 70B teacher ~99% with its own logged answers (which are its policy's answers
when it answered like the reference, i.e. 99% of them).

**Decision.** The model answers like the reference iff ``u < p``, where ``u`` in [0, 1) is a SHA-256 of
(model id, conversation key): reruns agree, adding ICL examples to the same model only turns wrong answers
right, and different models err on different conversations.

**Mistakes** (kind chosen by another hash among those possible for the request): another offered tool
(``wrong_tool``), one argument with a wrong value or left out (``wrong_argument``), a text answer where a
call was wanted (``no_call``), a call where text was wanted (``unwanted_call``), or a different, vaguer
text (``other_text``). ``tool_choice`` is honoured last: ``none`` never calls, ``required`` always calls,
``{"function": ...}`` calls that function.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulators.nim.settings import QualityParams
from simulators.nim.teacher import Answer, ToolCall, call_for, functions, rank_tools, text_reply, user_texts

_SIZE = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)b(?![a-z0-9])")


@dataclass(frozen=True)
class LoraInfo:
    """What the Customizer says about an adapter: how much data it saw."""

    train_records: int
    epochs: int = 1


def parse_size_b(name: str) -> float | None:
    """Billions of parameters in a model name (``meta/llama-3.2-1b-instruct`` -> 1.0), ``None`` if absent.

    The part after ``@`` (a LoRA's job id) is ignored; ``8x7b`` counts as 56.
    """
    base = name.split("@", 1)[0].lower()
    sizes = []
    for match in _SIZE.finditer(base):
        experts = int(match.group(1)) if match.group(1) else 1
        sizes.append(experts * float(match.group(2)))
    return sizes[-1] if sizes else None


def base_probability(size_b: float, params: QualityParams) -> float:
    """``p_base`` for a model of ``size_b`` billion parameters (interpolated in log size)."""
    anchors = sorted(params.size_anchors.items())
    if size_b <= anchors[0][0]:
        return anchors[0][1]
    if size_b >= anchors[-1][0]:
        return anchors[-1][1]
    for (s0, p0), (s1, p1) in itertools.pairwise(anchors):
        if s0 <= size_b <= s1:
            t = (math.log(size_b) - math.log(s0)) / (math.log(s1) - math.log(s0))
            return p0 + t * (p1 - p0)
    return anchors[-1][1]  # pragma: no cover - the loop always returns


def lora_probability(p: float, lora: LoraInfo | None, params: QualityParams) -> float:
    """``p`` after a LoRA adapter: saturating in the number of training records, never lower than ``p``."""
    if lora is None or lora.train_records <= 0 or params.lora_ceiling <= p:
        return p
    saturation = params.lora_epoch_saturation
    effective = lora.train_records * min(max(lora.epochs, 0), saturation) / saturation
    return p + (params.lora_ceiling - p) * (1.0 - math.exp(-effective / params.lora_records_scale))


def icl_probability(p: float, icl_examples: int, params: QualityParams) -> float:
    """``p`` with ``icl_examples`` in-context examples: a share of the gap to 1 is closed."""
    if icl_examples <= 0:
        return p
    share = params.icl_gap_fraction * min(icl_examples, params.icl_saturation) / params.icl_saturation
    return p + (1.0 - p) * share


def answer_probability(
    size_b: float, icl_examples: int, lora: LoraInfo | None, params: QualityParams, p_base: float | None = None
) -> float:
    """The probability that a model answers like the teacher (module docstring: size, then LoRA, then ICL)."""
    p = base_probability(size_b, params) if p_base is None else p_base
    return min(1.0, icl_probability(lora_probability(p, lora, params), icl_examples, params))


def unit_hash(*parts: str) -> float:
    """A stable number in [0, 1) from strings: the simulator's only source of "randomness"."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Decision:
    """What a model answers and why (reported in ``nvext.quality``)."""

    answer: Answer
    followed_reference: bool
    mistake: str | None
    p: float
    u: float


def _tool_choice_name(tool_choice: Any) -> str | None:
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _perturb(value: Any, schema: Mapping[str, Any], pick: float) -> Any:
    options = schema.get("enum")
    if isinstance(options, list) and len(options) > 1:
        others = [o for o in options if o != value]
        return others[int(pick * len(others))]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        digits = [i for i, c in enumerate(value) if c.isdigit()]
        if digits:
            i = digits[-1]
            return value[:i] + str((int(value[i]) + 1) % 10) + value[i + 1 :]
        parts = value.split()
        if len(parts) > 1:
            return " ".join(parts[:-1])
        return value + " item" if value else "unknown"
    if isinstance(value, list):
        return value[:-1] if value else ["unknown"]
    return None


def _wrong_argument(call: ToolCall, offered: list[dict[str, Any]], pick: float) -> ToolCall | None:
    arguments = call.arguments if isinstance(call.arguments, dict) else None
    function: Mapping[str, Any] = next((f for f in offered if f.get("name") == call.name), {})
    parameters = _mapping(function.get("parameters"))
    properties = _mapping(parameters.get("properties"))
    if not arguments:
        if not properties:
            return None
        name = sorted(properties)[int(pick * len(properties))]
        return ToolCall(call.name, {name: "unknown"})
    name = sorted(arguments)[int(pick * len(arguments))]
    changed = dict(arguments)
    if pick * len(arguments) % 1 < 0.3 and len(arguments) > 1:
        del changed[name]  # a missing argument
    else:
        changed[name] = _perturb(arguments[name], _mapping(properties.get(name)), pick)
    return ToolCall(call.name, changed)


def _other_text(reference: Answer, pick: float) -> str:
    replies = (
        "I'm sorry, I'm not sure I understood. Could you rephrase that?",
        "Let me check on that and get back to you shortly.",
        "That depends on a few things; please contact our support team for the details.",
    )
    reply = replies[int(pick * len(replies))]
    return reply if reply != reference.text else replies[(int(pick * len(replies)) + 1) % len(replies)]


def mistake(
    reference: Answer, messages: Sequence[Any], tools: Any, tool_choice: Any, pick: float
) -> tuple[Answer, str]:
    """A plausible wrong answer, different from ``reference``; ``pick`` in [0, 1) chooses which."""
    offered = functions(tools)
    may_skip_call = tool_choice in (None, "auto") and _tool_choice_name(tool_choice) is None
    may_call = bool(offered) and tool_choice != "none"
    kinds: list[str] = []
    if reference.calls:
        call = reference.calls[0]
        if len([f for f in offered if f["name"] != call.name]) >= 1 and _tool_choice_name(tool_choice) is None:
            kinds.append("wrong_tool")
        if _wrong_argument(call, offered, pick) is not None:
            kinds.append("wrong_argument")
        if may_skip_call:
            kinds.append("no_call")
    else:
        if may_call:
            kinds.append("unwanted_call")
        if tool_choice not in ("required",) and _tool_choice_name(tool_choice) is None:
            kinds.append("other_text")
    if not kinds:
        return reference, "none_possible"
    scaled = pick * len(kinds)
    kind = kinds[int(scaled)]
    inner = scaled % 1.0
    if kind == "wrong_tool":
        call = reference.calls[0]
        ranked = [f for _, f in rank_tools(tools, user_texts(messages)) if f["name"] != call.name]
        other = ranked[0] if inner < 0.5 else ranked[int(inner * len(ranked))]
        return Answer(calls=(call_for(other, messages),)), kind
    if kind == "wrong_argument":
        changed = _wrong_argument(reference.calls[0], offered, inner)
        assert changed is not None
        return Answer(calls=(changed, *reference.calls[1:])), kind
    if kind == "no_call":
        return Answer(content=text_reply(messages)), kind
    if kind == "unwanted_call":
        best = rank_tools(tools, user_texts(messages))[0][1]
        return Answer(calls=(call_for(best, messages),)), kind
    return Answer(content=_other_text(reference, inner)), kind


def enforce_tool_choice(
    answer: Answer, reference: Answer, messages: Sequence[Any], tools: Any, tool_choice: Any
) -> Answer:
    """Make ``answer`` obey ``tool_choice`` the way a guided-decoding NIM does."""
    offered = functions(tools)
    forced_name = _tool_choice_name(tool_choice)
    if tool_choice == "none" or not offered:
        if answer.calls:
            text = reference.text if not reference.calls and reference.text else text_reply(messages)
            return Answer(content=text)
        return answer
    if forced_name is not None:
        kept = tuple(c for c in answer.calls if c.name == forced_name)
        if kept:
            return Answer(calls=kept)
        from_reference = tuple(c for c in reference.calls if c.name == forced_name)
        if from_reference:
            return Answer(calls=from_reference[:1])
        function = next((f for f in offered if f["name"] == forced_name), None)
        return Answer(calls=(call_for(function, messages),)) if function else answer
    if tool_choice == "required" and not answer.calls:
        best = rank_tools(tools, user_texts(messages))[0][1]
        return Answer(calls=(call_for(best, messages),))
    offered_names = {f["name"] for f in offered}
    if answer.calls and not all(c.name in offered_names for c in answer.calls):
        kept = tuple(c for c in answer.calls if c.name in offered_names)
        return Answer(calls=kept) if kept else Answer(content=text_reply(messages))
    return answer


def decide(
    model_id: str,
    conversation: str,
    p: float,
    reference: Answer,
    messages: Sequence[Any],
    tools: Any,
    tool_choice: Any,
) -> Decision:
    """The model's answer: the reference with probability ``p`` (stable per model and conversation), else a mistake."""
    u = unit_hash(model_id, conversation)
    if u < p:
        answer, kind = reference, None
    else:
        answer, made = mistake(reference, messages, tools, tool_choice, unit_hash(model_id, conversation, "mistake"))
        kind = made
    final = enforce_tool_choice(answer, reference, messages, tools, tool_choice)
    return Decision(answer=final, followed_reference=kind is None, mistake=kind, p=p, u=u)
