"""How to talk to an agent the project did not write: a request template and where the answer is.

An agent is described by the request that takes one user turn (method, path, JSON body with placeholders,
headers) and by where the answer sits in its JSON reply (``answer_path``). Presets cover the usual servers:

- ``demo``: ``POST /v1/chat`` ``{"message", "user_id"}`` -> ``reply`` (the bundled demo agent);
- ``nat-generate`` / ``nat-workflow``: ``POST /generate`` / ``/v1/workflow`` ``{"input_message"}`` -> ``value``
  (``nat serve``);
- ``nat-chat``: ``POST /chat`` ``{"messages": [user turn]}`` -> ``choices.0.message.content`` (``nat serve``);
- ``nat-openai``: ``POST /v1/chat/completions`` ``{"messages", "stream": false}`` -> ``choices.0.message.content``
  (``nat serve``'s OpenAI-compatible route);
- ``openai``: ``POST /v1/chat/completions`` ``{"model", "messages"}`` -> ``choices.0.message.content`` (any
  OpenAI-compatible chat endpoint; set the ``model`` variable);
- ``langgraph``: ``POST /runs/wait`` ``{"assistant_id", "input": {"messages": [user turn]}}`` ->
  ``messages.-1.content`` (the LangGraph Platform API's stateless run).

Placeholders in the body's strings: ``{input}`` (the example input), ``{user_id}`` and ``{session_id}`` (one
per request), ``{index}``, and the template's ``variables`` (``{model}`` for ``openai``, ``{assistant_id}``
for ``langgraph``, default ``agent``); a string that is only a placeholder takes the value's type. An example
input that is a JSON object is the whole body, sent as it is.

``answer_path`` is dotted, with list indices (negative from the end): ``choices.0.message.content``; ``$.`` and
``[0]`` are accepted too. A 2xx reply without an answer there is an error of kind ``no_answer``. The demo agent
also names its trace id in the answer (``trace_id_path``); no other agent has to: requests carry a W3C
``traceparent`` and spans are matched by the trace id we sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUILT_IN_NAMES = frozenset({"input", "user_id", "session_id", "index"})
_USER_TURN = [{"role": "user", "content": "{input}"}]


class TemplateError(ValueError):
    """A request template that cannot be used (unknown preset, placeholder without a value, bad path)."""


class AnswerError(ValueError):
    """The agent's reply has no answer where the template says it is."""


@dataclass(frozen=True)
class Preset:
    """A known agent server's request and answer."""

    path: str
    body: Any
    answer_path: str | None
    method: str = "POST"
    trace_id_path: str | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    admin_otlp: bool = False  # the agent offers the demo agent's POST /admin/otlp


PRESETS: dict[str, Preset] = {
    "demo": Preset(
        "/v1/chat",
        {"message": "{input}", "user_id": "{user_id}"},
        "reply",
        trace_id_path="trace_id",
        admin_otlp=True,
    ),
    "nat-generate": Preset("/generate", {"input_message": "{input}"}, "value"),
    "nat-workflow": Preset("/v1/workflow", {"input_message": "{input}"}, "value"),
    "nat-chat": Preset("/chat", {"messages": _USER_TURN}, "choices.0.message.content"),
    "nat-openai": Preset(
        "/v1/chat/completions", {"messages": _USER_TURN, "stream": False}, "choices.0.message.content"
    ),
    "openai": Preset("/v1/chat/completions", {"model": "{model}", "messages": _USER_TURN}, "choices.0.message.content"),
    "langgraph": Preset(
        "/runs/wait",
        {"assistant_id": "{assistant_id}", "input": {"messages": _USER_TURN}},
        "messages.-1.content",
        variables={"assistant_id": "agent"},
    ),
}
PRESET_NAMES = tuple(PRESETS)


