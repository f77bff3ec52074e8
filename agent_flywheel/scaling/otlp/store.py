"""The OTLP documents a run has received, their spans by trace, and waiting for the traces a caller expects.

Why wait: exporters send after the response (the OpenTelemetry SDK's batch processor every few seconds, the demo
agent fire-and-forget), so the spans of a request arrive some time after its answer, possibly in several
documents. A trace counts as arrived once its **entry span** is there: the span whose parent is the caller's span
(the ``traceparent`` we sent) or that has no parent. It ends last, so the SDK exports it last.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from agent_flywheel.scaling.profiling.otlp import spans_from_otlp
from agent_flywheel.scaling.profiling.spans import Span

DEFAULT_MAX_DOCUMENTS = 100_000


class DocumentSink(Protocol):
    """Where a receiver puts what it decodes: kept in memory (:class:`TraceStore`) or appended to a file."""

    received: int
    dropped: int
    rejected: int

    def add(self, document: Mapping[str, Any], spans: list[Span] | None = None, origin: str = "") -> int:
        """Take one ``{"resourceSpans": [...]}`` document (its spans, when already parsed); returns its span count."""
        ...

    def reject(self) -> None:
        """Count one request refused as a whole."""
        ...


@dataclass
class _Entry:
    document: dict[str, Any]
    spans: list[Span]
    origin: str


class TraceStore:
    """The OTLP documents received so far and their spans indexed by trace id, thread-safe.

    Documents are kept in the OTLP/JSON shape (``{"resourceSpans": [...]}``), at most ``max_documents``; older
    ones are dropped and counted. A span already held (same trace and span id: the same document read twice, or
    from two sources) is not indexed again. ``rejected`` counts requests refused as a whole. ``origin`` says
    where a document came from (``otlp-receiver``, ``traces-file``), so a run can say where its spans came from.
    """

    def __init__(self, max_documents: int = DEFAULT_MAX_DOCUMENTS) -> None:
        if max_documents < 1:
            raise ValueError("max_documents must be >= 1")
        self._entries: deque[_Entry] = deque()
        self._by_trace: dict[str, dict[str, tuple[Span, _Entry]]] = {}
        self._max = max_documents
        self._cond = threading.Condition()
        self.received = 0
        self.dropped = 0
        self.rejected = 0

    def add(self, document: Mapping[str, Any], spans: list[Span] | None = None, origin: str = "") -> int:
        """Keep one document and index its spans (parsed here unless given); returns how many spans it holds."""
        doc = dict(document)
        parsed = spans if spans is not None else spans_from_otlp(doc, [])
        entry = _Entry(doc, parsed, origin)
        with self._cond:
            self.received += 1
            fresh = [s for s in parsed if s.span_id not in self._by_trace.get(s.trace_id, {})]
            if parsed and not fresh:
                self._cond.notify_all()
                return len(parsed)  # every span already held: the same document again
            self._entries.append(entry)
            for span in fresh:
                self._by_trace.setdefault(span.trace_id, {})[span.span_id] = (span, entry)
            while len(self._entries) > self._max:
                self._forget(self._entries.popleft())
            self._cond.notify_all()
        return len(parsed)

    def _forget(self, old: _Entry) -> None:
        self.dropped += 1
        for span in old.spans:
            held = self._by_trace.get(span.trace_id)
            if held is not None and span.span_id in held and held[span.span_id][1] is old:
                del held[span.span_id]
                if not held:
                    del self._by_trace[span.trace_id]

    def reject(self) -> None:
        """Count one request refused as a whole (undecodable, or of an unsupported type)."""
        with self._cond:
            self.rejected += 1

    def documents(self) -> list[dict[str, Any]]:
        """A snapshot of the documents kept, oldest first."""
        with self._cond:
            return [e.document for e in self._entries]

    def trace_ids(self) -> set[str]:
        """Every trace id with spans held (lower-case hex, as the profiler normalises them)."""
        with self._cond:
            return set(self._by_trace)

    def spans(self, problems: list[str] | None = None) -> list[Span]:
        """Every span held; ``problems`` gets the spans the documents held that could not be used."""
        docs = self.documents()
        if problems is not None:
            for i, doc in enumerate(docs):
                spans_from_otlp(doc, problems, f"document {i}: ")
        with self._cond:
            return [span for held in self._by_trace.values() for span, _ in held.values()]

    def spans_of(self, trace_id: str) -> list[Span]:
        """The spans held for one trace."""
        with self._cond:
            return [span for span, _ in self._by_trace.get(trace_id.lower(), {}).values()]

    def documents_of(self, trace_ids: Iterable[str]) -> tuple[list[dict[str, Any]], set[str]]:
        """The documents holding spans of the given traces (oldest first), and where they came from."""
        wanted = {t.lower() for t in trace_ids}
        with self._cond:
            entries = {id(e): e for t in wanted for _, e in self._by_trace.get(t, {}).values()}
            ordered = [e for e in self._entries if id(e) in entries]
            return [e.document for e in ordered], {e.origin for e in ordered if e.origin}

    def _arrived(self, trace_id: str, caller_span_id: str | None) -> bool:
        held = self._by_trace.get(trace_id)
        if not held:
            return False
        return any(span.parent_id is None or span.parent_id == caller_span_id for span, _ in held.values())

    def missing(self, expected: Mapping[str, str | None]) -> set[str]:
        """The expected traces (trace id -> the caller's span id, if any) whose entry span has not arrived."""
        with self._cond:
            return {t for t, caller in expected.items() if not self._arrived(t.lower(), caller)}

    def wait_for(self, trace_ids: Iterable[str], timeout_s: float) -> set[str]:
        """Block until a span of every given trace has arrived or ``timeout_s`` passed; returns the ids still missing."""
        wanted = {t.lower() for t in trace_ids}
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                missing = wanted - set(self._by_trace)
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                self._cond.wait(timeout=min(left, 0.25))

    def wait_for_change(self, timeout_s: float) -> None:
        """Sleep until a document arrives or ``timeout_s`` passes."""
        with self._cond:
            self._cond.wait(timeout=max(0.0, timeout_s))

    def clear(self) -> None:
        """Forget everything received (counters are kept)."""
        with self._cond:
            self._entries.clear()
            self._by_trace.clear()


def scopes_of(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The scope-spans entries of an OTLP document (also under the pre-1.0 name ``instrumentationLibrarySpans``)."""
    out: list[Mapping[str, Any]] = []
    for rs in doc.get("resourceSpans") or []:
        if isinstance(rs, Mapping):
            for scope in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
                if isinstance(scope, Mapping):
                    out.append(scope)
    return out
