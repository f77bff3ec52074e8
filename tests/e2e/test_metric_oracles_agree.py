"""Two readings of NeMo Evaluator's metrics, side by side: the product's (``agent_flywheel.evaluation``) and the
NeMo simulator's (``simulators.nemo.scoring``, written from NeMo's documentation).

The same samples go through both. Where they agree, the test says so; where they legitimately differ, each
side is pinned to what it does today and the case names which one follows NeMo's definition, so a change on
either side shows up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from agent_flywheel.evaluation.judge import JUDGE_RATING_PATTERN, JUDGE_SIMILARITY_PATTERN, parse_judge_score
from agent_flywheel.evaluation.metrics import (
    FUNCTION_NAME_ACCURACY,
    FUNCTION_NAME_AND_ARGS_ACCURACY,
    function_name_and_args_match,
    function_name_match,
)
from agent_flywheel.evaluation.results import parse_sample_results
from agent_flywheel.nemo.payloads import TOOL_CALLS_GROUND_TRUTH, tool_calling_eval_config
from simulators.nemo.scoring import parse_score, tool_calling_scores
from simulators.nemo.templates import render_value

Pair = tuple[float | None, float | None]  # (function_name_accuracy, function_name_and_args_accuracy)


def call(name: str, arguments: Any) -> dict[str, Any]:
    """A tool call as a model returns it (the predicted side): ``arguments`` is usually a JSON string."""
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}


def product(predicted: Any, reference: Any) -> Pair:
    return function_name_match(predicted, reference), function_name_and_args_match(predicted, reference)


def simulator(predicted: Any, reference: Any) -> Pair:
    answer = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": predicted}}]}
    scores = tool_calling_scores(answer, reference)
    return scores["function_name_accuracy"], scores["function_name_and_args_accuracy"]


ORDER = call("get_order", {"order_id": "ORD-1", "verbose": True})
RETURN = call("start_return", {"order_id": "ORD-1", "reason": "damaged", "items": [1, 2]})

# (case, predicted tool calls, reference tool calls as the eval file holds them: arguments as objects, both agree on)
AGREE: list[tuple[str, Any, Any, Pair]] = [
    ("exact", [call("get_order", '{"order_id": "ORD-1", "verbose": true}')], [ORDER], (1.0, 1.0)),
    ("argument order", [call("get_order", '{"verbose": true, "order_id": "ORD-1"}')], [ORDER], (1.0, 1.0)),
    ("whitespace in the JSON", [call("get_order", '{ "order_id" :"ORD-1","verbose":true }')], [ORDER], (1.0, 1.0)),
    ("1 and 1.0", [call("f", '{"n": 1.0}')], [call("f", {"n": 1})], (1.0, 1.0)),
    ("1e2 and 100", [call("f", '{"n": 1e2}')], [call("f", {"n": 100})], (1.0, 1.0)),
    ("-0.0 and 0", [call("f", '{"n": -0.0}')], [call("f", {"n": 0})], (1.0, 1.0)),
    ("0.1 + 0.2 is not 0.3", [call("f", '{"n": 0.30000000000000004}')], [call("f", {"n": 0.3})], (1.0, 0.0)),
    ('"5" and 5', [call("f", '{"n": "5"}')], [call("f", {"n": 5})], (1.0, 0.0)),
    ("true and 1", [call("f", '{"n": true}')], [call("f", {"n": 1})], (1.0, 0.0)),
    ("null and absent", [call("f", '{"n": null}')], [call("f", {})], (1.0, 0.0)),
    ("case of a value", [call("get_order", '{"order_id": "ord-1", "verbose": true}')], [ORDER], (1.0, 0.0)),
    ("case of a name", [call("Get_Order", '{"order_id": "ORD-1", "verbose": true}')], [ORDER], (0.0, 0.0)),
    ("dots are not underscores", [call("orders.get", "{}")], [call("orders_get", {})], (0.0, 0.0)),
    (
        "list order matters",
        [call("start_return", '{"order_id": "ORD-1", "reason": "damaged", "items": [2, 1]}')],
        [RETURN],
        (1.0, 0.0),
    ),
    (
        "nested objects",
        [call("f", '{"a": {"b": [1, {"c": "é"}]}}')],
        [call("f", {"a": {"b": [1, {"c": "é"}]}})],
        (1.0, 1.0),
    ),
    ("an extra argument", [call("get_order", '{"order_id": "ORD-1", "verbose": true, "x": 1}')], [ORDER], (1.0, 0.0)),
    ("a missing argument", [call("get_order", '{"order_id": "ORD-1"}')], [ORDER], (1.0, 0.0)),
    ("wrong function", [call("start_return", '{"order_id": "ORD-1"}')], [ORDER], (0.0, 0.0)),
    (
        "parallel calls in another order",
        [
            call("start_return", '{"reason": "damaged", "items": [1, 2], "order_id": "ORD-1"}'),
            call("get_order", '{"order_id": "ORD-1", "verbose": true}'),
        ],
        [ORDER, RETURN],
        (1.0, 1.0),
    ),
    (
        "an extra call",
        [call("get_order", '{"order_id": "ORD-1", "verbose": true}'), call("f", "{}")],
        [ORDER],
        (0.0, 0.0),
    ),
    ("a missing call", [call("get_order", '{"order_id": "ORD-1", "verbose": true}')], [ORDER, RETURN], (0.0, 0.0)),
    ("a call where none was wanted", [call("f", "{}")], [], (0.0, 0.0)),
    ("no call where one was wanted", None, [ORDER], (0.0, 0.0)),
    ("no call, none wanted ([])", [], [], (1.0, 1.0)),
    ("no call, none wanted (null answer)", None, [], (1.0, 1.0)),
    ("absent arguments are {}", [call("f", None)], [call("f", {})], (1.0, 1.0)),
]


@pytest.mark.parametrize(("predicted", "reference", "expected"), [c[1:] for c in AGREE], ids=[c[0] for c in AGREE])
def test_the_tool_calling_metrics_agree(predicted: Any, reference: Any, expected: Pair) -> None:
    assert product(predicted, reference) == expected
    assert simulator(predicted, reference) == expected


@dataclass(frozen=True)
class Difference:
    """A sample the two read differently: what each gives, and which one follows NeMo Evaluator."""

    case: str
    predicted: Any
    reference: Any
    product: Pair
    simulator: Pair
    nemo: str  # "simulator" or "product": whose reading is NeMo's
    why: str


TOOL_DIFFERENCES = [
    Difference(
        "the same call twice where the reference has it once",
        [call("get_order", '{"order_id": "ORD-1", "verbose": true}')] * 2,
        [ORDER],
        product=(0.0, 0.0),
        simulator=(1.0, 1.0),
        nemo="simulator",
        why="NeMo compares the sets of function names (and of calls); the product counts repeats (a multiset)",
    ),
    Difference(
        "predicted arguments that are not JSON",
        [call("get_order", '{"order_id": "ORD-1", ')],
        [ORDER],
        product=(1.0, 0.0),
        simulator=(1.0, None),
        nemo="simulator",
        why="NeMo reports no function_name_and_args_accuracy (NaN, left out of the mean) when it cannot decode"
        " a prediction's arguments; the product scores 0",
    ),
    Difference(
        "predicted arguments that are an empty string",
        [call("f", "")],
        [call("f", {})],
        product=(1.0, 1.0),
        simulator=(1.0, None),
        nemo="simulator",
        why='"" is not JSON: NeMo cannot decode it (NaN); the product reads it as {}',
    ),
    Difference(
        "predicted arguments given as an object, not a JSON string",
        [call("get_order", {"order_id": "ORD-1", "verbose": True})],
        [ORDER],
        product=(1.0, 1.0),
        simulator=(1.0, None),
        nemo="simulator",
        why="NeMo decodes the prediction's arguments from the JSON string an OpenAI answer carries; an object"
        " cannot be decoded (NaN). A NIM always sends a string, so only hand-made answers differ",
    ),
    Difference(
        "reference arguments as a JSON string",
        [call("get_order", '{"order_id": "ORD-1", "verbose": true}')],
        [call("get_order", '{"order_id": "ORD-1", "verbose": true}')],
        product=(1.0, 1.0),
        simulator=(1.0, 0.0),
        nemo="simulator",
        why="NeMo's reference holds arguments as objects and compares them as given; a string never equals the"
        " decoded prediction. The product's eval file has object arguments only while parse_function_arguments"
        " is on",
    ),
    Difference(
        "reference arguments null",
        [call("f", "{}")],
        [call("f", None)],
        product=(1.0, 1.0),
        simulator=(1.0, 0.0),
        nemo="simulator",
        why="null is not {}: NeMo compares the reference's arguments as given",
    ),
    Difference(
        "a null reference",
        None,
        None,
        product=(1.0, 1.0),
        simulator=(None, None),
        nemo="simulator",
        why="NeMo's tool-calling metric wants a list of reference calls; no call expected is []. The product's eval"
        " config renders a record without a call as [] (TOOL_CALLS_GROUND_TRUTH), so it never sends null",
    ),
    Difference(
        "a predicted call without a function name",
        [{"type": "function", "function": {"arguments": "{}"}}],
        [],
        product=(0.0, 0.0),
        simulator=(1.0, 1.0),
        nemo="simulator",
        why="NeMo ignores predicted calls that have no name; the product counts them as a wrong call",
    ),
    Difference(
        "a reference call without a name",
        [call("f", "{}")],
        [{"type": "function", "function": {"arguments": {}}}],
        product=(0.0, 0.0),
        simulator=(None, None),
        nemo="simulator",
        why="NeMo cannot score a sample whose reference is not a list of named calls; the product scores it 0",
    ),
]


@pytest.mark.parametrize("difference", TOOL_DIFFERENCES, ids=[d.case for d in TOOL_DIFFERENCES])
def test_known_tool_calling_differences(difference: Difference) -> None:
    assert product(difference.predicted, difference.reference) == difference.product, difference.why
    assert simulator(difference.predicted, difference.reference) == difference.simulator, difference.why
    assert difference.nemo in ("simulator", "product")


UNDECODABLE = [d for d in TOOL_DIFFERENCES if d.simulator[0] is not None and d.simulator[1] is None]


@pytest.mark.parametrize("difference", UNDECODABLE, ids=[d.case for d in UNDECODABLE])
def test_a_call_nemo_cannot_decode_counts_as_a_failure_in_the_product(difference: Difference) -> None:
    """NeMo leaves ``function_name_and_args_accuracy`` out of such a sample (NaN); the product reads NeMo's row as
    0 for that metric, so the sample stays in the paired comparison as a failure instead of dropping out."""
    name, args = simulator(difference.predicted, difference.reference)
    row = {
        "item": {"request": {"messages": [{"role": "user", "content": difference.case}]}},
        "sample": {"output_text": ""},
        "metrics": {
            "tool-calling-accuracy": {
                "scores": {
                    "function_name_accuracy": {"value": name},
                    "function_name_and_args_accuracy": {"value": float("nan") if args is None else args},
                }
            }
        },
    }
    without = {**row, "metrics": {"tool-calling-accuracy": {"scores": {"function_name_accuracy": {"value": name}}}}}
    for entry in (row, without):  # NaN, or the score left out altogether
        (read,) = parse_sample_results({"custom-tool-calling": [entry]})
        assert read[FUNCTION_NAME_ACCURACY] == name
        assert read[FUNCTION_NAME_AND_ARGS_ACCURACY] == 0.0


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": "Hello!", "tool_calls": None},
        {"role": "assistant", "content": "Hello!"},
        {"role": "assistant", "content": "Hello!", "tool_calls": []},
    ],
    ids=["tool_calls null", "tool_calls absent", "tool_calls []"],
)
def test_the_eval_config_renders_a_no_call_reference_as_a_list(message: dict[str, Any]) -> None:
    """NeMo's tool-calling metric requires the reference to be a list: a record whose answer calls no tool must
    render ``[]``, never ``null`` (which the simulator, like NeMo, cannot score)."""
    item = {
        "request": {"messages": [{"role": "user", "content": "hi"}]},
        "response": {"choices": [{"message": message}]},
    }
    config = tool_calling_eval_config("hf://datasets/ns/d/eval_data.jsonl")
    params = config["tasks"]["custom-tool-calling"]["metrics"]["tool-calling-accuracy"]["params"]
    assert params["tool_calls_ground_truth"] == TOOL_CALLS_GROUND_TRUTH
    rendered = render_value(params, {"item": item})["tool_calls_ground_truth"]
    assert rendered == []
    assert simulator(None, rendered) == (1.0, 1.0)
    assert simulator([call("f", "{}")], rendered) == (0.0, 0.0)
    with_call = {"role": "assistant", "content": "", "tool_calls": [ORDER]}
    item["response"] = {"choices": [{"message": with_call}]}
    assert render_value(params, {"item": item})["tool_calls_ground_truth"] == [ORDER]


def product_judge(reply: str, pattern: str, kind: str) -> float | None:
    return parse_judge_score(reply, pattern, kind)


def simulator_judge(reply: str, pattern: str, kind: str, method: str | None = None) -> float | None:
    return parse_score(reply, {"type": "regex", "pattern": pattern, **({"method": method} if method else {})}, kind)


# Judge replies read with the parsers the product sends (no ``method``: NeMo's default, ``match``).
JUDGE_AGREE: list[tuple[str, str, str, float | None]] = [
    ("RATING: 1\nEXPLANATION: same call", JUDGE_RATING_PATTERN, "int", 1.0),
    ("RATING: 0\nEXPLANATION: wrong city", JUDGE_RATING_PATTERN, "int", 0.0),
    ("RATING:1", JUDGE_RATING_PATTERN, "int", 1.0),
    ("RATING: 10", JUDGE_RATING_PATTERN, "int", 10.0),
    ("RATING: 1.5", JUDGE_RATING_PATTERN, "int", 1.0),  # the group stops at the dot
    ("RATING: one", JUDGE_RATING_PATTERN, "int", None),
    ("rating: 1", JUDGE_RATING_PATTERN, "int", None),  # the pattern is case-sensitive
    ("10", JUDGE_SIMILARITY_PATTERN, "int", 10.0),
    ("7\nEXPLANATION: close", JUDGE_SIMILARITY_PATTERN, "int", 7.0),
    ("8 out of 10", JUDGE_SIMILARITY_PATTERN, "int", 8.0),
    ("007", JUDGE_SIMILARITY_PATTERN, "int", 7.0),
    ("٣", JUDGE_SIMILARITY_PATTERN, "int", 3.0),  # \d matches any Unicode digit, and both read it
    ("", JUDGE_SIMILARITY_PATTERN, "int", None),
    ("no score at all", JUDGE_SIMILARITY_PATTERN, "int", None),
    ("7.5 of 10", r"(\d+\.\d+)", "float", 7.5),
    ("8.5", r"([\d.]+)", "int", None),
]


@pytest.mark.parametrize(("reply", "pattern", "kind", "expected"), JUDGE_AGREE, ids=[c[0] for c in JUDGE_AGREE])
def test_judge_scores_agree(reply: str, pattern: str, kind: str, expected: float | None) -> None:
    assert product_judge(reply, pattern, kind) == expected
    assert simulator_judge(reply, pattern, kind) == expected


# Replies where the score is not at the start: the product searches; NeMo's regex parser matches from the
# start unless the parser says ``method: search``, and then it agrees with the product.
JUDGE_SEARCH: list[tuple[str, str, float]] = [
    ("EXPLANATION: same call\nRATING: 1", JUDGE_RATING_PATTERN, 1.0),
    ("Sure! RATING: 0", JUDGE_RATING_PATTERN, 0.0),
    ("RATING: 1 ... on reflection RATING: 0", JUDGE_RATING_PATTERN, 1.0),  # the first occurrence
    ("The candidate scores 7, maybe 9", JUDGE_SIMILARITY_PATTERN, 7.0),
    ("Similarity: 10/10", JUDGE_SIMILARITY_PATTERN, 10.0),
]


@pytest.mark.parametrize(("reply", "pattern", "expected"), JUDGE_SEARCH, ids=[c[0] for c in JUDGE_SEARCH])
def test_judge_replies_with_text_before_the_score(reply: str, pattern: str, expected: float) -> None:
    assert product_judge(reply, pattern, "int") == expected
    assert simulator_judge(reply, pattern, "int", method="search") == expected
    # NeMo's documented default ("match": from the start) finds nothing unless the reply starts with the score.
    assert simulator_judge(reply, pattern, "int") == (expected if reply.startswith("RATING: 1 ...") else None)


def test_known_judge_differences() -> None:
    # A pattern without a capture group: NeMo reads the first group and has none (NaN); the product takes the
    # whole match. The product's own patterns always capture, so its judges are unaffected.
    assert product_judge("9", r"\d+", "int") == 9.0
    assert simulator_judge("9", r"\d+", "int") is None
    # "8.0" cast to int: NeMo casts the captured text to the score's type (int("8.0") fails: NaN); the product
    # accepts an integral float. Its patterns capture digits only, so this never reaches its judges.
    assert product_judge("8.0", r"([\d.]+)", "int") == 8.0
    assert simulator_judge("8.0", r"([\d.]+)", "int") is None
