"""One chat turn of the demo agent: pick a tool with the LLM, run it, let the LLM write the reply.

This is the loop the flywheel learns from, so every LLM call is logged exactly as sent and received:

- call 1, workload ``<workload_id>`` (default ``customer-support``): the conversation plus the tools,
  ``tool_choice: "auto"``; the model either calls tools or answers directly (chit-chat);
- call 2, workload ``<workload_id>-reply`` (default ``customer-support-reply``), only when call 1 chose
  tools: the conversation, the tool calls and their results, no tools offered; the model writes the reply.

The two calls are different tasks (tool selection is a tool-calling workload, reply writing a generic one),
so they get different workload ids and the flywheel evaluates each with its own metric. Every turn is one
trace: a root span ``agent.chat`` with a child per LLM call and per tool call.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from simulators.agent.logship import LogShipper
from simulators.agent.otel import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    Span,
    SpanExporter,
    Trace,
    build_otlp,
)
from simulators.agent.routing import Router
from simulators.agent.settings import AgentSettings
from simulators.agent.tools import TOOLS, ToolResult, run_tool, tool_latency

AGENT_NAME = "customer-support"
GEN_AI_SYSTEM = "nvidia.nim"  # not a well-known gen_ai.provider.name value, so a namespaced custom one

SYSTEM_PROMPT = (
    "You are the customer-support assistant of Northwind Outfitters, an online shop for electronics, home, "
    "kitchen, outdoor gear and apparel. Help with order status, returns and refunds, and product questions. "
    "Use the tools to look things up; never invent order details, prices or stock. Order ids look like ORD-12345 "
    "and product ids like P-1001. Returns are accepted within 30 days of delivery. If the customer asks for a "
    "person or the problem cannot be solved with the tools, escalate to a human. Be brief and friendly."
)


NIM_ATTEMPTS = 3  # as the OpenAI client: the call and two retries
RETRY_STATUSES = frozenset({408, 409, 429})
RETRY_DELAY_S = 0.25


class NimError(Exception):
    """An LLM call failed: ``kind`` is timeout, connect, http_status or bad_response."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        """What an OpenAI-style client sends again: a dropped connection, 408, 409, 429 or a 5xx (not a timeout:
        the answer may still be coming)."""
        if self.kind == "connect":
            return True
        return (
            self.kind == "http_status"
            and self.status is not None
            and (self.status in RETRY_STATUSES or self.status >= 500)
        )

    def as_dict(self) -> dict[str, Any]:
        """The ``error`` object of the 502 answer."""
        return {"type": "nim_error", "kind": self.kind, "message": self.message, "upstream_status": self.status}


class ChatFailed(Exception):
    """A chat turn could not be completed; carries the cause and the trace that recorded it."""

    def __init__(self, error: NimError, trace_id: str, model: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.trace_id = trace_id
        self.model = model


@dataclass
class LlmCall:
    """Timing and tokens of one LLM call, as returned in the chat response (times in epoch seconds)."""

    model: str
    workload_id: str
    latency_s: float
    input_tokens: int
    output_tokens: int
    start_s: float
    end_s: float

    def as_dict(self) -> dict[str, Any]:
        """The form returned in the chat response's ``llm_calls``."""
        return {
            "model": self.model,
            "workload_id": self.workload_id,
            "latency_s": round(self.latency_s, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "start_s": self.start_s,
            "end_s": self.end_s,
        }


@dataclass
class ChatOutcome:
    """The result of one chat turn."""

    reply: str
    model: str
    route: str
    trace_id: str
    tool_calls: list[ToolResult] = field(default_factory=list)
    llm_calls: list[LlmCall] = field(default_factory=list)


class SessionStore:
    """Recent messages per ``session_id`` (bounded in sessions and messages), so follow-ups have context."""

    def __init__(self, max_messages: int, max_sessions: int = 2048) -> None:
        self.max_messages = max_messages
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def history(self, session_id: str | None) -> list[dict[str, Any]]:
        """A copy of the session's recent messages (empty without a session id)."""
        if not session_id or self.max_messages == 0:
            return []
        return copy.deepcopy(self._sessions.get(session_id, []))

    def append(self, session_id: str | None, *messages: dict[str, Any]) -> None:
        """Remember the turn's user message and reply."""
        if not session_id or self.max_messages == 0:
            return
        kept = [*self._sessions.pop(session_id, []), *messages][-self.max_messages :]
        self._sessions[session_id] = kept
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)


@dataclass
class ChatStats:
    """Counters for ``GET /admin/stats``."""

    requests: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
    by_route: dict[str, int] = field(default_factory=dict)
    llm_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(self.errors),
            "by_model": dict(self.by_model),
            "by_route": dict(self.by_route),
            "llm_calls": self.llm_calls,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
        }


def _first_message(body: Any) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise NimError("bad_response", "the NIM answer has no choices")
    message = choices[0].get("message")
    if not isinstance(message, Mapping):
        raise NimError("bad_response", "the NIM answer's first choice has no message")
    return dict(message)


