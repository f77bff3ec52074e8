"""OTLP/HTTP trace export bodies in, OTLP/JSON documents and the prescribed answers out.

What the OTLP/HTTP specification asks of a receiver, and what this module does about it:

- ``POST /v1/traces`` carries an ``ExportTraceServiceRequest``, binary protobuf (``application/x-protobuf``) or
  JSON (``application/json``), optionally ``Content-Encoding: gzip``. Protobuf is decoded with the OpenTelemetry
  project's own message types (``opentelemetry-proto``) and converted into the JSON encoding's shape, with trace
  and span ids as lower-case hex (the OTLP/JSON rule), so the profiler reads one shape whatever the agent sent.
- Success is ``200`` with an ``ExportTraceServiceResponse`` in the request's encoding; when some spans could not
  be used, its ``partial_success`` says how many (``rejected_spans``) and why (``error_message``).
- Failure is a ``google.rpc.Status`` in the request's encoding (JSON when the encoding is unknown): ``400`` for a
  body that cannot be decoded, ``415`` for a content type or encoding this receiver does not speak.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from agent_flywheel.scaling.otlp.store import scopes_of

Encoding = Literal["protobuf", "json"]
PROTOBUF_TYPE = "application/x-protobuf"
JSON_TYPE = "application/json"
CONTENT_TYPES: dict[str, Encoding] = {
    PROTOBUF_TYPE: "protobuf",
    "application/protobuf": "protobuf",
    JSON_TYPE: "json",
}
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
# google.rpc.Code values for the Status of a refused request.
_GRPC_CODE = {400: 3, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3}


class ExportError(ValueError):
    """A request refused as a whole: ``status`` is the HTTP status to answer with, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def encoding_of(content_type: str | None) -> Encoding | None:
    """The encoding a ``Content-Type`` names (parameters such as ``charset`` ignored); None when unsupported."""
    media = (content_type or "").split(";")[0].strip().lower()
    return CONTENT_TYPES.get(media)


def decompress(body: bytes, content_encoding: str | None) -> bytes:
    """The body without its ``Content-Encoding`` (``gzip``, the one OTLP/HTTP names, or none)."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("identity", ""):
        return body
    if coding == "gzip":
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            raise ExportError(400, "the body is not valid gzip") from None
    raise ExportError(415, f"unsupported Content-Encoding {content_encoding!r}: send gzip or no compression")


def decode_request(body: bytes, content_type: str | None, content_encoding: str | None = None) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` body as an OTLP/JSON document (``{"resourceSpans": [...]}``, hex ids).

    Raises :class:`ExportError` (415 for an encoding it does not speak, 400 for a body it cannot decode).
    """
    encoding = encoding_of(content_type)
    if encoding is None:
        raise ExportError(
            415,
            f"unsupported Content-Type {content_type!r}: send {PROTOBUF_TYPE} or {JSON_TYPE} (OTLP/HTTP)",
        )
    raw = decompress(body, content_encoding)
    if encoding == "protobuf":
        return document_from_protobuf(raw)
    return document_from_json(raw)


def document_from_protobuf(raw: bytes) -> dict[str, Any]:
    """A binary ``ExportTraceServiceRequest`` in the OTLP/JSON shape: camelCase keys, enums as integers,
    64-bit integers as strings, and trace and span ids as hex (protobuf's generic JSON mapping would give base64)."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as exc:
        raise ExportError(400, f"the body is not a protobuf ExportTraceServiceRequest ({exc})") from None
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    document.setdefault("resourceSpans", [])
    for scope in scopes_of(document):
        for span in scope.get("spans") or []:
            _ids_to_hex(span)
            for link in span.get("links") or []:
                _ids_to_hex(link)
    return document


def _ids_to_hex(item: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = item.get(key)
        if isinstance(value, str) and value:
            try:
                item[key] = base64.b64decode(value, validate=True).hex()
            except (binascii.Error, ValueError):
                pass


def document_from_json(raw: bytes) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest``, kept as it was sent (the profiler reads hex and base64 ids)."""
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ExportError(400, "the body is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("resourceSpans"), list):
        raise ExportError(400, "expected an ExportTraceServiceRequest: an object with a resourceSpans list")
    return document


@dataclass(frozen=True)
class Rejection:
    """The spans of a request that the profiler cannot use, and why (the first reason)."""

    spans: int
    message: str


def rejection_of(document: Mapping[str, Any], usable: int, problems: Sequence[str]) -> Rejection:
    """How many spans of a document the profiler skips (no ids, no times, ending before they start), given how
    many it could use and the problems it named."""
    total = sum(len(scope.get("spans") or []) for scope in scopes_of(document))
    rejected = total - usable
    if rejected <= 0:
        return Rejection(0, "")
    first = f": {problems[0]}" if problems else ""
    return Rejection(rejected, f"{rejected} of {total} spans cannot be used{first}")


def export_response(encoding: Encoding, rejection: Rejection) -> bytes:
    """The ``ExportTraceServiceResponse`` body: empty on full success, else with its ``partial_success``."""
    response = ExportTraceServiceResponse()
    if rejection.spans:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejection.spans, error_message=rejection.message)
        )
    if encoding == "protobuf":
        return response.SerializeToString()
    return json.dumps(json_format.MessageToDict(response)).encode()


def status_response(encoding: Encoding, http_status: int, message: str) -> bytes:
    """The ``google.rpc.Status`` body of a refused request."""
    status = status_pb2.Status(code=_GRPC_CODE.get(http_status, 2), message=message)
    if encoding == "protobuf":
        return status.SerializeToString()
    return json.dumps(json_format.MessageToDict(status)).encode()


def content_type_of(encoding: Encoding) -> str:
    """The ``Content-Type`` of an answer in ``encoding``."""
    return PROTOBUF_TYPE if encoding == "protobuf" else JSON_TYPE