def parse_path(path: str) -> list[str | int]:
    """``choices.0.message.content`` / ``$.choices[0].message.content`` as keys and indices."""
    text = path.strip()
    if text.startswith("$"):
        text = text[1:].lstrip(".")
    text = re.sub(r"\[(-?\d+)\]", r".\1", text).strip(".")
    if not text:
        raise TemplateError(f"empty JSON path {path!r}")
    parts: list[str | int] = []
    for part in text.split("."):
        if not part:
            raise TemplateError(f"JSON path {path!r} has an empty step")
        parts.append(int(part) if re.fullmatch(r"-?\d+", part) else part)
    return parts


def find(data: Any, path: list[str | int]) -> Any:
    """The value at ``path`` in ``data``; raises :class:`AnswerError` naming the first step that is not there."""
    value = data
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(value, Mapping) and str(step) in value:
            value = value[str(step)]
        else:
            raise AnswerError(f"no {step!r} in the answer")
    return value


def _names(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, Mapping):
        return {n for v in value.values() for n in _names(v)} | {n for k in value for n in _names(str(k))}
    if isinstance(value, list):
        return {n for v in value for n in _names(v)}
    return set()


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
    if isinstance(value, Mapping):
        return {_fill(str(k), values): _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


@dataclass(frozen=True)
class RequestTemplate:
    """One user turn as an HTTP request, and where the answer is (see the module docstring)."""

    path: str
    body: Any
    method: str = "POST"
    answer_path: str | None = None
    trace_id_path: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method.upper() not in ("POST", "PUT", "GET"):
            raise TemplateError(f"method {self.method!r}: use POST, PUT or GET")
        unknown = _names(self.body) - BUILT_IN_NAMES - set(self.variables)
        if unknown:
            raise TemplateError(
                f"the body uses {', '.join('{' + n + '}' for n in sorted(unknown))} but no value is set for it "
                "(set it in the template's variables)"
            )
        for path in (self.answer_path, self.trace_id_path):
            if path:
                parse_path(path)

    @property
    def relative_path(self) -> str:
        """The path without its leading ``/``, joined onto a base URL that may itself have a path."""
        return self.path.lstrip("/")

    def body_for(self, item: str | Mapping[str, Any], index: int, user_prefix: str) -> Any:
        """The body of request ``index``: the template filled with ``item``, or ``item`` itself when it is an object."""
        if isinstance(item, Mapping):
            return dict(item)
        values: dict[str, Any] = {
            "input": item,
            "user_id": f"{user_prefix}-{index}",
            "session_id": f"{user_prefix}-session-{index}",
            "index": index,
            **self.variables,
        }
        return _fill(self.body, values)

    def answer_of(self, data: Any) -> Any:
        """The answer in a decoded JSON reply (the whole reply when there is no ``answer_path``)."""
        return find(data, parse_path(self.answer_path)) if self.answer_path else data

    def trace_id_of(self, data: Any) -> str | None:
        """The trace id the agent names in its reply, when the template says where (lower-case hex)."""
        if not self.trace_id_path:
            return None
        try:
            value = find(data, parse_path(self.trace_id_path))
        except AnswerError:
            return None
        text = str(value).strip().lower() if value is not None else ""
        return text or None


def build_template(
    preset: str = "demo",
    *,
    path: str | None = None,
    method: str | None = None,
    body: Any = None,
    answer_path: str | None = None,
    trace_id_path: str | None = None,
    headers: Mapping[str, str] | None = None,
    variables: Mapping[str, str] | None = None,
) -> RequestTemplate:
    """A preset with what is given instead of its defaults (an empty ``answer_path`` / ``trace_id_path``: none)."""
    if preset not in PRESETS:
        raise TemplateError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    base = PRESETS[preset]
    return RequestTemplate(
        path=path or base.path,
        body=base.body if body is None else body,
        method=(method or base.method).upper(),
        answer_path=base.answer_path if answer_path is None else (answer_path or None),
        trace_id_path=base.trace_id_path if trace_id_path is None else (trace_id_path or None),
        headers=dict(headers or {}),
        variables={**base.variables, **(variables or {})},
    )
