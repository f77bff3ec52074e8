"""The NIM simulator's quality model: calibration, determinism, mistakes, and the demo's expected outcome."""

from __future__ import annotations

import hashlib
import random

import pytest

from simulators.nim.quality import (
    LoraInfo,
    answer_probability,
    base_probability,
    decide,
    enforce_tool_choice,
    icl_probability,
    lora_probability,
    mistake,
    parse_size_b,
)
from simulators.nim.settings import QualityParams
from simulators.nim.teacher import Answer, ToolCall

Q = QualityParams()


def _tool(name: str, description: str, **properties: dict[str, object]) -> dict[str, object]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(properties)},
        },
    }


TOOLS = [
    _tool("get_order_status", "Look up where an order is.", order_id={"type": "string"}),
    _tool(
        "cancel_order",
        "Cancel an order.",
        order_id={"type": "string"},
        reason={"type": "string", "enum": ["changed_mind", "too_slow", "other"]},
    ),
    _tool("search_products", "Search the catalogue.", query={"type": "string"}),
]
MESSAGES = [{"role": "user", "content": "Please cancel ORD-1234, it is too slow"}]
REFERENCE = Answer(calls=(ToolCall("cancel_order", {"order_id": "ORD-1234", "reason": "too_slow"}),))


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("meta/llama-3.2-1b-instruct", 1.0),
        ("meta/llama-3.3-70b-instruct", 70.0),
        ("meta/llama-3.1-8b-instruct", 8.0),
        ("dfwbp/customized-meta-llama-3.2-3b-instruct@cust-Ab3b9", 3.0),
        ("mistralai/mixtral-8x7b-instruct-v0.1", 56.0),
        ("nvidia/nemotron-mini", None),
    ],
)
def test_size_is_parsed_from_the_name(name: str, size: float | None) -> None:
    assert parse_size_b(name) == size


def test_calibration_points() -> None:
    assert base_probability(1, Q) == pytest.approx(0.60)
    assert base_probability(3, Q) == pytest.approx(0.70)
    assert base_probability(8, Q) == pytest.approx(0.80)
    assert base_probability(70, Q) == pytest.approx(0.99)
    assert base_probability(0.5, Q) == pytest.approx(0.60)
    assert base_probability(405, Q) == pytest.approx(0.99)
    assert 0.60 < base_probability(2, Q) < 0.70
    # ICL: +0.08 for a 1B model with three examples, half the effect for an 8B one; saturates at three.
    assert icl_probability(0.60, 3, Q) == pytest.approx(0.68)
    assert icl_probability(0.80, 3, Q) == pytest.approx(0.84)
    assert icl_probability(0.60, 10, Q) == pytest.approx(0.68)
    assert icl_probability(0.60, 1, Q) == pytest.approx(0.60 + 0.08 / 3)
    # LoRA: towards 0.985 as 1 - exp(-n / 150); never worse.
    assert lora_probability(0.60, LoraInfo(150, 2), Q) == pytest.approx(0.60 + 0.385 * (1 - 2.718281828**-1))
    assert lora_probability(0.60, LoraInfo(1000, 2), Q) > 0.98
    assert lora_probability(0.99, LoraInfo(1000, 2), Q) == 0.99
    assert lora_probability(0.60, LoraInfo(1000, 0), Q) == 0.60
    assert answer_probability(1, 0, LoraInfo(800, 2), Q) > 0.98
    assert answer_probability(1, 3, None, Q, p_base=0.5) == pytest.approx(0.5 + 0.5 * 0.2)


def test_decisions_are_stable_and_follow_p() -> None:
    first = decide("m", "conv-1", 0.6, REFERENCE, MESSAGES, TOOLS, "auto")
    assert decide("m", "conv-1", 0.6, REFERENCE, MESSAGES, TOOLS, "auto") == first
    followed = sum(
        decide("m", f"conv-{i}", 0.6, REFERENCE, MESSAGES, TOOLS, "auto").followed_reference for i in range(3000)
    )
    assert abs(followed / 3000 - 0.6) < 0.03
    assert decide("m", "c", 1.0, REFERENCE, MESSAGES, TOOLS, "auto").answer == REFERENCE


