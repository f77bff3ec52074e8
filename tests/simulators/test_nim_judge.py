"""The simulated LLM judge and embeddings: deterministic, and right by their documented rules."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from simulators.nim.embeddings import cosine, embed, encode
from simulators.nim.judge import judge_answer, judge_kind, similarity_score, tool_call_rating

TOOL_JUDGE_SYSTEM = (
    "You are an expert judge of tool calls. Compare the prediction with the ground truth.\n"
    "Return: RATING: 0 or 1\nEXPLANATION: ..."
)
SIMILARITY_SYSTEM = (
    "You are an expert evaluator. Score similarity on a scale of 1 to 10 between the reference and the "
    "candidate. Return ONLY the integer (1-10)."
)
TRUTH = [
    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "NYC", "days": 2}'}}
]


def _tool_judge(truth: str, prediction: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": TOOL_JUDGE_SYSTEM},
        {"role": "user", "content": f"*Ground Truth*: {truth}\n*Prediction*: {prediction}"},
    ]


def test_tool_call_judge_reads_python_repr_and_json() -> None:
    same = [
        {
            "id": "zz",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"days": 2.0, "location": "nyc"}},
        }
    ]
    reply = judge_answer(_tool_judge(str(TRUTH), str(same)))
    assert reply is not None and reply.startswith("RATING: 1\nEXPLANATION:")
    import json

    assert judge_answer(_tool_judge(json.dumps(TRUTH), json.dumps(same))) == reply
    other_args = [{"function": {"name": "get_weather", "arguments": '{"location": "LA", "days": 2}'}}]
    assert judge_answer(_tool_judge(str(TRUTH), str(other_args))).startswith("RATING: 0")  # type: ignore[union-attr]
    other_name = [{"function": {"name": "get_time", "arguments": '{"location": "NYC", "days": 2}'}}]
    assert tool_call_rating(str(TRUTH), str(other_name))[0] == 0
    assert tool_call_rating(str(TRUTH), "None")[0] == 0
    assert tool_call_rating(str(TRUTH), "not a call at all {")[0] == 0
    assert tool_call_rating("None", "None")[0] == 1


def test_similarity_judge_scores_by_word_overlap() -> None:
    assert similarity_score("Your order has shipped.", "your order has SHIPPED") == 10
    assert similarity_score("Your order has shipped today.", "Your order shipped.") in range(5, 10)
    assert similarity_score("Your order has shipped.", "Bananas are yellow.") == 1
    user = "TASK / QUESTION\n<<<\nwhere?\n>>>\n\nREFERENCE ANSWER\n<<<\nIt shipped.\n>>>\n\nCANDIDATE ANSWER\n<<<\nIt shipped!\n>>>"
    messages = [{"role": "system", "content": SIMILARITY_SYSTEM}, {"role": "user", "content": user}]
    assert judge_kind(messages) == "similarity"
    reply = judge_answer(messages)
    assert reply is not None
    assert re.search(r"(\d+)", reply).group(1) == "10"  # type: ignore[union-attr]
    assert "EXPLANATION:" in reply and not re.search(r"\d", reply.split("\n", 1)[1])


def test_ordinary_prompts_are_not_judge_prompts() -> None:
    assert judge_kind([{"role": "user", "content": "Rate my order please, 1 to 10"}]) is None
    assert judge_answer([{"role": "user", "content": "hello"}]) is None


def test_embeddings_are_unit_vectors_and_similar_texts_are_close() -> None:
    a = embed("Where is my order ORD-10234?", 256)
    b = embed("where is order ORD-10234", 256)
    c = embed("Do you sell cast iron skillets?", 256)
    assert a.shape == (256,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(a, embed("Where is my order ORD-10234?", 256))
    assert cosine(a, b) > 0.7 > 0.3 > cosine(a, c)
    assert np.linalg.norm(embed("", 64)) == pytest.approx(1.0)
    decoded = np.frombuffer(base64.b64decode(encode(a, "base64")), dtype="<f4")  # type: ignore[arg-type]
    assert np.allclose(decoded, a)
    assert encode(a, "float") == pytest.approx([float(x) for x in a])
