"""An agent-shaped stub server: each request is a workflow of two sequential LLM calls of 0.3–1 s.

Why a stub: the multi-process load benchmark measures the *client*; the agent must hold thousands of requests
open for about a second each while costing almost no CPU, so that the generators, not the server, are what
runs out. A bare ``asyncio.Protocol`` (:mod:`bench.bare_http`) parses just enough HTTP/1.1 and answers
``POST /generate`` (the NeMo Agent Toolkit's route, ``{"value": ...}``) after the two "LLM calls": one timer
for their sum, no task per request.

The calls' durations come from the request's W3C ``traceparent`` (:func:`planned_delays_s`), so the client,
which chose the trace id, knows what the server was asked to spend and the rest of its measured latency is
the client's overhead (plus loopback). The server times itself too: ``GET /stats`` gives how late its timers
fired (its own lateness: a busy server shows here, not as client overhead), ``POST /stats/reset`` clears it.
Run it as ``python -m bench.agent_stub --port N``.
"""

from __future__ import annotations

import asyncio
import json

from bench.bare_http import HttpRequests, http_response, serve_command

CALL_MIN_S, CALL_MAX_S = 0.3, 1.0
_OK = http_response("200 OK", b'{"value":"ok"}')


def planned_delays_s(trace_id: str) -> tuple[float, float]:
    """The two LLM calls' durations of the request whose trace id is ``trace_id`` (32 hex digits): uniform in
    0.3–1 s, from the id's first two 32-bit words (random: the generator draws trace ids at random)."""
    words = int(trace_id[:8], 16), int(trace_id[8:16], 16)
    return tuple(CALL_MIN_S + (CALL_MAX_S - CALL_MIN_S) * w / 2**32 for w in words)  # type: ignore[return-value]


class Stats:
    """How late the server's timers fired, in milliseconds (a histogram of whole milliseconds)."""

    def __init__(self) -> None:
        self.late_ms: dict[int, int] = {}
        self.requests = 0

    def add(self, late_s: float) -> None:
        self.requests += 1
        bucket = int(late_s * 1000)
        self.late_ms[bucket] = self.late_ms.get(bucket, 0) + 1

    def percentile_ms(self, q: float) -> int | None:
        seen, rank = 0, q / 100 * self.requests
        for bucket in sorted(self.late_ms):
            seen += self.late_ms[bucket]
            if seen >= rank:
                return bucket
        return None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "timer_late_p50_ms": self.percentile_ms(50),
                "timer_late_p99_ms": self.percentile_ms(99),
                "timer_late_max_ms": max(self.late_ms, default=None),
            }
        ).encode()


STATS = Stats()


class _Http(HttpRequests):
    """One connection: each complete request is answered after its two LLM calls (one timer)."""

    def answer(self, request_line: bytes, headers: dict[bytes, bytes]) -> None:
        assert self.transport is not None
        traceparent = headers.get(b"traceparent")
        trace_id = traceparent.split(b"-")[1].decode() if traceparent is not None else None
        method, _, rest = request_line.partition(b" ")
        path = rest.split(b" ")[0]
        if path == b"/stats":
            global STATS
            if method == b"POST":
                STATS = Stats()
            self.transport.write(http_response("200 OK", STATS.to_json()))
            return
        if path != b"/generate" or trace_id is None:
            self.transport.write(http_response("404 Not Found", b'{"detail":"POST /generate with a traceparent"}'))
            return
        loop = asyncio.get_running_loop()
        hold = sum(planned_delays_s(trace_id))
        due = loop.time() + hold
        loop.call_at(due, self._reply, due)

    def _reply(self, due: float) -> None:
        STATS.add(asyncio.get_running_loop().time() - due)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_OK)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--host`` (default 127.0.0.1) and ``--port``."""
    serve_command(_Http, 8192, __doc__, argv)


if __name__ == "__main__":
    main()