def test_more_icl_only_turns_wrong_answers_right() -> None:
    for i in range(500):
        base = decide("m", f"c{i}", 0.60, REFERENCE, MESSAGES, TOOLS, "auto")
        icl = decide("m", f"c{i}", 0.68, REFERENCE, MESSAGES, TOOLS, "auto")
        assert not base.followed_reference or icl.followed_reference


@pytest.mark.parametrize("tool_choice", ["auto", "required", "none"])
def test_mistakes_differ_from_the_reference_and_obey_tool_choice(tool_choice: str) -> None:
    kinds = set()
    for i in range(200):
        pick = i / 200
        answer, kind = mistake(REFERENCE, MESSAGES, TOOLS, tool_choice, pick)
        final = enforce_tool_choice(answer, REFERENCE, MESSAGES, TOOLS, tool_choice)
        kinds.add(kind)
        if tool_choice != "none":
            assert final != REFERENCE
        if tool_choice == "none":
            assert not final.calls
        if tool_choice == "required":
            assert final.calls
    expected = {"wrong_tool", "wrong_argument"} | ({"no_call"} if tool_choice == "auto" else set())
    assert kinds == expected


def test_text_references_get_text_or_unwanted_calls_as_mistakes() -> None:
    reference = Answer(content="Hello! How can I help you today?")
    kinds = {mistake(reference, [{"role": "user", "content": "hi"}], TOOLS, "auto", i / 50)[1] for i in range(50)}
    assert kinds == {"unwanted_call", "other_text"}
    no_tools = mistake(reference, [{"role": "user", "content": "hi"}], None, None, 0.3)
    assert no_tools[1] == "other_text" and no_tools[0].text != reference.text


def test_forced_function_is_called() -> None:
    forced = {"type": "function", "function": {"name": "search_products"}}
    final = enforce_tool_choice(REFERENCE, REFERENCE, MESSAGES, TOOLS, forced)
    assert [c.name for c in final.calls] == ["search_products"]
    same = enforce_tool_choice(REFERENCE, REFERENCE, MESSAGES, TOOLS, {"function": {"name": "cancel_order"}})
    assert same == REFERENCE


def _bootstrap_lower_bound(diffs: list[int], samples: int = 2000, alpha: float = 0.05) -> float:
    rng = random.Random(7)
    n = len(diffs)
    means = sorted(sum(rng.choice(diffs) for _ in range(n)) / n for _ in range(samples))
    return means[int(alpha * samples)]


def test_the_demo_outcome_fine_tuned_1b_is_non_inferior_and_base_is_not() -> None:
    """~150 eval conversations graded against the teacher's logged answers, as the flywheel does."""
    teacher_p = answer_probability(70, 0, None, Q)
    models = {
        "base": answer_probability(1, 0, None, Q),
        "icl": answer_probability(1, 3, None, Q),
        "customized": answer_probability(1, 0, LoraInfo(train_records=800, epochs=2), Q),
    }
    convs = [hashlib.sha256(f"eval-{i}".encode()).hexdigest() for i in range(150)]

    def correct(model: str, p: float) -> list[int]:
        return [int(decide(model, c, p, REFERENCE, MESSAGES, TOOLS, "auto").answer == REFERENCE) for c in convs]

    teacher = correct("meta/llama-3.3-70b-instruct", teacher_p)
    scores = {
        mode: correct("meta/llama-3.2-1b-instruct" if mode != "customized" else "ns/ft@cust-1", p)
        for mode, p in models.items()
    }
    assert sum(teacher) / len(teacher) > 0.96
    lower = {
        mode: _bootstrap_lower_bound([a - b for a, b in zip(s, teacher, strict=True)]) for mode, s in scores.items()
    }
    assert lower["customized"] > -0.05
    assert lower["base"] < -0.2
    assert lower["icl"] < -0.15
