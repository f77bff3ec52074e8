"""A zero-latency HTTP/1.1 endpoint: answers every request at once with a tiny JSON body.

The load-generator benchmark measures the *client*, so the server is a bare ``asyncio.Protocol``
(:mod:`bench.bare_http`) that answers tens of thousands of requests a second on one core, several times what a
single Python client process can send. Run it as ``python -m bench.endpoint --port N``.
"""

from __future__ import annotations

from bench.bare_http import HttpRequests, http_response, serve_command

_RESPONSE = http_response("200 OK", b'{"ok":true}')


class _Http(HttpRequests):
    """One connection: answer each complete request immediately."""

    def answer(self, request_line: bytes, headers: dict[bytes, bytes]) -> None:
        assert self.transport is not None
        self.transport.write(_RESPONSE)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``--host`` (default 127.0.0.1) and ``--port``."""
    serve_command(_Http, 4096, __doc__, argv)


if __name__ == "__main__":
    main()