def _usage(body: Mapping[str, Any]) -> tuple[int, int]:
    usage = body.get("usage")
    if not isinstance(usage, Mapping):
        return 0, 0
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else 0), (completion if isinstance(completion, int) else 0)


def _function_of(call: Mapping[str, Any]) -> Mapping[str, Any]:
    function = call.get("function")
    return function if isinstance(function, Mapping) else {}


def _tool_call_for_request(call: Mapping[str, Any], call_id: str) -> dict[str, Any]:
    """A tool call as OpenAI expects it in a follow-up request: an id and arguments as a JSON string."""
    function = _function_of(call)
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": function.get("name"), "arguments": arguments}}


def _fallback_reply(results: list[ToolResult]) -> str:
    """What to say when the reply-writing call returns no text: the tool results, plainly."""
    parts = [f"{r.name}: {json.dumps(r.output, ensure_ascii=False)}" for r in results]
    return "Here is what I found. " + " ".join(parts)


class ChatAgent:
    """The agent loop, independent of the web framework: one :meth:`chat` per user message."""

    def __init__(
        self,
        settings: AgentSettings,
        nim_url: str,
        http: httpx.AsyncClient,
        router: Router,
        shipper: LogShipper,
        exporter: SpanExporter,
    ) -> None:
        self.settings = settings
        self.completions_url = nim_url.rstrip("/") + "/v1/chat/completions"
        parts = urlsplit(self.completions_url)
        self._server_address, self._server_port = parts.hostname, parts.port
        self.http = http
        self.router = router
        self.shipper = shipper
        self.exporter = exporter
        self.sessions = SessionStore(settings.session_turns)
        self.stats = ChatStats()

    async def chat(self, message: str, user_id: str, session_id: str | None = None) -> ChatOutcome:
        """Answer one user message; raises :class:`ChatFailed` when the NIM fails (the trace is still written)."""
        route = self.router.route(user_id)
        self.stats.requests += 1
        self.stats.by_model[route.model] = self.stats.by_model.get(route.model, 0) + 1
        self.stats.by_route[route.arm] = self.stats.by_route.get(route.arm, 0) + 1
        trace = Trace()
        root = trace.start_span(
            "agent.chat",
            SPAN_KIND_SERVER,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": AGENT_NAME,
                "gen_ai.request.model": route.model,
                "gen_ai.conversation.id": session_id,
                "enduser.id": user_id,
                "flywheel.route": route.arm,
                "flywheel.simulated": True,
            },
        )
        outcome = ChatOutcome(reply="", model=route.model, route=route.arm, trace_id=trace.trace_id)
        try:
            await self._turn(trace, root, outcome, message, session_id)
        except NimError as exc:
            self.stats.errors[exc.kind] = self.stats.errors.get(exc.kind, 0) + 1
            root.set("error.type", exc.kind)
            root.end(error=exc.message)
            raise ChatFailed(exc, trace.trace_id, route.model) from exc
        finally:
            root.set("flywheel.llm_calls", len(outcome.llm_calls))
            root.set("flywheel.tool_calls", len(outcome.tool_calls))
            root.end()
            self.exporter.export(build_otlp(trace.spans, resource_attributes={"flywheel.simulated": True}))
        self.stats.ok += 1
        return outcome

    async def _turn(self, trace: Trace, root: Span, outcome: ChatOutcome, message: str, session_id: str | None) -> None:
        user_message = {"role": "user", "content": message}
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *self.sessions.history(session_id), user_message]
        request = {
            "model": outcome.model,
            "messages": messages,
            "tools": TOOLS,
            "tool_choice": "auto",
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        first = _first_message(await self._llm(trace, root, outcome, request, self.settings.workload_id))
        calls = [c for c in first.get("tool_calls") or [] if isinstance(c, Mapping)]
        if not calls:
            content = first.get("content")
            outcome.reply = content if isinstance(content, str) else ""
        else:
            ids = [str(c.get("id") or f"call_{i}") for i, c in enumerate(calls)]
            results = await asyncio.gather(
                *(self._tool(trace, root, call, call_id) for call, call_id in zip(calls, ids, strict=True))
            )
            outcome.tool_calls = list(results)
            assistant = {
                "role": "assistant",
                "content": first.get("content") or "",
                "tool_calls": [_tool_call_for_request(c, i) for c, i in zip(calls, ids, strict=True)],
            }
            tool_messages = [
                {"role": "tool", "tool_call_id": r.call_id, "content": json.dumps(r.output, ensure_ascii=False)}
                for r in results
            ]
            reply_request = {
                "model": outcome.model,
                "messages": [*messages, assistant, *tool_messages],
                "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens,
            }
            second = _first_message(await self._llm(trace, root, outcome, reply_request, self.settings.reply_workload))
            content = second.get("content")
            outcome.reply = content if isinstance(content, str) and content.strip() else _fallback_reply(results)
        self.sessions.append(session_id, user_message, {"role": "assistant", "content": outcome.reply})

    async def _llm(
        self, trace: Trace, root: Span, outcome: ChatOutcome, request: dict[str, Any], workload_id: str
    ) -> dict[str, Any]:
        """One chat.completions call: a CLIENT span, timing, tokens, and the log record."""
        index = len(outcome.llm_calls) + 1
        model = str(request["model"])
        span = trace.start_span(
            f"chat {model}",
            SPAN_KIND_CLIENT,
            parent=root,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": GEN_AI_SYSTEM,
                "gen_ai.provider.name": GEN_AI_SYSTEM,
                "gen_ai.request.model": model,
                "gen_ai.request.temperature": float(request.get("temperature", 0.0)),
                "gen_ai.request.max_tokens": int(request.get("max_tokens", 0)),
                "server.address": self._server_address,
                "server.port": self._server_port,
                "flywheel.workload_id": workload_id,
                "flywheel.llm_call.index": index,
            },
        )
        self.stats.llm_calls += 1
        start_s, t0 = time.time(), time.perf_counter()
        try:
            body = await self._post(request, trace.traceparent(span))
        except NimError as exc:
            span.set("error.type", exc.kind)
            span.end(span.start_ns + int((time.perf_counter() - t0) * 1e9), error=exc.message)
            raise
        latency = time.perf_counter() - t0
        input_tokens, output_tokens = _usage(body)
        choices = body.get("choices") or []
        span.set("gen_ai.response.model", body.get("model") if isinstance(body.get("model"), str) else None)
        span.set("gen_ai.response.id", body.get("id") if isinstance(body.get("id"), str) else None)
        span.set(
            "gen_ai.response.finish_reasons", [str(c.get("finish_reason")) for c in choices if isinstance(c, dict)]
        )
        span.set("gen_ai.usage.input_tokens", input_tokens)
        span.set("gen_ai.usage.output_tokens", output_tokens)
        span.end(span.start_ns + int(latency * 1e9))
        outcome.llm_calls.append(
            LlmCall(model, workload_id, latency, input_tokens, output_tokens, start_s, start_s + latency)
        )
        self.shipper.add(
            f"{trace.trace_id}-{index}",
            {
                "timestamp": datetime.fromtimestamp(int(start_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "workload_id": workload_id,
                "client_id": self.settings.client_id,
                "request": copy.deepcopy(request),
                "response": body,
            },
        )
        return body

    async def _post(self, request: dict[str, Any], traceparent: str) -> dict[str, Any]:
        """One chat completion, retried as an OpenAI-style client retries (a loaded machine drops a keep-alive
        connection now and then; a real agent's SDK does not turn that into a failed user turn)."""
        for attempt in range(1, NIM_ATTEMPTS + 1):
            try:
                return await self._post_once(request, traceparent)
            except NimError as exc:
                if attempt == NIM_ATTEMPTS or not exc.retryable:
                    raise
                await asyncio.sleep(RETRY_DELAY_S * attempt)
        raise AssertionError("unreachable")

    async def _post_once(self, request: dict[str, Any], traceparent: str) -> dict[str, Any]:
        try:
            response = await self.http.post(self.completions_url, json=request, headers={"traceparent": traceparent})
        except httpx.TimeoutException as exc:
            raise NimError("timeout", f"the NIM at {self.completions_url} did not answer in time ({exc!r})") from exc
        except httpx.HTTPError as exc:
            raise NimError("connect", f"cannot reach the NIM at {self.completions_url}: {exc!r}") from exc
        if response.status_code != 200:
            raise NimError(
                "http_status",
                f"the NIM answered {response.status_code}: {response.text[:500]}",
                status=response.status_code,
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise NimError("bad_response", "the NIM answer is not JSON", status=response.status_code) from exc
        if not isinstance(body, dict):
            raise NimError("bad_response", "the NIM answer is not a JSON object", status=response.status_code)
        _first_message(body)
        return body

    async def _tool(self, trace: Trace, root: Span, call: Mapping[str, Any], call_id: str) -> ToolResult:
        """Run one tool call under an ``execute_tool`` span, after its simulated backend latency."""
        function = _function_of(call)
        name = str(function.get("name") or "")
        span = trace.start_span(
            f"execute_tool {name}",
            SPAN_KIND_INTERNAL,
            parent=root,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.type": "function",
            },
        )
        t0 = time.perf_counter()
        delay = tool_latency(name) * self.settings.tool_latency_scale
        if delay > 0:
            await asyncio.sleep(delay)
        result = run_tool(name, function.get("arguments"))
        result.call_id = call_id
        result.latency_s = time.perf_counter() - t0
        self.stats.tool_calls += 1
        if result.ok:
            span.end(span.start_ns + int(result.latency_s * 1e9))
        else:
            self.stats.tool_errors += 1
            span.set("error.type", "tool_error")
            span.end(span.start_ns + int(result.latency_s * 1e9), error=result.error)
        return result
