"""The OTLP/HTTP trace receiver: ``POST /v1/traces`` on a standard-library HTTP server in a background thread.

Why a receiver of our own: a profile or a sweep needs the spans of the requests it sends. Any OpenTelemetry
exporter can send to it (``OTEL_EXPORTER_OTLP_ENDPOINT`` = :attr:`OtlpReceiver.endpoint`), and so can a
collector's ``otlphttp`` exporter. What it decodes goes to a sink: a :class:`~.store.TraceStore` in memory (a
run in this process) or a :class:`~.jsonl.JsonlSink` file (``flywheel otlp serve``, a long-lived service).

Routes: ``POST /v1/traces`` (see :mod:`.decoding` for the encodings and answers), ``GET /health`` (counts).
Other methods on ``/v1/traces`` answer 405, other paths 404.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from agent_flywheel.scaling.otlp.decoding import (
    JSON_TYPE,
    Encoding,
    ExportError,
    content_type_of,
    decode_request,
    encoding_of,
    export_response,
    rejection_of,
    status_response,
)
from agent_flywheel.scaling.otlp.store import DocumentSink, TraceStore
from agent_flywheel.scaling.profiling.otlp import spans_from_otlp

TRACES_PATH = "/v1/traces"
HEALTH_PATH = "/health"
MAX_BODY_BYTES = 64 * 1024 * 1024
_log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], sink: DocumentSink, origin: str) -> None:
        super().__init__(address, _Handler)
        self.sink = sink
        self.origin = origin
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End the connections exporters keep open between exports: after a stop, a kept-alive connection
        must not go on feeding this receiver's sink (a later receiver on the same port should get the spans)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # exporters keep their connection open between exports

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        encoding = encoding_of(self.headers.get("Content-Type"))
        if path != TRACES_PATH:
            self._refuse(404, f"no route {path}; spans go to POST {TRACES_PATH}", encoding, unread_body=True)
            return
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length is not None else -1
        except ValueError:
            size = -1
        if size < 0:
            self._refuse(411, "a Content-Length (a whole number of bytes) is required", encoding, unread_body=True)
            return
        if size > MAX_BODY_BYTES:
            self._refuse(
                413, f"a body of {size} bytes is over the {MAX_BODY_BYTES} byte limit", encoding, unread_body=True
            )
            return
        body = self.rfile.read(size)
        sink = self.server.sink
        try:
            document = decode_request(body, self.headers.get("Content-Type"), self.headers.get("Content-Encoding"))
        except ExportError as exc:
            sink.reject()
            self._refuse(exc.status, str(exc), encoding)
            return
        assert encoding is not None  # decode_request refuses the content types it does not speak
        problems: list[str] = []
        spans = spans_from_otlp(document, problems)
        sink.add(document, spans, self.server.origin)
        rejection = rejection_of(document, len(spans), problems)
        self._answer(200, export_response(encoding, rejection), content_type_of(encoding))

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == HEALTH_PATH:
            sink = self.server.sink
            counts = {"status": "ok", "received": sink.received, "dropped": sink.dropped, "rejected": sink.rejected}
            self._answer(200, json.dumps(counts).encode(), JSON_TYPE)
        else:
            self._wrong_route(path)

    def do_PUT(self) -> None:
        self._wrong_route(self.path.split("?")[0], unread_body=True)

    def do_DELETE(self) -> None:
        self._wrong_route(self.path.split("?")[0], unread_body=True)

    def do_PATCH(self) -> None:
        self._wrong_route(self.path.split("?")[0], unread_body=True)

    def _wrong_route(self, path: str, unread_body: bool = False) -> None:
        if path == TRACES_PATH:
            self._refuse(405, f"{TRACES_PATH} takes POST", unread_body=unread_body)
        else:
            self._refuse(404, f"no route {path}", unread_body=unread_body)

    def _refuse(self, status: int, message: str, encoding: Encoding | None = None, unread_body: bool = False) -> None:
        """A ``google.rpc.Status`` in the request's encoding (JSON when it has none this receiver speaks).

        With ``unread_body`` the connection is closed after the answer: the body left on it is not read.
        """
        chosen: Encoding = encoding or "json"
        headers = {"Allow": "POST"} if status == 405 else {}
        if unread_body:
            headers["Connection"] = "close"
            self.close_connection = True
        self._answer(status, status_response(chosen, status, message), content_type_of(chosen), headers)

    def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


class OtlpReceiver:
    """An OTLP/HTTP receiver in a background thread, for the life of a ``with`` block (or between start and stop).

    ``port`` None takes a free port. :attr:`endpoint` is the base URL to give an exporter (the OpenTelemetry
    SDKs append ``/v1/traces`` to ``OTEL_EXPORTER_OTLP_ENDPOINT``); what arrives goes to ``sink``, by default
    a new :class:`~.store.TraceStore` (:attr:`store`), tagged with ``origin``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        sink: DocumentSink | None = None,
        origin: str = "otlp-receiver",
    ) -> None:
        self.sink: DocumentSink = sink if sink is not None else TraceStore()
        self._origin = origin
        self._host = host
        self._port = port or 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def store(self) -> TraceStore:
        """The in-memory store the receiver fills (an error when its sink is something else)."""
        if not isinstance(self.sink, TraceStore):
            raise TypeError("this receiver writes to a file, not to an in-memory store")
        return self.sink

    @property
    def endpoint(self) -> str:
        """The base URL exporters are pointed at."""
        if self._server is None:
            raise RuntimeError("the receiver is not running: start it first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def traces_url(self) -> str:
        """The full URL spans are POSTed to."""
        return self.endpoint + TRACES_PATH

    def start(self) -> OtlpReceiver:
        """Start serving (the port accepts connections when this returns)."""
        if self._server is not None:
            return self
        self._server = _Server((self._host, self._port), self.sink, self._origin)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port; what was received stays in :attr:`store`."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
