"""Evaluator pieces of the NeMo simulator: template rendering, per-sample scores, aggregates, row parsing."""

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


def test_tool_calling_scores_use_the_project_metrics() -> None:
    truth = ITEM["response"]["choices"][0]["message"]["tool_calls"]

    def answer(calls: Any) -> dict[str, Any]:
        return {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": calls}}]}

    exact = [{"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"a": 1.0}'}}]
    assert tool_calling_scores(answer(exact), truth) == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 1.0,
    }
    wrong_args = [{"type": "function", "function": {"name": "f", "arguments": {"a": 2}}}]
    assert tool_calling_scores(answer(wrong_args), truth)["function_name_and_args_accuracy"] == 0.0
    assert tool_calling_scores(answer(None), None) == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 1.0,
    }
    assert tool_calling_scores({"unexpected": True}, truth)["function_name_accuracy"] == 0.0


def test_judge_scores_and_output_text() -> None:
    scores = {
        "rating": {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}},
        "similarity": {"type": "float", "parser": {"type": "regex", "pattern": r"SIM=(\d+\.\d+)"}},
    }
    assert judge_scores("RATING: 1\nSIM=0.75", scores) == {"rating": 1.0, "similarity": 0.75}
    assert judge_scores("I cannot say", scores) == {"rating": None, "similarity": None}
    assert output_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert output_text({"choices": []}) == ""


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
