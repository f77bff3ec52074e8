"""A tiny OTLP/HTTP trace receiver (JSON encoding), so a profiling run can collect an agent's spans directly.

Why: the profile step needs the spans of the requests it sends, no more and no less. Pointing the agent's
OTLP exporter at a receiver that lives only as long as the profile is simpler and more exact than finding
those spans in a collector's files (which may be on another machine, rotated or shared with other traffic).

What it speaks: ``POST /v1/traces`` with an ``ExportTraceServiceRequest`` in the OTLP/JSON encoding
(``Content-Type: application/json``, optionally ``Content-Encoding: gzip``), answering ``{}`` (an empty
``ExportTraceServiceResponse``: everything accepted). Protobuf bodies are refused with 415, naming the
encoding to switch to; a body that is not an OTLP JSON document is refused with 400. ``GET /health``
answers while it runs.

Documents are kept in memory (at most ``max_documents``; older ones are dropped and counted), and
:meth:`TraceStore.wait_for` lets the caller wait until the traces it expects have arrived, because
exporters send after the response (the demo agent's export is fire-and-forget).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent_flywheel.profiling import Span, spans_from_otlp
from simulators.threaded import ThreadedServer

TRACES_PATH = "/v1/traces"
DEFAULT_MAX_DOCUMENTS = 100_000


class TraceStore:
    """The OTLP documents received so far, thread-safe (the server thread writes, the caller reads)."""

    def __init__(self, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> None:
        if max_documents < 1:
            raise ValueError("max_documents must be >= 1")
        self._documents: deque[dict[str, Any]] = deque()
        self._trace_ids: dict[str, int] = {}
        self._max = max_documents
        self._cond = threading.Condition()
        self.received = 0
        self.dropped = 0
        self.rejected = 0

    def add(self, document: Mapping[str, Any]) -> int:
        """Keep one ``{"resourceSpans": [...]}`` document; returns how many spans it holds."""
        doc = dict(document)
        ids = _trace_ids_of(doc)
        with self._cond:
            self._documents.append(doc)
            for tid in ids:
                self._trace_ids[tid] = self._trace_ids.get(tid, 0) + 1
            while len(self._documents) > self._max:
                old = self._documents.popleft()
                self.dropped += 1
                for tid in _trace_ids_of(old):
                    left = self._trace_ids.get(tid, 0) - 1
                    if left > 0:
                        self._trace_ids[tid] = left
                    else:
                        self._trace_ids.pop(tid, None)
            self.received += 1
            self._cond.notify_all()
        return sum(len(scope.get("spans") or []) for scope in _scopes(doc))

    def documents(self) -> list[dict[str, Any]]:
        """A snapshot of the documents kept, oldest first."""
        with self._cond:
            return list(self._documents)

    def trace_ids(self) -> set[str]:
        """Every trace id seen in the documents kept (lower-case hex, as the profiler normalises them)."""
        with self._cond:
            return set(self._trace_ids)

    def spans(self, problems: list[str] | None = None) -> list[Span]:
        """Every span received, parsed by the profiler's OTLP reader (bad spans are named in ``problems``)."""
        sink = problems if problems is not None else []
        out: list[Span] = []
        for i, doc in enumerate(self.documents()):
            out.extend(spans_from_otlp(doc, sink, f"document {i}: "))
        return out

    def wait_for(self, trace_ids: Iterable[str], timeout_s: float) -> set[str]:
        """Block until every given trace id has arrived or ``timeout_s`` passed; returns the ids still missing."""
        wanted = {t.lower() for t in trace_ids}
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                missing = wanted - set(self._trace_ids)
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._cond.wait(timeout=min(left, 0.25))

    def clear(self) -> None:
        """Forget everything received (counters are kept)."""
        with self._cond:
            self._documents.clear()
            self._trace_ids.clear()


def _scopes(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for rs in doc.get("resourceSpans") or []:
        if isinstance(rs, Mapping):
            for scope in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                if isinstance(scope, Mapping):
                    out.append(scope)
    return out


def _trace_ids_of(doc: Mapping[str, Any]) -> set[str]:
    ids: set[str] = set()
    for scope in _scopes(doc):
        for span in scope.get("spans") or []:
            if isinstance(span, Mapping) and span.get("traceId"):
                ids.add(_normal_trace_id(str(span["traceId"])))
    return ids


def _normal_trace_id(value: str) -> str:
    """Hex ids in lower case; base64 ids (protobuf's generic JSON mapping) converted to hex like the profiler."""
    text = value.strip()
    if len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    return raw.hex() if len(raw) == 16 else text


def _error(status: int, message: str) -> JSONResponse:
    # The OTLP/HTTP spec answers failures with a google.rpc.Status; its JSON form has code and message.
    return JSONResponse(status_code=status, content={"code": status, "message": message})


def create_receiver_app(store: TraceStore) -> FastAPI:
    """The receiver as an ASGI app writing into ``store`` (served by :class:`OtlpReceiver`, or by tests directly)."""
    app = FastAPI(title="OTLP/HTTP JSON trace receiver", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "received": store.received, "dropped": store.dropped, "rejected": store.rejected}

    @app.post(TRACES_PATH, response_model=None)
    async def traces(request: Request) -> dict[str, Any] | JSONResponse:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type in ("application/x-protobuf", "application/protobuf"):
            store.rejected += 1
            return _error(415, "this receiver speaks OTLP/JSON only: set the exporter's protocol to http/json")
        body = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError):
                store.rejected += 1
                return _error(400, "the body is not valid gzip")
        try:
            document = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            store.rejected += 1
            return _error(400, "the body is not JSON")
        if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
            store.rejected += 1
            return _error(400, "expected an ExportTraceServiceRequest: an object with a resourceSpans list")
        store.add(document)
        return {}

    return app


class OtlpReceiver:
    """An OTLP/HTTP JSON receiver on a loopback port, in a background thread, for the life of a ``with`` block.

    ``endpoint`` is the base URL to give an exporter (it appends ``/v1/traces``).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int | None = None, max_documents: int = DEFAULT_MAX_DOCUMENTS
    ) -> None:
        self.store = TraceStore(max_documents)
        self._server = ThreadedServer(create_receiver_app(self.store), host=host, port=port)

    @property
    def endpoint(self) -> str:
        """The base URL exporters are pointed at."""
        return self._server.url

    @property
    def traces_url(self) -> str:
        """The full URL spans are POSTed to."""
        return self._server.url + TRACES_PATH

    def start(self) -> OtlpReceiver:
        """Start serving (returns once the port accepts connections)."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving; what was received stays in :attr:`store`."""
        self._server.stop()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
