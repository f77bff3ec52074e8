"""Where a run's spans come from, and the wait for the traces of the requests it sent.

Two sources, either or both: an OTLP/HTTP receiver in this process (the agent's exporter, or a collector's
``otlphttp`` exporter, pointed at it), and an OTLP JSON lines file someone else writes (``flywheel otlp serve
--out FILE``, a collector's ``file`` exporter), read from where it ended when the run started. Both feed one
:class:`~.store.TraceStore`, so the spans of a trace can come from either and are held once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent_flywheel.config import SpansConfig
from agent_flywheel.scaling.agent_admin import otlp_pointed_at
from agent_flywheel.scaling.otlp.jsonl import FileTail
from agent_flywheel.scaling.otlp.receiver import OtlpReceiver
from agent_flywheel.scaling.otlp.store import TraceStore
from agent_flywheel.scaling.profiling.spans import Span, Trace

RECEIVER = "otlp-receiver"
TRACES_FILE = "traces-file"


@dataclass
class SpanSources:
    """The store a run reads spans from, fed by a receiver and/or a tailed file."""

    store: TraceStore
    receiver: OtlpReceiver | None = None
    tail: FileTail | None = None
    problems: list[str] = field(default_factory=list)
    pointed: bool = False  # the agent's exporter was pointed at the receiver through /admin/otlp

    @property
    def describe(self) -> str:
        """Where spans are read from, for logs and error messages."""
        parts = []
        if self.receiver is not None:
            pointed = " (the agent's exporter pointed there through /admin/otlp)" if self.pointed else ""
            parts.append(f"the OTLP receiver at {self.receiver.endpoint}{pointed}")
        if self.tail is not None:
            parts.append(f"the file {self.tail.path}")
        return " and ".join(parts) or "nowhere (no receiver, no traces file)"

    def poll(self) -> None:
        """Take in what was appended to the traces file since the last poll."""
        if self.tail is None:
            return
        for doc in self.tail.read_new():
            self.store.add(doc, origin=TRACES_FILE)
        if self.tail.problems:
            self.problems.extend(self.tail.problems)
            self.tail.problems.clear()

    def wait_for(self, expected: Mapping[str, str | None], timeout_s: float, poll_s: float = 0.2) -> set[str]:
        """Wait until the entry span of every expected trace (trace id -> the caller's span id) has arrived, or
        ``timeout_s`` passed; returns the trace ids still missing."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            missing = self.store.missing(expected)
            left = deadline - time.monotonic()
            if not missing or left <= 0:
                return missing
            if self.tail is None:
                self.store.wait_for_change(min(left, 1.0))
            else:
                time.sleep(min(left, poll_s))

    def traces(self, trace_ids: Iterable[str], problems: list[str]) -> list[Trace]:
        """The traces (spans grouped, the tree repaired) of the given trace ids that have spans."""
        out: list[Trace] = []
        for trace_id in dict.fromkeys(t.lower() for t in trace_ids):
            spans: list[Span] = self.store.spans_of(trace_id)
            if spans:
                out.append(Trace(trace_id, spans, problems))
        return out

    def documents(self, trace_ids: Iterable[str]) -> tuple[list[dict[str, Any]], str]:
        """The documents holding the given traces, and where they came from (``otlp-receiver``, ``traces-file``,
        both joined by ``+``, or ``none``)."""
        docs, origins = self.store.documents_of(trace_ids)
        return docs, "+".join(sorted(origins)) or "none"


@contextlib.contextmanager
def span_sources(receiver_address: tuple[str, int] | None, traces_file: str | Path | None) -> Iterator[SpanSources]:
    """Start the receiver on ``(host, port)`` (port 0: a free one) and/or tail ``traces_file`` for a block.

    The file is read from its current end, so spans written before the run are not mistaken for its own.
    """
    store = TraceStore()
    tail = FileTail(traces_file) if traces_file else None
    if receiver_address is None:
        yield SpanSources(store, None, tail)
        return
    host, port = receiver_address
    with OtlpReceiver(host, port or None, sink=store, origin=RECEIVER) as receiver:
        yield SpanSources(store, receiver, tail)


@contextlib.contextmanager
def collecting_spans(settings: SpansConfig, admin: httpx.Client | None = None) -> Iterator[SpanSources]:
    """The run's span sources from the scaling config's ``spans`` section, for a block.

    With ``admin`` (the agent's client, when its ``AgentTarget`` says it offers the demo agent's ``/admin/otlp``)
    the agent's exporter is pointed at the receiver for the block and pointed back afterwards.
    """
    address = (settings.otlp_receiver.host, settings.otlp_receiver.port) if settings.otlp_receiver else None
    with span_sources(address, settings.traces_file) as sources:
        if admin is None or sources.receiver is None:
            yield sources
            return
        with otlp_pointed_at(admin, sources.receiver.endpoint) as pointed:
            sources.pointed = pointed
            yield sources
