"""The HTTP layer every NeMo service module shares: retries, error mapping, secret hygiene, log lines.

Why our own and not the SDK's: the SDK retries ``409`` (so "create, or ignore if it exists" costs three
round trips and then raises), retries job-creating POSTs after a read timeout (a second fine-tune for the
same inputs), and its errors do not say what to do next. Here:

- connection errors, timeouts, ``408``, ``425``, ``429`` and ``5xx`` are retried with exponential backoff and
  jitter (:mod:`agent_flywheel.transient`); other ``4xx`` never are (``409`` above all: it is an answer);
- a POST that creates something is only retried when the request surely did not reach the service
  (connect errors, ``503``, ``429``); otherwise the error is marked ``ambiguous`` and the caller looks
  the job up by its idempotency key before trying again;
- a :class:`NemoAPIError` names the service, method, path, status, the server's ``detail`` and a hint;
- the API key and any ``api_key`` sent in a body are redacted from every message; logs carry counts
  (status, bytes, milliseconds, attempts), never payloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from agent_flywheel.transient import RETRY_STATUSES

logger = logging.getLogger(__name__)

SleepFn = Callable[[float], Awaitable[None]]
AcceptFn = Callable[[httpx.Response], bool]

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})
# Answers after which the request was certainly not processed: safe to resend even a creating POST.
_NOT_PROCESSED_STATUSES = frozenset({429, 503})
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MAX_DETAIL_CHARS = 600
REDACTED = "***"


class NemoAPIError(Exception):
    """A NeMo call that failed for good: which service, which call, what the server said, what to do.

    ``status`` is None when no response came back (connection error, timeout). ``ambiguous`` is True when
    a creating request may have been processed although it failed (look it up before creating again).
    """

    def __init__(
        self,
        *,
        service: str,
        method: str,
        path: str,
        status: int | None,
        detail: str,
        hint: str = "",
        retryable: bool = False,
        ambiguous: bool = False,
        attempts: int = 1,
    ) -> None:
        self.service = service
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        self.hint = hint
        self.retryable = retryable
        self.ambiguous = ambiguous
        self.attempts = attempts
        super().__init__(self._message())

    def _message(self) -> str:
        status = str(self.status) if self.status is not None else "no response"
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        text = f"NeMo {self.service}: {self.method} {self.path} -> {status}{tries}: {self.detail}"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only __init__: rebuild from the fields so the error survives pickling (Prefect results).
        return (_rebuild_error, (type(self), self.__dict__.copy()))

    @property
    def not_found(self) -> bool:
        """True for a 404: the thing is not there."""
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """True for a 409: the thing already exists or is in a state that forbids the call."""
        return self.status == 409


def _rebuild_error(cls: type[NemoAPIError], state: dict[str, Any]) -> NemoAPIError:
    keys = ("service", "method", "path", "status", "detail", "hint", "retryable", "ambiguous", "attempts")
    error = cls(**{k: state[k] for k in keys})
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: ``delay = min(max, base * 2**(attempt-1))``, half of it jittered."""

    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 10.0
    retry_statuses: frozenset[int] = RETRY_STATUSES

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based); honours ``Retry-After`` up to the cap."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.backoff_max_s)
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Redactor:
    """Secrets that must never appear in an error or a log line; everything printed goes through it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Remember a secret (ignored when empty or too short to be one: redacting "a" would mangle text)."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)

    def add_from_body(self, body: Any) -> None:
        """Remember every ``api_key`` string in a request body (e.g. a remote judge's key)."""
        if isinstance(body, Mapping):
            for key, value in body.items():
                if key == "api_key" and isinstance(value, str):
                    self.add(value)
                else:
                    self.add_from_body(value)
        elif isinstance(body, list | tuple):
            for value in body:
                self.add_from_body(value)

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***`` (longest first, so overlaps cannot leak)."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def server_detail(response: httpx.Response) -> str:
    """The server's explanation in one line: FastAPI ``detail`` (string or 422 list), NIM ``error``, or text.

    422 items keep ``loc`` and ``msg`` but drop ``input``: FastAPI echoes the offending body there, which
    may hold a judge's API key.
    """
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        text = response.text.strip()
        return text[:_MAX_DETAIL_CHARS] if text else response.reason_phrase or "(empty body)"
    detail: Any = body
    if isinstance(body, Mapping):
        detail = body.get("detail", body.get("error", body.get("message", body)))
        if isinstance(detail, Mapping) and "message" in detail:
            detail = detail["message"]
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
            else:
                parts.append(str(item))
        detail = "; ".join(parts)
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    return text[:_MAX_DETAIL_CHARS]


def hint_for(status: int | None, service: str, base_url: str, *, ambiguous: bool = False, attempts: int = 1) -> str:
    """What a person should do about a failure, by status."""
    retried = f" (tried {attempts} times with backoff)" if attempts > 1 else ""
    if ambiguous:
        return (
            f"{service} at {base_url} may have processed this creating request although it failed, so it was not "
            "resent blindly; creating calls with an idempotency key look the job up before trying again"
        )
    if status is None:
        return f"cannot reach {service} at {base_url}{retried}: check the URL and that the service is up"
    if status in (401, 403):
        return f"{base_url} answered {status}: check the NeMo API key (api_key) and the gateway's permissions"
    if status == 404:
        return f"{base_url} answered 404: check the namespace/name/id, and that {service} is served at {base_url}"
    if status == 409:
        return "conflict: it already exists or its state forbids this call"
    if status == 429:
        return f"rate limited{retried}: lower the concurrency or raise the retry budget"
    if status >= 500:
        return f"{service} at {base_url} failed internally{retried}: check its logs and health"
    if 400 <= status < 500:
        return (
            f"{base_url} answered {status}, so it was not retried (the same request gets the same answer): "
            f"check that {base_url} is {service} (a URL that points at another service answers like this) "
            "and see the detail"
        )
    return f"{base_url} answered {status}, which this call does not expect: check that it is {service}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


class ServiceHTTP:
    """One NeMo service behind an ``httpx.AsyncClient``: every call goes through :meth:`request`."""

    def __init__(
        self,
        service: str,
        client: httpx.AsyncClient,
        *,
        retry: RetryPolicy | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.service = service
        self.client = client
        self.retry = retry or RetryPolicy()
        self._sleep: SleepFn = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self.redact = redactor or Redactor()

    def __repr__(self) -> str:
        return f"ServiceHTTP({self.service!r}, {self.base_url!r})"

    @property
    def base_url(self) -> str:
        """Where this service lives (for hints)."""
        return str(self.client.base_url).rstrip("/")

    async def sleep(self, seconds: float) -> None:
        """The injected sleep (tests pass a recorder, so nothing really waits)."""
        await self._sleep(seconds)

    def backoff(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The jittered delay before retry ``attempt``, for callers that run their own retry loop."""
        return self.retry.delay(attempt, self._rng, retry_after_s)

    def error(
        self,
        method: str,
        path: str,
        status: int | None,
        detail: str,
        *,
        retryable: bool = False,
        ambiguous: bool = False,
        attempts: int = 1,
        hint: str | None = None,
    ) -> NemoAPIError:
        """A :class:`NemoAPIError` for this service, with the secrets redacted."""
        return NemoAPIError(
            service=self.service,
            method=method,
            path=path,
            status=status,
            detail=self.redact(detail),
            hint=self.redact(
                hint
                if hint is not None
                else hint_for(status, self.service, self.base_url, ambiguous=ambiguous, attempts=attempts)
            ),
            retryable=retryable,
            ambiguous=ambiguous,
            attempts=attempts,
        )

    def response_error(self, method: str, path: str, response: httpx.Response, attempts: int = 1) -> NemoAPIError:
        """The error for a response the caller did not expect."""
        return self.error(method, path, response.status_code, server_detail(response), attempts=attempts)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Collection[int] = (200, 201, 202, 204),
        accept: AcceptFn | None = None,
        idempotent: bool | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one call with retries; return the response when its status is in ``ok`` (or ``accept`` says so).

        ``idempotent`` defaults to the HTTP method's nature; pass True for a creating POST whose duplicate
        is answered with 409 (create-or-exists), so resending it is harmless.
        """
        method = method.upper()
        safe_to_resend = method in _IDEMPOTENT_METHODS if idempotent is None else idempotent
        if json is not None:
            self.redact.add_from_body(json)
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = await self.client.request(
                    method, path, params=params, json=json, data=data, headers=headers, **extra
                )
            except httpx.TransportError as exc:
                not_sent = isinstance(exc, _NOT_SENT_ERRORS)
                if (safe_to_resend or not_sent) and attempt <= self.retry.max_retries:
                    await self._backoff(method, path, attempt, type(exc).__name__, None)
                    continue
                raise self.error(
                    method,
                    path,
                    None,
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    retryable=True,
                    ambiguous=not not_sent and not safe_to_resend,
                    attempts=attempt,
                ) from exc
            elapsed_ms = (time.monotonic() - started) * 1000
            status = response.status_code
            if status in ok or (accept is not None and accept(response)):
                logger.debug(
                    "nemo %s %s %s -> %d (%d bytes, %.0f ms, attempt %d)",
                    self.service,
                    method,
                    path,
                    status,
                    len(response.content),
                    elapsed_ms,
                    attempt,
                )
                return response
            if 200 <= status < 300:
                raise self.error(
                    method,
                    path,
                    status,
                    f"unexpected success status {status}; this call expects {', '.join(map(str, sorted(ok)))}",
                    hint="the service's contract changed (check the platform version) or the URL points elsewhere",
                    attempts=attempt,
                )
            retryable = status in self.retry.retry_statuses
            resend = safe_to_resend or status in _NOT_PROCESSED_STATUSES
            if retryable and resend and attempt <= self.retry.max_retries:
                await self._backoff(method, path, attempt, str(status), _retry_after(response))
                continue
            logger.info(
                "nemo %s %s %s -> %d (%.0f ms, attempt %d): giving up",
                self.service,
                method,
                path,
                status,
                elapsed_ms,
                attempt,
            )
            raise self.error(
                method,
                path,
                status,
                server_detail(response),
                retryable=retryable,
                ambiguous=retryable and not resend,
                attempts=attempt,
            )

    async def _backoff(self, method: str, path: str, attempt: int, reason: str, retry_after_s: float | None) -> None:
        delay = self.backoff(attempt, retry_after_s)
        logger.warning(
            "nemo %s %s %s failed (%s); retry %d/%d in %.2f s",
            self.service,
            method,
            path,
            reason,
            attempt,
            self.retry.max_retries,
            delay,
        )
        await self._sleep(delay)

    async def get_json(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET a JSON document (200 only)."""
        response = await self.request("GET", path, params=params, ok=(200,))
        return self._json(response, "GET", path)

    async def get_optional(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any | None:
        """GET a JSON document, or None on 404: for "does it exist?" checks."""
        response = await self.request("GET", path, params=params, ok=(200, 404))
        if response.status_code == 404:
            return None
        return self._json(response, "GET", path)

    async def delete(self, path: str, *, json: Any = None) -> bool:
        """DELETE something; True when deleted, False when it was already gone (404)."""
        response = await self.request("DELETE", path, json=json, ok=(200, 202, 204, 404))
        return response.status_code != 404

    def _json(self, response: httpx.Response, method: str, path: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise self.error(
                method,
                path,
                response.status_code,
                f"expected JSON, got {response.headers.get('content-type', 'no content type')} ({len(response.content)} bytes)",
                hint="the URL may point at the wrong service (e.g. a web UI or a proxy page)",
            ) from None

    def parse(self, response: httpx.Response, method: str, path: str) -> Any:
        """The JSON body of a response, or a NemoAPIError saying it was not JSON."""
        return self._json(response, method, path)

    async def list_all(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int = 100,
        max_items: int | None = None,
        max_pages: int = 1000,
    ) -> list[dict[str, Any]]:
        """Every item of a paginated NeMo list (``{"data": [...], "pagination": {...}}``), page by page.

        Stops at an empty page (what the SDK relies on), at ``pagination.total_pages``, or at ``max_items``.
        """
        items: list[dict[str, Any]] = []
        page = 1
        while page <= max_pages:
            query = {**(params or {}), "page": page, "page_size": page_size}
            body = await self.get_json(path, params=query)
            data = body.get("data", []) if isinstance(body, Mapping) else body
            if not isinstance(data, list) or not data:
                break
            items.extend(item for item in data if isinstance(item, dict))
            if max_items is not None and len(items) >= max_items:
                items = items[:max_items]
                break
            pagination = body.get("pagination") if isinstance(body, Mapping) else None
            total_pages = pagination.get("total_pages") if isinstance(pagination, Mapping) else None
            if isinstance(total_pages, int) and page >= total_pages:
                break
            page += 1
        logger.debug("nemo %s listed %d items from %s over %d pages", self.service, len(items), path, page)
        return items


def filter_params(filters: Mapping[str, Any] | None, *, prefix: str = "filter") -> dict[str, str]:
    """``{"status": "running", "custom_fields": {"k": "v"}}`` → ``{"filter[status]": ..., "filter[custom_fields][k]": ...}``."""
    out: dict[str, str] = {}

    def walk(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                walk(f"{key}[{sub}]", inner)
        elif isinstance(value, list | tuple):
            out[key] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif value is not None:
            out[key] = str(value)

    for name, value in (filters or {}).items():
        walk(f"{prefix}[{name}]", value)
    return out
