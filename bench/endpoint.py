"""A zero-latency HTTP/1.1 endpoint: answers every request at once with a tiny JSON body.

Why not FastAPI/uvicorn: the load-generator benchmark measures the *client*; the server must be so cheap
that it is never the bottleneck. A bare ``asyncio.Protocol`` that parses just enough HTTP (request line,
``Content-Length``, keep-alive) answers tens of thousands of requests a second on one core, several
times what a single Python client process can send. Run it as ``python -m bench.endpoint --port N``.
"""

from __future__ import annotations

import argparse
import asyncio

_BODY = b'{"ok":true}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_BODY)).encode()
    + b"\r\nconnection: keep-alive\r\n\r\n"
    + _BODY
)


class _Http(asyncio.Protocol):
    """One connection: answer each complete request (headers plus ``Content-Length`` body) immediately."""

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
            length = 0
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            assert self.transport is not None
            self.transport.write(_RESPONSE)


async def serve(host: str, port: int) -> None:
    """Serve until cancelled."""
    server = await asyncio.get_running_loop().create_server(_Http, host, port, backlog=4096)
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
