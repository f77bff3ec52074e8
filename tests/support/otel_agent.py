"""An agent the project did not write, built only from public libraries, for the scaling lifecycle's tests.

- :class:`OtelAgent`: a standard-library HTTP server with a NAT-like ``POST /generate`` (``{"input_message"}`` in,
  ``{"value"}`` out, nothing else: no ``llm_calls``, no trace id, no admin endpoints). Each request plans with
  one model, runs a tool, and answers with another model, the two model calls one after the other over an
  OpenAI-compatible ``/v1/chat/completions``. It is instrumented with the OpenTelemetry SDK the usual way: the
  incoming W3C ``traceparent`` is extracted with the SDK's propagator (so its spans join the caller's trace),
  spans carry OpenInference attribute names (``openinference.span.kind``, ``llm.model_name``,
  ``llm.token_count.*``, ``tool.name``), and a ``BatchSpanProcessor`` sends them with the protobuf
  ``OTLPSpanExporter`` to ``otlp_endpoint`` (what ``OTEL_EXPORTER_OTLP_ENDPOINT`` would say).
  It can serve two models, as a platform's canary does: :meth:`OtelAgent.route` (or the constructor) gives a
  ``canary_model`` a ``weight`` of the requests, which it answers with instead of the responder (exactly that
  share, in a fixed order); an ``X-Variant: canary|baseline`` header picks the arm of one request. Which model
  served a request shows only in its spans (``llm.model_name``), never in the answer.
- :class:`StubLLM`: an OpenAI-compatible chat endpoint that answers after a fixed delay per model, with usage;
  the models in ``failing`` answer 503.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PLANNER = "meta/llama-3.3-70b-instruct"
RESPONDER = "meta/llama-3.1-8b-instruct"
TOOL_S = 0.01


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _Background:
    """A stdlib HTTP server in a thread, for a ``with`` block."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> _Background:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> _Background:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _json(handler: BaseHTTPRequestHandler) -> Any:
    length = int(handler.headers.get("Content-Length") or 0)
    return json.loads(handler.rfile.read(length) or b"null")


def _answer(handler: BaseHTTPRequestHandler, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _StubLLMHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        stub: StubLLM = self.server.owner  # type: ignore[attr-defined]
        request = _json(self)
        model = str(request.get("model"))
        if self.path != "/v1/chat/completions" or model not in stub.delays_s:
            _answer(self, 404, {"error": {"message": f"no model {model!r} at {self.path}"}})
            return
        time.sleep(stub.delays_s[model])
        if model in stub.failing:
            _answer(self, 503, {"error": {"message": f"{model} is overloaded"}})
            return
        prompt = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
        _answer(
            self,
            200,
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"ok from {model}"}}],
                "usage": {"prompt_tokens": prompt + 20, "completion_tokens": 7, "total_tokens": prompt + 27},
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


class StubLLM(_Background):
    """``POST /v1/chat/completions`` answering each model after its delay (the ``failing`` ones with a 503)."""

    def __init__(self, delays_s: dict[str, float], failing: set[str] | None = None) -> None:
        self.delays_s = dict(delays_s)
        self.failing = set(failing or ())
        super().__init__(_StubLLMHandler)


class _AgentHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        agent: OtelAgent = self.server.owner  # type: ignore[attr-defined]
        if self.path != "/generate":
            _answer(self, 404, {"detail": "Not Found"})
            return
        body = _json(self)
        message = body.get("input_message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message:
            _answer(self, 422, {"detail": "input_message is required"})
            return
        parent = TraceContextTextMapPropagator().extract(carrier=dict(self.headers.items()))
        responder = agent.responder(self.headers.get("X-Variant"))
        try:
            with agent.tracer.start_as_current_span(
                "react_agent", context=parent, kind=SpanKind.SERVER, attributes={"openinference.span.kind": "AGENT"}
            ) as root:
                plan = agent.chat(PLANNER, f"Plan: {message}")
                with agent.tracer.start_as_current_span(
                    "lookup_order", attributes={"openinference.span.kind": "TOOL", "tool.name": "lookup_order"}
                ):
                    time.sleep(TOOL_S)
                value = agent.chat(responder, f"{plan}\nAnswer: {message}")
                root.set_attribute("output.value", value)
        except (RuntimeError, httpx.HTTPError) as exc:
            _answer(self, 502, {"detail": str(exc)})
            return
        _answer(self, 200, {"value": value})

    def log_message(self, format: str, *args: object) -> None:
        pass


class OtelAgent(_Background):
    """The NAT-like agent (see the module docstring), its spans exported to ``otlp_endpoint``."""

    def __init__(
        self,
        llm_url: str,
        otlp_endpoint: str,
        export_delay_ms: int = 200,
        canary_model: str | None = None,
        canary_weight: float = 0.0,
    ) -> None:
        self._lock = threading.Lock()
        self._credit = 0.0
        self.canary_model: str | None = None
        self.canary_weight = 0.0
        self.route(canary_model, canary_weight)
        self.llm = httpx.Client(base_url=llm_url, timeout=30)
        self.provider = TracerProvider(resource=Resource.create({"service.name": "otel-fixture-agent"}))
        exporter = OTLPSpanExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/traces")
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=export_delay_ms))
        self.tracer: Tracer = self.provider.get_tracer("tests.otel_agent")
        super().__init__(_AgentHandler)

    def route(self, canary_model: str | None, weight: float) -> None:
        """Answer ``weight`` of the requests with ``canary_model`` instead of the responder (None: none)."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        with self._lock:
            self.canary_model, self.canary_weight = canary_model, weight if canary_model else 0.0
            self._credit = 0.0

    def responder(self, variant: str | None = None) -> str:
        """The model that answers this request: the canary for its share of requests (or when asked), else the
        responder. The share is exact: the canary's credit grows by the weight per request and pays 1 per use."""
        with self._lock:
            if not self.canary_model or variant == "baseline":
                return RESPONDER
            if variant == "canary":
                return self.canary_model
            self._credit += self.canary_weight
            if self._credit >= 1.0 - 1e-9:
                self._credit -= 1.0
                return self.canary_model
            return RESPONDER

    def chat(self, model: str, content: str) -> str:
        """One model call, as an OpenInference LLM span."""
        with self.tracer.start_as_current_span(
            f"ChatOpenAI {model}",
            attributes={"openinference.span.kind": "LLM", "llm.model_name": model, "llm.provider": "openai"},
        ) as span:
            answer = self.llm.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}]}
            )
            if answer.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR, answer.text))
                raise RuntimeError(f"LLM answered {answer.status_code}")
            data = answer.json()
            usage = data.get("usage") or {}
            span.set_attribute("llm.token_count.prompt", int(usage.get("prompt_tokens", 0)))
            span.set_attribute("llm.token_count.completion", int(usage.get("completion_tokens", 0)))
            span.set_attribute("llm.token_count.total", int(usage.get("total_tokens", 0)))
            return str(data["choices"][0]["message"]["content"])

    def stop(self) -> None:
        super().stop()
        self.provider.shutdown()  # flushes the spans still queued
        self.llm.close()
