"""The OTLP documents a receiver has kept, and waiting for the traces a caller expects.

Why wait: exporters send after the response (the demo agent's export is fire-and-forget, the OpenTelemetry
SDK's batch processor every few seconds), so the spans of a request arrive some time after its answer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from agent_flywheel.scaling.profiling.otlp import parse_id, spans_from_otlp
from agent_flywheel.scaling.profiling.spans import Span

DEFAULT_MAX_DOCUMENTS = 100_000


class TraceStore:
    """The OTLP documents received so far, thread-safe (the server's threads write, the caller reads).

    Documents are kept in the OTLP/JSON shape (``{"resourceSpans": [...]}``), at most ``max_documents``;
    older ones are dropped and counted. ``rejected`` counts requests refused as a whole.
    """

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
        return sum(len(scope.get("spans") or []) for scope in scopes_of(doc))

    def reject(self) -> None:
        """Count one request refused as a whole (undecodable, or of an unsupported type)."""
        with self._cond:
            self.rejected += 1

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


def scopes_of(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The scope-spans entries of an OTLP document (also under the pre-1.0 name ``instrumentationLibrarySpans``)."""
    out: list[Mapping[str, Any]] = []
    for rs in doc.get("resourceSpans") or []:
        if isinstance(rs, Mapping):
            for scope in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                if isinstance(scope, Mapping):
                    out.append(scope)
    return out


def _trace_ids_of(doc: Mapping[str, Any]) -> set[str]:
    ids: set[str] = set()
    for scope in scopes_of(doc):
        for span in scope.get("spans") or []:
            if isinstance(span, Mapping):
                tid = parse_id(span.get("traceId"))
                if tid is not None:
                    ids.add(tid)
    return ids
