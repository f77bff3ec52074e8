"""The OpenAI wire format as the NIM speaks it: request validation, errors, responses and stream chunks."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simulators.nim.teacher import Answer
from simulators.nim.text import CHARS_PER_TOKEN

_ERROR_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    422: "UnprocessableEntityError",
    500: "InternalServerError",
}


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "APIError"), "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the offending parameter of a pydantic error."""
    first = exc.errors()[0]
    location = ".".join(str(p) for p in first.get("loc", ()))
    return f"{location}: {first.get('msg')}" if location else str(first.get("msg")), location or None


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionSpec(_Loose):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Loose):
    type: Literal["function"] = "function"
    function: FunctionSpec


class Message(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[Any] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ModelRequest(_Loose):
    """What every request to a model names first: the model."""

    model: str = Field(min_length=1)


class ChatRequest(ModelRequest):
    """``POST /v1/chat/completions`` (unknown fields are accepted and ignored, as the NIM does)."""

    messages: list[Message] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["auto", "required", "none"] | dict[str, Any] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int = Field(default=1, ge=1, le=8)

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_shape(cls, value: Any) -> Any:
        if isinstance(value, dict):
            function = value.get("function")
            if not (isinstance(function, dict) and isinstance(function.get("name"), str)):
                raise ValueError('a tool_choice object must be {"type": "function", "function": {"name": ...}}')
        return value

    def output_limit(self) -> int | None:
        """The completion-token limit, if the client set one."""
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(ModelRequest):
    """``POST /v1/embeddings``."""

    input: str | list[str] = Field(min_length=1)
    input_type: Literal["query", "passage"] | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    truncate: Literal["NONE", "START", "END"] | None = None


def new_id(prefix: str) -> str:
    """A fresh id such as ``chatcmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def answer_message(answer: Answer) -> dict[str, Any]:
    """The assistant ``message`` of a choice; tool calls get fresh ids and JSON-string arguments."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content if not answer.calls else None}
    if answer.calls:
        message["tool_calls"] = [call.to_openai(new_id("chatcmpl-tool")) for call in answer.calls]
    return message


def truncate(answer: Answer, limit: int | None) -> tuple[Answer, bool]:
    """Cut a text answer to ``limit`` tokens; returns it and whether it was cut (finish_reason ``length``)."""
    if limit is None or answer.calls or len(answer.text) <= limit * CHARS_PER_TOKEN:
        return answer, False
    return Answer(content=answer.text[: limit * CHARS_PER_TOKEN]), True


def finish_reason(answer: Answer, cut: bool) -> str:
    """``tool_calls``, ``length`` or ``stop``."""
    if answer.calls:
        return "tool_calls"
    return "length" if cut else "stop"


def completion_body(
    completion_id: str,
    model: str,
    messages: list[dict[str, Any]],
    finish: str,
    usage: dict[str, int],
    nvext: dict[str, Any],
) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice per message."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
            for i, message in enumerate(messages)
        ],
        "usage": usage,
        "nvext": nvext,
    }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def stream_deltas(message: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """The deltas a stream sends for a message, each with the completion tokens it carries."""
    piece = CHARS_PER_TOKEN * 2
    deltas: list[tuple[dict[str, Any], int]] = [({"role": "assistant", "content": ""}, 0)]
    calls = message.get("tool_calls") or []
    if not calls:
        for part in _pieces(message.get("content") or "", piece):
            deltas.append(({"content": part}, max(1, len(part) // CHARS_PER_TOKEN)))
        return deltas
    for index, call in enumerate(calls):
        function = call["function"]
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        deltas.append(({"tool_calls": [head]}, max(1, len(function["name"]) // CHARS_PER_TOKEN)))
        for part in _pieces(function["arguments"], piece):
            deltas.append(
                (
                    {"tool_calls": [{"index": index, "function": {"arguments": part}}]},
                    max(1, len(part) // CHARS_PER_TOKEN),
                )
            )
    return deltas


def chunk(
    completion_id: str, created: int, model: str, delta: dict[str, Any], finish: str | None, index: int = 0
) -> str:
    """One ``data:`` line of a stream."""
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def usage_chunk(completion_id: str, created: int, model: str, usage: dict[str, int]) -> str:
    """The final chunk with ``usage`` (sent when ``stream_options.include_usage`` is true)."""
    body = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n"
