"""Evaluator pieces of the NeMo simulator: template rendering, per-sample scores as NeMo Evaluator defines them,
aggregates, row parsing."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from simulators.nemo.scoring import aggregate, judge_scores, output_text, tool_calling_scores
from simulators.nemo.templates import TemplateRenderError, render_text, render_value
from simulators.nemo.upstream import UpstreamError, parse_files_url, parse_rows

ITEM: dict[str, Any] = {
    "request": {"messages": [{"role": "user", "content": "Is 3 < 4 & 5 > 2?"}], "tools": [{"type": "function"}]},
    "response": {
        "choices": [
            {
                "message": {
                    "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
                }
            }
        ]
    },
}


def test_json_templates_render_back_to_json() -> None:
    template = {
        "messages": "{{ item.request.messages | tojson }}",
        "tools": "{{ item.request.tools | tojson }}",
        "tool_choice": "required",
        "nvext": "{{ item.nvext | tojson }}",
        "max_tokens": 64,
    }
    rendered = render_value(template, {"item": ITEM})
    assert rendered == {
        "messages": ITEM["request"]["messages"],
        "tools": ITEM["request"]["tools"],
        "tool_choice": "required",
        "max_tokens": 64,
    }, "a null rendering drops the key; text with < > & is not HTML-escaped"


def test_text_templates_and_missing_fields() -> None:
    assert render_text("Q: {{ item.request.messages[0].content }}", {"item": ITEM}) == "Q: Is 3 < 4 & 5 > 2?"
    assert render_text("[{{ item.nothing.deeper }}]", {"item": ITEM}) == "[]"
    truth = render_value("{{ item.response.choices[0].message.tool_calls | tojson }}", {"item": ITEM})
    assert truth == ITEM["response"]["choices"][0]["message"]["tool_calls"]
    assert render_value("{{ item.response.choices[0].message.missing | tojson }}", {"item": ITEM}) is None
    assert render_value(["{{ 1 + 1 }}", {"x": "plain"}], {}) == ["2", {"x": "plain"}]


def test_bad_or_unsafe_templates_raise_render_errors() -> None:
    with pytest.raises(TemplateRenderError):
        render_text("{{ item.request.messages | nosuchfilter }}", {"item": ITEM})
    with pytest.raises(TemplateRenderError):
        render_text("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def _answer(calls: Any) -> dict[str, Any]:
    return {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": calls}}]}


def _call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "x", "type": "function", "function": {"name": name, "arguments": arguments}}


def _scores(predicted: Any, reference: Any) -> tuple[float | None, float | None]:
    scores = tool_calling_scores(_answer(predicted), reference)
    return scores["function_name_accuracy"], scores["function_name_and_args_accuracy"]


def test_tool_calling_scores_follow_nemo_evaluator() -> None:
    truth = [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]
    assert _scores([_call("f", '{"a": 1.0}')], truth) == (1.0, 1.0), "numbers by value"
    assert _scores([_call("f", '{"a": 2}')], truth) == (1.0, 0.0)
    assert _scores([_call("F", '{"a": 1}')], truth) == (0.0, 0.0), "names are case-sensitive"
    assert _scores([_call("f", '{"a": "1"}')], truth) == (1.0, 0.0), "a string is not a number"
    assert _scores([_call("f", '{"a": true}')], [_call("f", {"a": 1})]) == (1.0, 0.0), "true is not 1"
    assert _scores(None, []) == (1.0, 1.0), "no call expected and none made"
    assert _scores([], []) == (1.0, 1.0)
    assert _scores(None, None) == (None, None), "the reference must be a list: no call expected is []"
    assert _scores(None, truth) == (0.0, 0.0)


def test_tool_calling_order_and_repeats_are_ignored() -> None:
    a, b = _call("a", {"x": 1, "y": [1, {"z": None}]}), _call("b", {})
    assert _scores([_call("b", "{}"), _call("a", '{"y": [1, {"z": null}], "x": 1}')], [a, b]) == (1.0, 1.0)
    assert _scores([_call("a", '{"x": 1, "y": [1, {"z": null}]}')] * 2, [a]) == (1.0, 1.0), "compared as sets"
    assert _scores([_call("a", '{"x": 1, "y": [1, {"z": null}]}'), _call("a", '{"x": 2}')], [a]) == (1.0, 0.0)
    assert _scores([_call("a", "{}"), _call("b", "{}"), _call("c", "{}")], [a, b]) == (0.0, 0.0)


def test_tool_calling_arguments_that_cannot_be_scored() -> None:
    truth = [_call("f", {})]
    assert _scores([_call("f", "{bad json")], truth) == (1.0, None), "undecodable arguments: no args score"
    assert _scores([_call("f", {"already": "an object"})], truth) == (1.0, None), "arguments must be a string"
    assert _scores([_call("f", None)], truth) == (1.0, 1.0), "absent arguments are {}"
    assert _scores([_call("f", "{}")], [_call("f", "{}")]) == (1.0, 0.0), "the reference is taken as given"
    assert _scores([{"function": {"arguments": "{}"}}], []) == (1.0, 1.0), "calls without a name are ignored"
    for reference in ([{"function": {"name": "f"}}], [{"name": "f", "arguments": {}}], "f()", [None]):
        assert _scores([_call("f", "{}")], reference) == (None, None), reference
    for response in ({"unexpected": True}, {"choices": []}, {"choices": [{"message": None}]}):
        assert tool_calling_scores(response, truth) == {
            "function_name_accuracy": None,
            "function_name_and_args_accuracy": None,
        }


def test_judge_scores_and_output_text() -> None:
    scores = {
        "rating": {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}},
        "similarity": {"type": "float", "parser": {"type": "regex", "pattern": r"SIM=(\d+\.\d+)", "method": "search"}},
    }
    assert judge_scores("RATING: 1\nSIM=0.75", scores) == {"rating": 1.0, "similarity": 0.75}
    assert judge_scores("I cannot say", scores) == {"rating": None, "similarity": None}
    assert judge_scores("Verdict: RATING: 1", scores)["rating"] is None, "match (the default) starts at the beginning"
    assert output_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert output_text({"choices": []}) == ""


@pytest.mark.parametrize(
    ("reply", "pattern", "kind", "method", "expected"),
    [
        ("10", r"(\d+)", "int", None, 10.0),
        ("8 out of 10", r"(\d+)", "int", None, 8.0),
        ("7 then 9", r"(\d+)", "int", "search", 7.0),
        ("Score: 9", r"(\d+)", "int", None, None),
        ("Score: 9", r"(\d+)", "int", "search", 9.0),
        ("8.5", r"([\d.]+)", "int", None, None),
        ("8.0", r"([\d.]+)", "int", None, None),
        ("8.5", r"([\d.]+)", "float", None, 8.5),
        ("1e3", r"(\S+)", "float", None, 1000.0),
        ("inf", r"(\S+)", "float", None, None),
        ("9", r"\d", "int", None, None),
        ("", r"(\d*)", "int", None, None),
        ("x", r"(\d)?x", "int", None, None),
    ],
)
def test_regex_parser(reply: str, pattern: str, kind: str, method: str | None, expected: float | None) -> None:
    parser = {"type": "regex", "pattern": pattern, **({"method": method} if method else {})}
    assert judge_scores(reply, {"s": {"type": kind, "parser": parser}}) == {"s": expected}


def test_aggregate_stats() -> None:
    result = aggregate([1.0, 0.0, 1.0, None, 1.0])
    stats = result["stats"]
    assert result["value"] == 0.75 and stats["count"] == 4 and stats["nan_count"] == 1
    assert stats["sum"] == 3.0 and stats["min"] == 0.0 and stats["max"] == 1.0 and stats["sum_squared"] == 3.0
    assert math.isclose(stats["variance"], 0.25) and math.isclose(stats["stddev"], 0.5)
    assert math.isclose(stats["stderr"], 0.25)
    nothing = aggregate([None, None])
    assert nothing["value"] is None and nothing["stats"]["count"] == 0 and nothing["stats"]["nan_count"] == 2
    one = aggregate([0.5])
    assert one["stats"]["variance"] == 0.0 and one["stats"]["stderr"] == 0.0
    json.dumps(nothing, allow_nan=False)


def test_files_urls_and_rows() -> None:
    location = parse_files_url("hf://datasets/dfwbp/ds/eval_data.jsonl")
    assert (location.namespace, location.name, location.path) == ("dfwbp", "ds", "eval_data.jsonl")
    assert parse_files_url("hf://datasets/dfwbp/ds").path == ""
    with pytest.raises(UpstreamError):
        parse_files_url("s3://bucket/file")
    assert parse_rows(b'{"a": 1}\n\n{"a": 2}\n', "x.jsonl") == [{"a": 1}, {"a": 2}]
    assert parse_rows(b'[{"a": 1}]', "x.json") == [{"a": 1}]
    with pytest.raises(UpstreamError, match="line 2"):
        parse_rows(b'{"a": 1}\nnot json\n', "x.jsonl")
    with pytest.raises(UpstreamError, match="not a JSON object"):
        parse_rows(b"[1, 2]\n", "x.jsonl")
