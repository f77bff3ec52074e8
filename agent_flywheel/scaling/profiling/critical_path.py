"""The critical path of a trace: the chain of spans that determines when the root ends.

Walking back from the root's end, the child that finished last is the one the parent waited for; the time
before that child started belongs to whatever finished before it, or to the parent itself. Parallel children
that finished earlier are off the path. Each instant of the root's duration is attributed to exactly one span, so the
per-step shares of the critical path add up to 100 % and answer "what would make the workflow faster".
"""

from __future__ import annotations

from agent_flywheel.scaling.profiling.spans import PathSegment, Span, Trace

_EPS = 1e-9


def critical_path(trace: Trace) -> list[PathSegment]:
    """Split the root's duration into the slices that determined its end, in time order.

    Why: the step that dominates the critical path is the one worth optimising; a slow step that runs in
    parallel with a slower one is not. Children are clipped to their parent's interval (clock skew), and a
    child that overlaps the one already chosen is off the path.
    """
    segments: list[PathSegment] = []

    def visit(span: Span, lo: float, hi: float) -> None:
        cursor = hi
        kids = []
        for child in trace.children(span):
            c_lo, c_hi = max(child.start_s, lo), min(child.end_s, hi)
            if c_hi > c_lo + _EPS:
                kids.append((c_hi, c_lo, child))
        kids.sort(key=lambda k: k[0], reverse=True)
        for c_hi, c_lo, child in kids:
            if cursor <= lo + _EPS:
                break
            if c_hi > cursor + _EPS:
                continue  # overlaps the child already on the path: it finished later than it started
            if c_hi < cursor - _EPS:
                segments.append(PathSegment(span, c_hi, cursor))
            visit(child, c_lo, min(c_hi, cursor))
            cursor = c_lo
        if cursor > lo + _EPS:
            segments.append(PathSegment(span, lo, cursor))

    visit(trace.root, trace.root.start_s, trace.root.end_s)
    segments.reverse()
    return segments


def critical_chain(trace: Trace) -> list[Span]:
    """The distinct spans on the critical path, in the order they first appear."""
    seen: set[str] = set()
    chain: list[Span] = []
    for seg in critical_path(trace):
        if seg.span.span_id not in seen:
            seen.add(seg.span.span_id)
            chain.append(seg.span)
    return chain
