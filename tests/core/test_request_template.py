"""Request templates: the presets' requests and answers, placeholders, answer paths, and what a reply means."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_flywheel.scaling.loadgen.requests import read_reply
from agent_flywheel.scaling.loadgen.template import (
    PRESETS,
    AnswerError,
    RequestTemplate,
    TemplateError,
    build_template,
    find,
    parse_path,
)
from agent_flywheel.scaling.loadgen.tracecontext import TraceContext, new_trace_context

QUESTION = 'Where is "ORD-1"?'


@pytest.mark.parametrize(
    ("preset", "variables", "path", "body", "reply", "answer"),
    [
        ("demo", {}, "/v1/chat", {"message": QUESTION, "user_id": "u-3"}, {"reply": "here"}, "here"),
        ("nat-generate", {}, "/generate", {"input_message": QUESTION}, {"value": "here"}, "here"),
        ("nat-workflow", {}, "/v1/workflow", {"input_message": QUESTION}, {"value": "here"}, "here"),
        (
            "nat-chat",
            {},
            "/chat",
            {"messages": [{"role": "user", "content": QUESTION}]},
            {"choices": [{"message": {"content": "here"}}]},
            "here",
        ),
        (
            "nat-openai",
            {},
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": QUESTION}], "stream": False},
            {"choices": [{"message": {"content": "here"}}]},
            "here",
        ),
        (
            "openai",
            {"model": "meta/llama-3.1-8b-instruct"},
            "/v1/chat/completions",
            {"model": "meta/llama-3.1-8b-instruct", "messages": [{"role": "user", "content": QUESTION}]},
            {"choices": [{"message": {"content": "here"}}]},
            "here",
        ),
        (
            "langgraph",
            {},
            "/runs/wait",
            {"assistant_id": "agent", "input": {"messages": [{"role": "user", "content": QUESTION}]}},
            {"messages": [{"type": "human", "content": QUESTION}, {"type": "ai", "content": "here"}]},
            "here",
        ),
    ],
)
def test_presets_fill_their_body_and_find_their_answer(
    preset: str, variables: dict[str, str], path: str, body: dict[str, Any], reply: dict[str, Any], answer: str
) -> None:
    template = build_template(preset, variables=variables)
    assert template.method == "POST" and template.path == path
    assert template.body_for(QUESTION, 3, "u") == body
    assert template.answer_of(reply) == answer
    # the template's own structure is never modified by filling it
    assert template.body_for("other", 4, "u") != body


def test_every_preset_is_buildable_and_only_openai_needs_a_variable() -> None:
    for name in PRESETS:
        if name == "openai":
            with pytest.raises(TemplateError, match=r"\{model\}"):
                build_template(name)
        else:
            build_template(name)


def test_an_object_input_is_the_whole_body_and_placeholders_keep_types() -> None:
    template = RequestTemplate("/ask", {"q": "{input}", "n": "{index}", "who": "user {user_id}", "k": ["{session_id}"]})
    assert template.body_for("hi", 7, "p") == {"q": "hi", "n": 7, "who": "user p-7", "k": ["p-session-7"]}
    assert template.body_for({"raw": True}, 7, "p") == {"raw": True}


def test_overrides_and_bad_templates() -> None:
    custom = build_template("nat-generate", path="/v1/other", body={"text": "{input}"}, answer_path="")
    assert (custom.path, custom.answer_path) == ("/v1/other", None)
    assert custom.answer_of({"anything": 1}) == {"anything": 1}
    with pytest.raises(TemplateError, match="unknown preset"):
        build_template("nope")
    with pytest.raises(TemplateError, match=r"\{secret\}"):
        RequestTemplate("/x", {"a": "{secret}"})
    with pytest.raises(TemplateError, match="method"):
        RequestTemplate("/x", {}, method="DELETE")
    with pytest.raises(TemplateError, match="empty step"):
        RequestTemplate("/x", {}, answer_path="a..b")


def test_answer_paths() -> None:
    data = {"choices": [{"message": {"content": "x"}}], "messages": [1, 2, 3]}
    assert parse_path("$.choices[0].message.content") == ["choices", 0, "message", "content"]
    assert find(data, parse_path("choices.0.message.content")) == "x"
    assert find(data, parse_path("messages.-1")) == 3
    with pytest.raises(AnswerError, match="'content2'"):
        find(data, parse_path("choices.0.message.content2"))
    with pytest.raises(AnswerError):
        find(data, parse_path("messages.3"))


def test_what_a_reply_means() -> None:
    nat = build_template("nat-generate")
    trace = new_trace_context()
    ok = read_reply(nat, 200, json.dumps({"value": "fine"}).encode(), trace)
    assert ok.ok and ok.trace == trace and ok.status_code == 200
    assert read_reply(nat, 503, b"", trace).error_kind == "http_503"
    assert read_reply(nat, 200, b"<html>", trace).error_kind == "bad_response"
    assert read_reply(nat, 200, b'{"output": "elsewhere"}', trace).error_kind == "no_answer"
    bare = build_template("nat-generate", answer_path="")
    assert read_reply(bare, 200, b"not even json", trace).ok  # no answer path: any 2xx is an answer
    demo = build_template("demo")
    named = read_reply(demo, 200, b'{"reply": "hi", "trace_id": "ABCDEF0123456789abcdef0123456789"}', trace)
    assert named.trace == TraceContext("abcdef0123456789abcdef0123456789", None)  # the agent's own trace


def test_traceparent_is_w3c_sampled_and_fresh() -> None:
    contexts = [new_trace_context() for _ in range(200)]
    assert len({c.trace_id for c in contexts}) == 200
    for c in contexts[:20]:
        version, trace_id, span_id, flags = c.traceparent.split("-")
        assert (version, flags) == ("00", "01")
        assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) and int(span_id, 16)
