"""The teacher policy works for any workload: tool choice by overlap, typed arguments, text otherwise."""

from __future__ import annotations

from typing import Any

from simulators.nim.teacher import (
    Answer,
    ToolCall,
    fill_arguments,
    rank_tools,
    respond,
    summarise_tool_result,
)


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


WEATHER = _tool(
    "get_weather",
    "Weather forecast for a city on a date.",
    {
        "location": {"type": "string"},
        "date": {"type": "string"},
        "units": {"type": "string", "enum": ["metric", "imperial"]},
    },
    ["location", "date"],
)
EMAIL = _tool(
    "send_email",
    "Send an e-mail message to someone.",
    {"to": {"type": "string", "format": "email"}, "subject": {"type": "string"}, "body": {"type": "string"}},
    ["to", "subject"],
)
TICKET = _tool(
    "update_ticket",
    "Change the priority of a support ticket.",
    {"ticket_id": {"type": "string"}, "priority": {"type": "integer"}, "urgent": {"type": "boolean"}},
    ["ticket_id", "priority"],
)
TOOLS = [WEATHER, EMAIL, TICKET]


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text}]


def test_picks_the_tool_whose_words_match_and_fills_typed_arguments() -> None:
    answer = respond(_user("What will the weather be in Berlin on November 7, 2025? Use metric please"), TOOLS)
    assert answer.calls == (ToolCall("get_weather", {"location": "Berlin", "date": "2025-11-07", "units": "metric"}),)
    email = respond(_user('Send an email to ann@example.com with subject "Quarterly report"'), TOOLS)
    assert email.calls[0].name == "send_email"
    assert email.calls[0].arguments["to"] == "ann@example.com"
    assert email.calls[0].arguments["subject"] == "Quarterly report"
    ticket = respond(_user("Set the priority of ticket TCK-881 to 2"), TOOLS)
    assert ticket.calls == (ToolCall("update_ticket", {"ticket_id": "TCK-881", "priority": 2}),)


def test_answers_in_text_when_nothing_fits_or_tools_are_off() -> None:
    assert respond(_user("hello"), TOOLS).calls == ()
    assert respond(_user("hello"), TOOLS).content == "Hello! How can I help you today?"
    plain = respond(_user("What is the capital of France?"), TOOLS)
    assert not plain.calls and "capital" in (plain.content or "")
    assert respond(_user("Weather in Paris on 2025-01-02"), TOOLS, "none").calls == ()
    assert respond(_user("Weather in Paris on 2025-01-02"), None).calls == ()


def test_required_and_forced_choices_always_call() -> None:
    assert respond(_user("hello"), TOOLS, "required").calls
    forced = respond(_user("hello"), TOOLS, {"type": "function", "function": {"name": "send_email"}})
    assert [c.name for c in forced.calls] == ["send_email"]


def test_asks_for_a_missing_id_instead_of_inventing_one() -> None:
    answer = respond(_user("Please update the priority of my support ticket"), TOOLS)
    assert not answer.calls
    assert "ticket id" in (answer.content or "")


def test_summarises_a_tool_result() -> None:
    messages = [
        *_user("Weather in Oslo on 2025-03-01?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": '{"temperature": -3, "sky": "snow"}'},
    ]
    answer = respond(messages, TOOLS)
    assert answer.content == "Here is what I found: temperature: -3, sky: snow."
    assert summarise_tool_result("[]") == "I could not find anything matching your request."
    assert summarise_tool_result("All done. Bye.") == "Here is what I found: All done."


def test_arguments_come_from_earlier_user_turns_too() -> None:
    arguments, missing = fill_arguments(TICKET["function"], ["make it 3", "my ticket is TCK-42"])
    assert arguments == {"ticket_id": "TCK-42", "priority": 3}
    assert missing == []


def test_ranking_prefers_rare_words_and_is_deterministic() -> None:
    ranked = rank_tools(TOOLS, ["email the forecast to bob@example.com"])
    assert ranked[0][1]["name"] == "send_email"
    assert rank_tools(TOOLS, ["x"]) == rank_tools(TOOLS, ["x"])


def test_logged_messages_become_answers() -> None:
    logged = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\": \"Rome\"}"}}]}  # fmt: skip
    assert Answer.from_message(logged) == Answer(calls=(ToolCall("get_weather", {"location": "Rome"}),))
    assert Answer.from_message({"role": "assistant", "content": "Hi"}) == Answer(content="Hi")
    wire = ToolCall("get_weather", {"location": "Rome"}).to_openai("call-1")
    assert wire["function"]["arguments"] == '{"location": "Rome"}'
