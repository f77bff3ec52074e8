"""The data model of a profile: a span, a trace (the spans of one request, arranged as a tree by parent id)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SYNTHETIC_ROOT_ID = "__trace_root__"
SYNTHETIC_ROOT_NAME = "(between top-level spans)"


@dataclass(frozen=True)
class Span:
    """One timed operation; times are seconds (epoch or any common origin within a trace)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_s: float
    end_s: float
    kind: str = "span"
    ok: bool = True
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_s: float | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Wall time of the span (never negative, even with a skewed clock)."""
        return max(0.0, self.end_s - self.start_s)

    @property
    def is_llm(self) -> bool:
        """True for model calls (GenAI chat / completion, or a toolkit LLM event)."""
        return self.kind == "llm"


@dataclass(frozen=True)
class PathSegment:
    """A slice ``[start_s, end_s]`` of the root's duration during which ``span`` was what the trace waited on."""

    span: Span
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        """Length of the slice."""
        return self.end_s - self.start_s


class Trace:
    """The spans of one request, arranged as a tree by parent id.

    When the spans have more than one top-level span (no single workflow span), a synthetic root spans them
    all, so that a trace always has one root whose duration is the workflow latency (earliest start to latest
    end, as the toolkit defines workflow runtime).
    """

    def __init__(self, trace_id: str, spans: Sequence[Span], problems: list[str] | None = None) -> None:
        if not spans:
            raise ValueError(f"trace {trace_id} has no spans")
        self.trace_id = trace_id
        self.problems: list[str] = problems if problems is not None else []
        by_id: dict[str, Span] = {}
        for span in spans:
            if span.span_id in by_id:
                self.problems.append(f"trace {trace_id}: duplicate span id {span.span_id}; kept the first")
                continue
            by_id[span.span_id] = span
        self.spans: list[Span] = list(by_id.values())
        self._children: dict[str, list[Span]] = defaultdict(list)
        tops: list[Span] = []
        for span in self.spans:
            if span.parent_id is not None and span.parent_id in by_id and span.parent_id != span.span_id:
                self._children[span.parent_id].append(span)
            else:
                tops.append(span)
        reached = self._reachable(tops)
        for span in self.spans:  # spans caught in a parent cycle: cut the cycle, keep the span
            if span.span_id not in reached:
                self.problems.append(f"trace {trace_id}: span {span.span_id} is in a parent cycle; made top-level")
                self._children[span.parent_id or ""].remove(span)
                tops.append(span)
                reached |= self._reachable([span])
        if len(tops) == 1:
            self.root = tops[0]
        else:
            self.root = Span(
                trace_id=trace_id,
                span_id=_SYNTHETIC_ROOT_ID,
                parent_id=None,
                name=SYNTHETIC_ROOT_NAME,
                start_s=min(s.start_s for s in tops),
                end_s=max(s.end_s for s in tops),
                kind="workflow",
            )
            self._children[_SYNTHETIC_ROOT_ID] = list(tops)
        for kids in self._children.values():
            kids.sort(key=lambda s: (s.start_s, s.end_s))

    def _reachable(self, tops: Iterable[Span]) -> set[str]:
        seen: set[str] = set()
        stack = [s.span_id for s in tops]
        while stack:
            sid = stack.pop()
            if sid in seen:
                continue
            seen.add(sid)
            stack.extend(c.span_id for c in self._children.get(sid, []))
        return seen

    def children(self, span: Span) -> list[Span]:
        """Direct children of ``span`` ordered by start time."""
        return list(self._children.get(span.span_id, []))

    @property
    def duration_s(self) -> float:
        """Workflow latency of this request: the root's duration."""
        return self.root.duration_s

    @property
    def llm_calls(self) -> list[Span]:
        """The model calls of this request, by start time."""
        return sorted((s for s in self.spans if s.is_llm), key=lambda s: s.start_s)

    def walk(self) -> Iterator[tuple[Span, int]]:
        """Depth-first (span, depth) from the root, children by start time: the Gantt chart's row order."""
        stack: list[tuple[Span, int]] = [(self.root, 0)]
        while stack:
            span, depth = stack.pop()
            yield span, depth
            stack.extend((c, depth + 1) for c in reversed(self._children.get(span.span_id, [])))


def token_count(value: Any) -> int | None:
    """A token count as an int; None when absent or not a number (readers never fail on one odd attribute)."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
