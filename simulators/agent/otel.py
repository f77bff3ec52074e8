"""OpenTelemetry spans of the demo agent, built as OTLP JSON by hand and exported to a file and OTLP/HTTP.

The scaling lifecycle profiles the agent from its traces: the tree comes from parent span ids and each
LLM call keeps its own start and end, even when calls overlap. Writing OTLP JSON ourselves keeps the agent
free of the OpenTelemetry SDK (and of its global state) while any collector can still read what we send.
Attribute names follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``).

Encoding (OTLP/JSON): trace and span ids are lowercase hex (32 and 16 characters), times and ``intValue``
are decimal strings (protobuf's int64 mapping), span kind and status code are integers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger("simulators.agent")

SERVICE_NAME = "demo-agent"
SCOPE_NAME = "simulators.agent"
SCOPE_VERSION = "0.1.0"

SPAN_KIND_INTERNAL = 1
SPAN_KIND_SERVER = 2
SPAN_KIND_CLIENT = 3

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

AttributeValue = str | bool | int | float | Sequence[str | bool | int | float]


def new_trace_id() -> str:
    """A random, non-zero W3C trace id (32 lowercase hex characters)."""
    while True:
        value = secrets.token_hex(16)
        if value.strip("0"):
            return value


def new_span_id() -> str:
    """A random, non-zero span id (16 lowercase hex characters)."""
    while True:
        value = secrets.token_hex(8)
        if value.strip("0"):
            return value


def otlp_value(value: AttributeValue) -> dict[str, Any]:
    """One attribute value in OTLP JSON (``bool`` is tested before ``int``, as Python makes it an int)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [otlp_value(v) for v in value]}}


def otlp_attributes(attributes: Mapping[str, AttributeValue | None]) -> list[dict[str, Any]]:
    """A key/value list in OTLP JSON; ``None`` values are left out (OTLP has no null)."""
    return [{"key": key, "value": otlp_value(value)} for key, value in attributes.items() if value is not None]


@dataclass
class Span:
    """One operation: open until :meth:`end` is called; times are Unix epoch nanoseconds."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int
    start_ns: int
    end_ns: int | None = None
    attributes: dict[str, AttributeValue | None] = field(default_factory=dict)
    status_code: int = STATUS_UNSET
    status_message: str = ""

    def set(self, key: str, value: AttributeValue | None) -> None:
        """Set an attribute (``None`` values are not exported)."""
        self.attributes[key] = value

    def end(self, end_ns: int | None = None, *, error: str | None = None) -> None:
        """Close the span (once: later calls keep the first end time); ``error`` marks it failed."""
        if error is not None:
            self.status_code = STATUS_ERROR
            self.status_message = error
        elif self.status_code == STATUS_UNSET:
            self.status_code = STATUS_OK
        if self.end_ns is None:
            self.end_ns = max(end_ns if end_ns is not None else time.time_ns(), self.start_ns)

    @property
    def duration_s(self) -> float:
        """Seconds between start and end (0 while the span is open)."""
        return 0.0 if self.end_ns is None else (self.end_ns - self.start_ns) / 1e9

    def to_otlp(self) -> dict[str, Any]:
        """This span in OTLP JSON; an open span is exported as ending now."""
        status: dict[str, Any] = {"code": self.status_code}
        if self.status_message:
            status["message"] = self.status_message
        span: dict[str, Any] = {
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": str(self.start_ns),
            "endTimeUnixNano": str(self.end_ns if self.end_ns is not None else max(time.time_ns(), self.start_ns)),
            "attributes": otlp_attributes(self.attributes),
            "status": status,
        }
        if self.parent_span_id:
            span["parentSpanId"] = self.parent_span_id
        return span


class Trace:
    """The spans of one request, all sharing one trace id."""

    def __init__(self, trace_id: str | None = None) -> None:
        self.trace_id = trace_id or new_trace_id()
        self.spans: list[Span] = []

    def start_span(
        self,
        name: str,
        kind: int = SPAN_KIND_INTERNAL,
        parent: Span | None = None,
        attributes: Mapping[str, AttributeValue | None] | None = None,
        start_ns: int | None = None,
    ) -> Span:
        """Open a span; with a ``parent`` it becomes that span's child."""
        span = Span(
            name=name,
            trace_id=self.trace_id,
            span_id=new_span_id(),
            parent_span_id=parent.span_id if parent else None,
            kind=kind,
            start_ns=start_ns if start_ns is not None else time.time_ns(),
            attributes=dict(attributes or {}),
        )
        self.spans.append(span)
        return span

    def traceparent(self, span: Span) -> str:
        """The W3C ``traceparent`` header that makes ``span`` the parent of the callee's spans."""
        return f"00-{self.trace_id}-{span.span_id}-01"


def build_otlp(
    spans: Sequence[Span],
    service_name: str = SERVICE_NAME,
    resource_attributes: Mapping[str, AttributeValue | None] | None = None,
) -> dict[str, Any]:
    """An OTLP ``ExportTraceServiceRequest`` in JSON: one resource, one scope, these spans."""
    resource = {"service.name": service_name, **(resource_attributes or {})}
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": otlp_attributes(resource)},
                "scopeSpans": [
                    {
                        "scope": {"name": SCOPE_NAME, "version": SCOPE_VERSION},
                        "spans": [span.to_otlp() for span in spans],
                    }
                ],
            }
        ]
    }


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector base URL (a URL already ending in ``/v1/traces`` is kept)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else f"{endpoint}/v1/traces"


class SpanExporter:
    """Appends each trace as one JSON line to a file and, when an endpoint is set, POSTs it (fire-and-forget).

    A collector that is down or slow never delays a chat: the POST runs in a background task with a short
    timeout, and its failures are only counted.
    """

    def __init__(self, path: Path, endpoint: str | None = None, timeout_s: float = 2.0) -> None:
        self.path = path
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._file_lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.traces_written = 0
        self.file_errors = 0
        self.otlp_sent = 0
        self.otlp_failed = 0

    def write(self, payload: Mapping[str, Any]) -> None:
        """Append one trace to the spans file (a failure to write is counted and logged, not raised)."""
        line = json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n"
        try:
            with self._file_lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:
                    handle.write(line)
            self.traces_written += 1
        except OSError as exc:
            self.file_errors += 1
            logger.warning("could not append spans to %s: %s", self.path, exc)

    def export(self, payload: Mapping[str, Any]) -> None:
        """Write the trace to the file and start sending it to the OTLP endpoint, if one is set."""
        self.write(payload)
        endpoint = self.endpoint
        if endpoint:
            task = asyncio.get_running_loop().create_task(self._post(traces_url(endpoint), payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, payload: Mapping[str, Any]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        try:
            response = await self._client.post(url, json=payload, headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            self.otlp_failed += 1
            logger.debug("OTLP export to %s failed: %s", url, exc)
            return
        if response.status_code >= 300:
            self.otlp_failed += 1
            logger.debug("OTLP export to %s answered %s", url, response.status_code)
        else:
            self.otlp_sent += 1

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the OTLP posts in flight (at most ``timeout_s``, default the export timeout)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s if timeout_s is not None else self.timeout_s)

    async def aclose(self) -> None:
        """Let posts in flight finish (briefly), then close the HTTP client."""
        await self.drain()
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /admin/stats``."""
        return {
            "file": str(self.path),
            "otlp_endpoint": self.endpoint,
            "traces_written": self.traces_written,
            "file_errors": self.file_errors,
            "otlp_sent": self.otlp_sent,
            "otlp_failed": self.otlp_failed,
            "otlp_in_flight": len(self._tasks),
        }
