"""The data model of a profile: a span, a trace (the spans of one request, arranged as a tree by parent id)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_SYNTHETIC_ROOT_ID = "__trace_root__"
SYNTHETIC_ROOT_NAME = "(between top-level spans)"
# How far a child may stick out of its parent and still count as inside it: clocks of two processes disagree.
CLOCK_TOLERANCE_S = 0.001


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
    provider: str | None = None
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
    """The spans of one request, arranged as a tree by parent id, repaired by time containment.

    A parent must contain its child in time (give or take :data:`CLOCK_TOLERANCE_S`). Where a stated parent does
    not (the NeMo Agent Toolkit 1.9 sometimes names a sibling that has already finished), or names a span the
    trace does not hold (a span that was never exported), the child goes under the innermost span that does
    contain it, or to the top when none does; :attr:`repaired` lists those spans. A span that names no parent
    stays at the top: nothing says it was anyone's child.

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
        self.repaired: list[str] = []
        self._children: dict[str, list[Span]] = defaultdict(list)
        tops: list[Span] = []
        for span in self.spans:
            parent_id = self._parent_of(span, by_id)
            if parent_id is not None:
                self._children[parent_id].append(span)
            else:
                tops.append(span)
        reached = self._reachable(tops)
        for span in self.spans:  # spans caught in a parent cycle: cut the cycle, keep the span
            if span.span_id not in reached:
                self.problems.append(f"trace {trace_id}: span {span.span_id} is in a parent cycle; made top-level")
                for kids in self._children.values():
                    if span in kids:
                        kids.remove(span)
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

    def _parent_of(self, span: Span, by_id: Mapping[str, Span]) -> str | None:
        """The stated parent when it contains ``span`` in time, else the innermost span that does (repaired)."""
        stated = span.parent_id
        if stated is None or stated == span.span_id:
            return None
        parent = by_id.get(stated)
        if parent is not None and contains(parent, span):
            return stated
        container = innermost_container(span, by_id.values())
        if container is None and parent is None:
            return None  # a remote parent (the caller's span): the top of this trace
        self.repaired.append(span.span_id)
        return container.span_id if container is not None else None

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


def contains(parent: Span, child: Span, tolerance_s: float = CLOCK_TOLERANCE_S) -> bool:
    """True when ``parent`` was running for the whole of ``child`` (give or take the clock tolerance).

    A child that starts after its parent has ended is never inside it, however small the gap: that is a
    finished sibling named as parent, not clock skew.
    """
    return (
        parent.start_s - tolerance_s <= child.start_s
        and child.end_s <= parent.end_s + tolerance_s
        and (child.start_s < parent.end_s or (child.duration_s == 0.0 and child.start_s <= parent.end_s))
    )


def innermost_container(span: Span, candidates: Iterable[Span]) -> Span | None:
    """The shortest span among ``candidates`` (``span`` itself excluded) that contains ``span`` in time.

    Ties (two spans with the same interval) go to the one that started first, then by id, so the choice is
    stable; a candidate no longer than ``span`` is only taken when it starts strictly earlier (else the two
    could each be the other's parent).
    """
    best: Span | None = None
    for other in candidates:
        if other.span_id == span.span_id or not contains(other, span):
            continue
        if other.duration_s <= span.duration_s and not other.start_s < span.start_s:
            continue
        if best is None or (other.duration_s, other.start_s, other.span_id) < (
            best.duration_s,
            best.start_s,
            best.span_id,
        ):
            best = other
    return best
