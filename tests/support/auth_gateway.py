"""An authenticating gateway in front of a real service, as a company's ingress puts one in front of MLflow.

Every request must carry one of the accepted ``Authorization`` headers (else ``401``); accepted ones are
forwarded to the upstream service and answered with its answer. Each request's header is recorded, so a test
can check what a client sent.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class AuthGateway:
    """A loopback HTTP gateway to ``upstream`` that lets through only the ``accepted`` Authorization values."""

    def __init__(self, upstream: str, accepted: set[str]) -> None:
        self.upstream = upstream.rstrip("/")
        self.accepted = accepted
        self.seen: list[str | None] = []  # the Authorization header of every request, in order
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="auth-gateway", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                authorization = self.headers.get("Authorization")
                with gateway._lock:
                    gateway.seen.append(authorization)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if authorization not in gateway.accepted:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Bearer realm="mlflow"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                answer = httpx.request(
                    self.command, gateway.upstream + self.path, headers=headers, content=body, timeout=120
                )
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler

    def __enter__(self) -> AuthGateway:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
