"""One request of a load test: what it returned, a stable name for how it failed, the chat sender, the client."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError


@dataclass
class RequestResult:
    """What one request returned. ``latency_s=None`` lets the generator use its own wall-clock measurement."""

    ok: bool
    latency_s: float | None = None
    error_kind: str | None = None
    llm_latencies: list[float] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    status_code: int | None = None


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


DEFAULT_CHAT_MESSAGES: tuple[str, ...] = (
    "Where is my order ORD-1001?",
    "Can I return the headphones from order ORD-1002?",
    "Do you have a waterproof hiking jacket?",
    "What is the status of my refund for ORD-1003?",
    "Hi! How are you today?",
)


def chat_sender(
    messages: Sequence[str] = DEFAULT_CHAT_MESSAGES,
    path: str = "/v1/chat",
    body: Callable[[int], dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> SendFn:
    """A request function for the demo agent's ``POST /v1/chat``.

    Why: the generator is agent-agnostic; this adapter knows the demo agent's contract. Request ``i`` sends
    ``body(i)`` (default ``{"message": messages[i % len], "user_id": "load-user-<i>", "session_id": "load-<i>"}``:
    one user per request, so a canary router spreads load tests over both variants); the JSON answer's
    ``llm_calls: [{model, latency_s, input_tokens, output_tokens}]`` gives the per-call LLM latencies and tokens.
    An HTTP status >= 400 is an error of kind ``http_<status>``; an unparseable answer is ``bad_response``.
    """
    if body is None and not messages:
        raise ValueError("messages must not be empty")
    extra_headers = dict(headers) if headers else None
    relative = path.lstrip("/")  # joined onto the client's base URL, so a base URL's path prefix is kept

    def make_body(i: int) -> dict[str, Any]:
        if body is not None:
            return body(i)
        return {"message": messages[i % len(messages)], "user_id": f"load-user-{i}", "session_id": f"load-{i}"}

    async def send(client: aiohttp.ClientSession, i: int) -> RequestResult:
        async with client.post(relative, json=make_body(i), headers=extra_headers, allow_redirects=False) as response:
            status = response.status
            raw = await response.read()
        if status >= 400:
            return RequestResult(ok=False, error_kind=f"http_{status}", status_code=status)
        try:
            data = json.loads(raw)
            calls = data.get("llm_calls") or []
            latencies = [float(c["latency_s"]) for c in calls if c.get("latency_s") is not None]
            tokens_in = sum(int(c.get("input_tokens") or 0) for c in calls)
            tokens_out = sum(int(c.get("output_tokens") or 0) for c in calls)
        except (ValueError, TypeError, KeyError, AttributeError):
            return RequestResult(ok=False, error_kind="bad_response", status_code=status)
        return RequestResult(
            ok=True,
            llm_latencies=latencies,
            input_tokens=tokens_in if calls else None,
            output_tokens=tokens_out if calls else None,
            status_code=status,
        )

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
