"""The NIM simulator app: OpenAI-compatible models, chat completions (tools, streaming) and embeddings.

What a model answers comes from the quality model (:mod:`.quality`, reference answers from
:mod:`.references` or :mod:`.teacher`, judge prompts from :mod:`.judge`); how long it takes comes from
the latency model (:mod:`.latency`). Every answer says so in ``nvext`` (``simulated: true``, why it
answered as it did, and where its time went) besides the ``X-Flywheel-Simulated`` header.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulators.common import create_simulator_app
from simulators.nim import teacher, wire
from simulators.nim.conversation import conversation_key, split_examples
from simulators.nim.embeddings import embed, encode
from simulators.nim.judge import judge_answer, judge_kind
from simulators.nim.latency import BatchScheduler
from simulators.nim.quality import LoraInfo, decide
from simulators.nim.references import ReferenceIndex
from simulators.nim.registry import Registry, ServedModel
from simulators.nim.settings import NimSettings, nim_settings
from simulators.nim.teacher import Answer
from simulators.nim.text import completion_tokens, estimate_tokens, prompt_tokens
from simulators.settings import LocalStackConfig

Req = TypeVar("Req", bound=wire.ModelRequest)

_DONE = "data: [DONE]\n\n"
_STREAM_STEP_TOKENS = 8


class LoraIn(BaseModel):
    """The adapter part of ``POST /admin/models``."""

    model_config = ConfigDict(extra="forbid")

    train_records: int = Field(ge=0)
    epochs: int = Field(default=1, ge=0)


class AdminModelIn(BaseModel):
    """``POST /admin/models``: make a model servable."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    root: str | None = None
    parent: str | None = None
    lora: LoraIn | None = None


