"""W3C Trace Context for the requests we send: a fresh trace per request, so its spans can be found by trace id.

Why: the agent owes us nothing. An agent instrumented with OpenTelemetry (or the NeMo Agent Toolkit, which takes
the trace id of an incoming ``traceparent``) continues the trace we start, so the spans of each request carry
the trace id we chose, whatever the agent answers. The sampled flag is set, so a parent-based sampler records
them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_random = random.SystemRandom()


@dataclass(frozen=True)
class TraceContext:
    """The trace a request belongs to and the caller's span (ours, never exported), as lower-case hex.

    ``span_id`` is None for a trace id the agent named in its answer (an agent that starts its own traces).
    """

    trace_id: str
    span_id: str | None = None

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` header: version 00, this trace, our span as parent, sampled."""
        return f"00-{self.trace_id}-{self.span_id or '0' * 16}-01"


def new_trace_context() -> TraceContext:
    """A fresh, random trace id and caller span id (never all zeros, which W3C Trace Context forbids)."""
    trace_id = _random.getrandbits(128) or 1
    span_id = _random.getrandbits(64) or 1
    return TraceContext(f"{trace_id:032x}", f"{span_id:016x}")
