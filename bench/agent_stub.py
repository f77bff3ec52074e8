"""An agent-shaped stub server: each request is a workflow of two sequential LLM calls of 0.3–1 s.

Why a stub: the multi-process load benchmark measures the *client*; the agent must hold thousands of requests
open for about a second each while costing almost no CPU, so that the generators, not the server, are what
runs out. A bare ``asyncio.Protocol`` (as :mod:`bench.endpoint`) parses just enough HTTP/1.1 and answers
``POST /generate`` (the NeMo Agent Toolkit's route, ``{"value": ...}``) after the two "LLM calls": one timer
for their sum, no task per request.

The calls' durations come from the request's W3C ``traceparent`` (:func:`planned_delays_s`), so the client,
which chose the trace id, knows what the server was asked to spend and the rest of its measured latency is
the client's overhead (plus loopback). The server times itself too: ``GET /stats`` gives how late its timers
fired (its own lateness: a busy server shows here, not as client overhead), ``POST /stats/reset`` clears it.
Run it as ``python -m bench.agent_stub --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

CALL_MIN_S, CALL_MAX_S = 0.3, 1.0
_OK_BODY = b'{"value":"ok"}'
_OK = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\ncontent-length: "
    + str(len(_OK_BODY)).encode()
    + b"\r\n\r\n"
    + _OK_BODY
)


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


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Http(asyncio.Protocol):
    """One connection: each complete request is answered after its two LLM calls (one timer)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            length, trace_id = 0, None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value.strip() or 0)
                elif key == b"traceparent":
                    trace_id = value.strip().split(b"-")[1].decode()
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self._answer(lines[0], trace_id)

    def _answer(self, request_line: bytes, trace_id: str | None) -> None:
        assert self.transport is not None
        method, _, rest = request_line.partition(b" ")
        path = rest.split(b" ")[0]
        if path == b"/stats":
            global STATS
            if method == b"POST":
                STATS = Stats()
            self.transport.write(_response("200 OK", STATS.to_json()))
            return
        if path != b"/generate" or trace_id is None:
            self.transport.write(_response("404 Not Found", b'{"detail":"POST /generate with a traceparent"}'))
            return
        loop = asyncio.get_running_loop()
        hold = sum(planned_delays_s(trace_id))
        due = loop.time() + hold
        loop.call_at(due, self._reply, due)

    def _reply(self, due: float) -> None:
        STATS.add(asyncio.get_running_loop().time() - due)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_OK)


async def serve(host: str, port: int) -> None:
    """Serve until cancelled."""
    server = await asyncio.get_running_loop().create_server(_Http, host, port, backlog=8192)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--host`` (default 127.0.0.1) and ``--port``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
