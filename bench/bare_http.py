"""Just enough HTTP/1.1 for a benchmark's server: framing requests on a keep-alive connection, and nothing else.

Why not FastAPI/uvicorn: a load benchmark measures the *client*; its server must be so cheap that it is never
the bottleneck. A bare ``asyncio.Protocol`` that reads the request line, the headers and a ``Content-Length``
body answers tens of thousands of requests a second on one core. :mod:`bench.endpoint` and
:mod:`bench.agent_stub` are two such servers; this module is what they share.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable


def http_response(status: str, body: bytes) -> bytes:
    """A whole keep-alive response with a JSON ``body`` (``status`` such as ``"200 OK"``)."""
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class HttpRequests(asyncio.Protocol):
    """One connection: every complete request (headers plus ``Content-Length`` body) goes to :meth:`answer`."""

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
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            total = end + 4 + int(headers.get(b"content-length") or 0)
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.answer(lines[0], headers)

    def answer(self, request_line: bytes, headers: dict[bytes, bytes]) -> None:
        """Answer one request (``headers`` by lower-case name; the body is not kept)."""
        raise NotImplementedError


async def serve(protocol: Callable[[], asyncio.Protocol], host: str, port: int, backlog: int) -> None:
    """Serve until cancelled."""
    server = await asyncio.get_running_loop().create_server(protocol, host, port, backlog=backlog)
    async with server:
        await server.serve_forever()


def serve_command(
    protocol: Callable[[], asyncio.Protocol], backlog: int, description: str | None, argv: list[str] | None
) -> None:
    """A server's command line: ``--host`` (default 127.0.0.1) and ``--port``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(protocol, args.host, args.port, backlog))
