"""The demo agent as an HTTP service: ``POST /v1/chat`` plus the simulator-only ``/admin/`` endpoints.

It produces the traffic the rest of the project consumes: log records for the flywheel (via the log
server), OTLP traces for the profiler, and per-model answers for staged rollouts. The routing split and
the OTLP endpoint can change at run time, so a rollout or a profiling session needs no restart.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from simulators.agent.chat import ChatAgent, ChatFailed
from simulators.agent.logship import LogShipper
from simulators.agent.otel import SpanExporter
from simulators.agent.routing import Router
from simulators.agent.settings import AgentSettings, agent_settings, spans_path
from simulators.common import create_simulator_app
from simulators.settings import LocalStackConfig

logger = logging.getLogger("simulators.agent")


class ChatRequest(BaseModel):
    """``POST /v1/chat``: one user message."""

    message: str = Field(min_length=1, max_length=16_000)
    user_id: str = Field(min_length=1, max_length=200)
    session_id: str | None = Field(default=None, max_length=200)


class RoutingUpdate(BaseModel):
    """``POST /admin/routing``: the canary model (null clears it) and the share of users it gets."""

    model_config = ConfigDict(extra="forbid")

    canary_model: str | None = Field(default=None, min_length=1)
    canary_weight: float = Field(default=0.0, ge=0.0, le=1.0)


class OtlpUpdate(BaseModel):
    """``POST /admin/otlp``: the OTLP/HTTP collector base URL, or null to stop exporting."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(default=None, min_length=1)


@dataclass
class AgentRuntime:
    """Everything one running agent holds: its settings, clients, router, log shipper, span exporter."""

    settings: AgentSettings
    nim_url: str
    logserver_url: str
    router: Router
    shipper: LogShipper
    exporter: SpanExporter
    agent: ChatAgent | None = None
    http: httpx.AsyncClient | None = None

    def require_agent(self) -> ChatAgent:
        """The chat loop; only there while the app's lifespan runs."""
        if self.agent is None:
            raise RuntimeError("the agent is not started (run the app with its lifespan)")
        return self.agent


def build_runtime(cfg: LocalStackConfig) -> AgentRuntime:
    """Validate the ``agent`` section and build the parts that need no running event loop."""
    settings = agent_settings(cfg)
    logserver_url = settings.logserver_url or cfg.url("logserver")
    return AgentRuntime(
        settings=settings,
        nim_url=settings.nim_url or cfg.url("nim"),
        logserver_url=logserver_url,
        router=Router(settings.model, settings.canary_model, settings.canary_weight),
        shipper=LogShipper(
            logserver_url,
            settings.log_index,
            batch_size=settings.log_batch_size,
            flush_interval_s=settings.log_flush_interval_s,
            max_buffer=settings.log_max_buffer,
            timeout_s=settings.log_timeout_s,
            enabled=settings.log_enabled,
        ),
        exporter=SpanExporter(spans_path(cfg, settings), settings.otlp_endpoint, settings.otlp_timeout_s),
    )


def _error(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"type": kind, "message": message}, "simulated": True, **extra}
    )


def create_app(cfg: LocalStackConfig) -> FastAPI:
    """The demo customer-support agent (simulated): chat, health and admin endpoints."""
    runtime = build_runtime(cfg)
    app = create_simulator_app("Demo customer-support agent")
    app.state.runtime = runtime

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.http = httpx.AsyncClient(
            timeout=httpx.Timeout(runtime.settings.nim_timeout_s),  # connecting too: a busy machine is slow to accept
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256),
        )
        runtime.agent = ChatAgent(
            runtime.settings, runtime.nim_url, runtime.http, runtime.router, runtime.shipper, runtime.exporter
        )
        runtime.shipper.start()
        try:
            yield
        finally:
            await runtime.shipper.close()
            await runtime.exporter.aclose()
            await runtime.http.aclose()
            runtime.agent = None

    app.router.lifespan_context = lifespan

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and what the agent talks to."""
        return {
            "status": "ok",
            "simulated": True,
            "teacher_model": runtime.router.teacher_model,
            "nim_url": runtime.nim_url,
            "logserver_url": runtime.logserver_url,
        }

    @app.post("/v1/chat", response_model=None)
    async def chat(body: ChatRequest) -> dict[str, Any] | JSONResponse:
        """One user message in, the agent's reply out, with its tool calls, LLM calls and trace id."""
        try:
            outcome = await runtime.require_agent().chat(body.message, body.user_id, body.session_id)
        except ChatFailed as exc:
            return JSONResponse(
                status_code=502,
                content={"error": exc.error.as_dict(), "model": exc.model, "trace_id": exc.trace_id, "simulated": True},
            )
        return {
            "reply": outcome.reply,
            "model": outcome.model,
            "route": outcome.route,
            "tool_calls": [result.as_dict() for result in outcome.tool_calls],
            "llm_calls": [call.as_dict() for call in outcome.llm_calls],
            "trace_id": outcome.trace_id,
            "simulated": True,
        }

    @app.get("/admin/routing")
    async def get_routing() -> dict[str, Any]:
        """The current teacher/canary split."""
        return runtime.router.state()

    @app.post("/admin/routing", response_model=None)
    async def set_routing(body: RoutingUpdate) -> dict[str, Any] | JSONResponse:
        """Start, change or (with ``canary_model: null``) end a staged rollout."""
        try:
            runtime.router.configure(body.canary_model, body.canary_weight)
        except ValueError as exc:
            return _error(422, "invalid_routing", str(exc))
        logger.info("routing: %s", runtime.router.state())
        return runtime.router.state()

    @app.get("/admin/otlp")
    async def get_otlp() -> dict[str, Any]:
        """Where spans are exported."""
        return {"endpoint": runtime.exporter.endpoint, "spans_file": str(runtime.exporter.path)}

    @app.post("/admin/otlp")
    async def set_otlp(body: OtlpUpdate) -> dict[str, Any]:
        """Point OTLP export at a collector (or stop it); the spans file is always written."""
        runtime.exporter.endpoint = body.endpoint
        return {"endpoint": runtime.exporter.endpoint, "spans_file": str(runtime.exporter.path)}

    @app.post("/admin/flush", response_model=None)
    async def flush() -> dict[str, Any] | JSONResponse:
        """Write every buffered log record now and refresh the index, so a count right after sees them all."""
        result = await runtime.shipper.flush(refresh=True)
        await runtime.exporter.drain()
        body = result.as_dict()
        if not result.ok:
            details = {k: v for k, v in body.items() if k != "error"}
            return _error(503, "log_write_failed", result.error or "log write failed", **details)
        return body

    @app.get("/admin/stats")
    async def stats() -> dict[str, Any]:
        """Counters: chats by outcome, model and route; log records written, failed, dropped; spans exported."""
        return {
            "simulated": True,
            "chat": runtime.require_agent().stats.as_dict() if runtime.agent else None,
            "log": runtime.shipper.stats(),
            "spans": runtime.exporter.stats(),
            "routing": runtime.router.state(),
        }

    return app
