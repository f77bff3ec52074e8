"""One request of a load test: what it returned, a stable name for how it failed, the agent sender, the client."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from agent_flywheel.scaling.loadgen.template import AnswerError, RequestTemplate
from agent_flywheel.scaling.loadgen.tracecontext import TraceContext, new_trace_context


@dataclass(frozen=True)
class LlmCallTiming:
    """One model call made while serving a request, as its span tells it."""

    model: str | None
    latency_s: float
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass
class RequestResult:
    """What one request returned. ``latency_s=None`` lets the generator use its own wall-clock measurement.

    ``trace`` is the trace the request started (its ``traceparent``), or the one the agent named; ``llm_calls``
    and the token counts are filled in from that trace's spans once they have arrived.
    """

    ok: bool
    latency_s: float | None = None
    error_kind: str | None = None
    llm_calls: list[LlmCallTiming] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    status_code: int | None = None
    trace: TraceContext | None = None


SendFn = Callable[[aiohttp.ClientSession, int], Awaitable[RequestResult]]


def answered_status(exc: BaseException) -> int | None:
    """The HTTP status behind an aiohttp error, if the server sent one (a malformed answer also raises
    ``ClientResponseError``, with a made-up 400, from an ``HttpProcessingError``)."""
    if isinstance(exc, aiohttp.ClientResponseError) and not isinstance(exc.__cause__, HttpProcessingError):
        return exc.status
    return None


def error_kind_of(exc: BaseException) -> str:
    """A short, stable name for a failure, used to count error kinds per level.

    Why: error counts are compared across levels, passes and runs, so the names must not depend on
    exception messages: ``timeout``, ``http_<status>`` (``raise_for_status``), ``connect_error`` (no
    connection could be made), ``transport_error`` (the connection broke or the answer was not valid HTTP),
    ``bad_response`` (a JSON body of the wrong content type), else the exception's class name.
    """
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError and ConnectionTimeoutError included
        return "timeout"
    if isinstance(exc, aiohttp.ContentTypeError):
        return "bad_response"
    status = answered_status(exc)
    if status is not None:
        return f"http_{status}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(exc, aiohttp.ClientError):
        return "transport_error"
    return type(exc).__name__


def read_reply(template: RequestTemplate, status: int, raw: bytes, trace: TraceContext) -> RequestResult:
    """What an agent's reply means: an HTTP error, a reply without an answer where the template says it is
    (``no_answer``; ``bad_response`` when it is not JSON), or success. When the template says where the agent
    names its own trace id, that id replaces ours (the agent started a trace of its own)."""
    if status >= 400:
        return RequestResult(ok=False, error_kind=f"http_{status}", status_code=status, trace=trace)
    if not template.answer_path and not template.trace_id_path:
        return RequestResult(ok=True, status_code=status, trace=trace)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return RequestResult(ok=False, error_kind="bad_response", status_code=status, trace=trace)
    named = template.trace_id_of(data)
    if named is not None and named != trace.trace_id:
        trace = TraceContext(named, None)
    try:
        template.answer_of(data)
    except AnswerError:
        return RequestResult(ok=False, error_kind="no_answer", status_code=status, trace=trace)
    return RequestResult(ok=True, status_code=status, trace=trace)


def template_sender(
    template: RequestTemplate,
    inputs: Sequence[str | Mapping[str, Any]],
    user_prefix: str = "load-user",
    headers: Mapping[str, str] | None = None,
) -> SendFn:
    """A request function for any agent described by ``template``.

    Why: the generator is agent-agnostic; this adapter fills the template with input ``i % len(inputs)`` and
    sends it with a fresh W3C ``traceparent`` (so the request's spans can be found by trace id), the template's
    headers and ``headers``. Per-LLM-call figures never come from the answer: they come from the spans.
    """
    if not inputs:
        raise ValueError("inputs must not be empty")
    fixed = {**template.headers, **(headers or {})}
    relative = template.relative_path  # joined onto the client's base URL, so a base URL's path prefix is kept
    method = template.method
    send_body = method != "GET"

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        trace = new_trace_context()
        body = template.body_for(inputs[i % len(inputs)], i, user_prefix) if send_body else None
        async with client.request(
            method,
            relative,
            json=body,
            headers={**fixed, "traceparent": trace.traceparent},
            allow_redirects=False,
        ) as response:
            status = response.status
            raw = await response.read()
        return read_reply(template, status, raw, trace)

    return send


def make_client(
    base_url: str,
    max_connections: int = 256,
    timeout_s: float = 60.0,
    headers: Mapping[str, str] | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session for the generator, its pool large enough for the sweep; use it as ``async with``.

    Why aiohttp: the client's CPU per request is the ceiling of one generator process (``bench/``
    measured ~1 ms per request and a collapse past ~500/s with httpx, a tenth of that with aiohttp).
    Why the pool size: a closed loop at concurrency 128 on a smaller pool (aiohttp allows 100 by default)
    would queue inside the client, and that queueing would be measured as server latency. ``timeout_s`` is
    each request's total timeout. Relative paths (``v1/chat``) are joined onto ``base_url`` keeping its
    path; a path with a leading ``/`` replaces it. Proxy settings from the environment are not used.
    ``headers`` go with every request (an agent's credentials).
    """
    connector = aiohttp.TCPConnector(limit=max_connections)
    return aiohttp.ClientSession(
        base_url=base_url.rstrip("/") + "/",
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers=dict(headers) if headers else None,
    )
