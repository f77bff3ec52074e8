"""Errors in Elasticsearch's JSON shape, so the official client raises the same exception classes."""

from __future__ import annotations

from typing import Any


class EsError(Exception):
    """An error answered as ``{"error": {"root_cause": [...], "type", "reason", ...}, "status": N}``."""

    def __init__(
        self,
        status: int,
        type_: str,
        reason: str,
        *,
        caused_by: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.type = type_
        self.reason = reason
        self.caused_by = caused_by
        self.extra = extra

    def cause(self) -> dict[str, Any]:
        """The inner error object, as it appears in a bulk item or a ``caused_by``."""
        body: dict[str, Any] = {"type": self.type, "reason": self.reason, **self.extra}
        if self.caused_by:
            body["caused_by"] = self.caused_by
        return body

    def body(self) -> dict[str, Any]:
        """The full response body of a failed request."""
        root = {"type": self.type, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [root], **self.cause()}, "status": self.status}


def index_not_found(index: str) -> EsError:
    """The 404 every API gives for a missing concrete index."""
    return EsError(
        404,
        "index_not_found_exception",
        f"no such index [{index}]",
        **_not_found_extra(index),
    )


def _not_found_extra(index: str) -> dict[str, Any]:
    return {"resource.type": "index_or_alias", "resource.id": index, "index_uuid": "_na_", "index": index}


def parsing_error(reason: str) -> EsError:
    """A request body that is JSON but not a valid request (unknown query, bad field)."""
    return EsError(400, "parsing_exception", reason)


def x_content_error(reason: str) -> EsError:
    """A request body that is not JSON at all."""
    return EsError(400, "x_content_parse_exception", reason)


def illegal_argument(reason: str) -> EsError:
    """A well-formed request that asks for something invalid."""
    return EsError(400, "illegal_argument_exception", reason)


def context_missing(what: str) -> EsError:
    """An unknown or expired point in time or scroll id."""
    return EsError(404, "search_context_missing_exception", f"No search context found for id [{what}]")


def fielddata_disabled(field: str, index: str) -> EsError:
    """Aggregating or sorting on a ``text`` field: Elasticsearch 8's ``TextFieldMapper`` refusal, word for word."""
    return illegal_argument(
        f"Fielddata is disabled on [{field}] in [{index}]. Text fields are not optimised for operations that require "
        "per-document field data like aggregations and sorting, so these operations are disabled by default. Please "
        f"use a keyword field instead. Alternatively, set fielddata=true on [{field}] in order to load field data by "
        "uninverting the inverted index. Note that this can use significant memory."
    )