class NimState:
    """Everything the routes share; kept on ``app.state.nim`` so tests can look inside."""

    def __init__(self, settings: NimSettings, references: ReferenceIndex, registry_file: Path | None = None) -> None:
        self.settings = settings
        self.registry = Registry(settings, registry_file)
        self.scheduler = BatchScheduler(settings.latency.time_scale, self.registry.latency)
        self.references = references

    async def answer(
        self, model: ServedModel, messages: list[Any], tools: Any, tool_choice: Any
    ) -> tuple[Answer, dict[str, Any]]:
        """What ``model`` answers, and the ``nvext.quality`` record of why."""
        stripped, examples = split_examples(messages)
        judged = judge_answer(stripped)
        if judged is not None:
            return Answer(content=judged), {"judge": judge_kind(stripped)}
        conversation = conversation_key(messages, tools)
        logged = await self.references.lookup(conversation)
        if logged is not None:
            reference, source = Answer.from_message(logged), "log"
        else:
            reference, source = teacher.respond(stripped, tools, "auto"), "policy"
        p = self.registry.probability(model, examples)
        decision = decide(model.id, conversation, p, reference, stripped, tools, tool_choice)
        return decision.answer, {
            "reference": source,
            "icl_examples": examples,
            "p": round(decision.p, 6),
            "followed_reference": decision.followed_reference,
            "mistake": decision.mistake,
        }


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return wire.error_response(400, "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return wire.error_response(400, "The request body must be a JSON object.")
    return body


def _unknown_model(model_id: str) -> JSONResponse:
    return wire.error_response(404, f"The model `{model_id}` does not exist.", "model")


async def _model_request(
    request: Request, schema: type[Req], registry: Registry, kind: str, capability: str
) -> tuple[dict[str, Any], Req, ServedModel] | JSONResponse:
    """The body, the request as ``schema`` and the served model it names, which must be a ``kind`` model; else
    the error the NIM answers (bad JSON or fields: 400, an unknown model: 404, a model without ``capability``: 400)."""
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        req = schema.model_validate(body)
    except ValidationError as exc:
        message, param = wire.validation_message(exc)
        return wire.error_response(400, message, param)
    model = registry.get(req.model)
    if model is None:
        return _unknown_model(req.model)
    if model.kind != kind:
        return wire.error_response(400, f"The model `{req.model}` does not support {capability}.", "model")
    return body, req, model


def create_app(cfg: LocalStackConfig, *, log_transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The NIM simulator for one local stack (``log_transport`` lets tests stand in for the log server)."""
    settings = nim_settings(cfg)
    references = ReferenceIndex(
        cfg.url("logserver"),
        settings.log_index,
        settings.reference_model_ids(),
        page_size=settings.log_page_size,
        refresh_min_interval_s=settings.log_refresh_min_interval_s,
        timeout_s=settings.log_timeout_s,
        transport=log_transport,
    )
    state = NimState(settings, references, cfg.state_path() / "nim" / "models.json" if settings.persist else None)
    app = create_simulator_app("NIM")
    app.state.nim = state

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await references.aclose()

    app.router.lifespan_context = lifespan

    @app.get("/v1/health/ready")
    async def ready() -> dict[str, str]:
        return {"object": "health-response", "message": "Service is ready."}

    @app.get("/v1/health/live")
    async def live() -> dict[str, str]:
        return {"object": "health-response", "message": "Service is live."}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.openai() for m in state.registry.all()]}

    @app.get("/v1/models/{model_id:path}", response_model=None)
    async def get_model(model_id: str) -> dict[str, Any] | JSONResponse:
        model = state.registry.get(model_id)
        return model.openai() if model else _unknown_model(model_id)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        asked = await _model_request(request, wire.ChatRequest, state.registry, "chat", "chat completions")
        if isinstance(asked, JSONResponse):
            return asked
        body, req, model = asked
        tools = body.get("tools") or None
        names = [t.function.name for t in req.tools or []]
        tool_choice = req.tool_choice if req.tool_choice is not None else ("auto" if tools else "none")
        if isinstance(tool_choice, dict) and tool_choice["function"]["name"] not in names:
            return wire.error_response(400, "tool_choice names a function that is not in tools.", "tool_choice")
        if tool_choice == "required" and not tools:
            return wire.error_response(400, "tool_choice 'required' needs tools.", "tool_choice")
        messages = body["messages"]
        answer, quality = await state.answer(model, messages, tools, tool_choice)
        answer, cut = wire.truncate(answer, req.output_limit())
        finish = wire.finish_reason(answer, cut)
        choices = [wire.answer_message(answer) for _ in range(req.n)]
        prompt = prompt_tokens(messages, tools)
        completion = completion_tokens(answer.content, choices[0].get("tool_calls"))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion * req.n,
            "total_tokens": prompt + completion * req.n,
        }
        server = state.registry.server(model)
        completion_id = wire.new_id("chatcmpl")
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _stream(
                    state, server, completion_id, req.model, choices, finish, prompt, completion, usage, include_usage
                ),
                media_type="text/event-stream",
            )
        timing = await state.scheduler.serve(server, prompt, completion)
        nvext = {"simulated": True, "quality": quality, "timing": timing.as_dict()}
        return JSONResponse(wire.completion_body(completion_id, req.model, choices, finish, usage, nvext))

    @app.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request) -> Response:
        asked = await _model_request(request, wire.EmbeddingRequest, state.registry, "embedding", "embeddings")
        if isinstance(asked, JSONResponse):
            return asked
        _, req, model = asked
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        dimensions = req.dimensions or settings.embedding_dim
        data = [
            {"index": i, "object": "embedding", "embedding": encode(embed(text, dimensions), req.encoding_format)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(estimate_tokens(t) for t in texts)
        timing = await state.scheduler.serve(state.registry.server(model), tokens, 0)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "nvext": {"simulated": True, "timing": timing.as_dict()},
            }
        )

    @app.get("/admin/models")
    async def admin_list() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {**state.registry.describe(m), "load": state.scheduler.load(state.registry.server(m))}
                for m in state.registry.all()
            ],
            "references": {
                "conversations": state.references.size,
                "records_read": state.references.records_read,
                "errors": state.references.errors,
            },
        }

    @app.post("/admin/models", response_model=None)
    async def admin_register(spec: AdminModelIn) -> JSONResponse:
        lora = LoraInfo(spec.lora.train_records, spec.lora.epochs) if spec.lora else None
        model, created = state.registry.register(spec.id, spec.root, spec.parent, lora)
        return JSONResponse(state.registry.describe(model), status_code=201 if created else 200)

    @app.get("/admin/models/{model_id:path}", response_model=None)
    async def admin_get(model_id: str) -> dict[str, Any] | JSONResponse:
        model = state.registry.get(model_id)
        if model is None:
            return JSONResponse({"detail": f"model {model_id} is not served"}, status_code=404)
        return state.registry.describe(model)

    @app.delete("/admin/models/{model_id:path}", response_model=None)
    async def admin_delete(model_id: str) -> dict[str, Any] | JSONResponse:
        if not state.registry.remove(model_id):
            return JSONResponse({"detail": f"model {model_id} is not served"}, status_code=404)
        return {"message": "Model removed.", "id": model_id}

    return app


async def _stream(
    state: NimState,
    server: str,
    completion_id: str,
    model: str,
    choices: list[dict[str, Any]],
    finish: str,
    prompt: int,
    completion: int,
    usage: dict[str, int],
    include_usage: bool,
) -> AsyncIterator[str]:
    """SSE chunks paced by the latency model: the role first, then text or tool-call pieces as tokens decode."""
    created = int(time.time())
    planned: list[tuple[int, int, dict[str, Any]]] = []  # (token position, choice, delta)
    for index, message in enumerate(choices):
        deltas = wire.stream_deltas(message)
        total = sum(tokens for _, tokens in deltas) or 1
        running = 0
        for delta, tokens in deltas:
            running += tokens
            planned.append((math.ceil(completion * running / total), index, delta))
    planned.sort(key=lambda item: item[0])
    sent = 0
    async with aclosing(state.scheduler.run(server, prompt, completion, _STREAM_STEP_TOKENS)) as progress:
        async for done, _ in progress:
            while sent < len(planned) and planned[sent][0] <= done:
                _, index, delta = planned[sent]
                yield wire.chunk(completion_id, created, model, delta, None, index)
                sent += 1
    for _, index, delta in planned[sent:]:
        yield wire.chunk(completion_id, created, model, delta, None, index)
    for index in range(len(choices)):
        yield wire.chunk(completion_id, created, model, {}, finish, index)
    if include_usage:
        yield wire.usage_chunk(completion_id, created, model, usage)
    yield _DONE
