"""The calls the flywheel makes to its log store: a narrow interface with an Elasticsearch and an OpenSearch side.

Reading, writing, the traffic counts and the mapping checks need a handful of operations (mappings, counts,
searches, point-in-time paging, bulk writes). :class:`LogStoreClient` names them with plain JSON bodies, and
each product's official client sits behind an adapter (:mod:`~agent_flywheel.logstore.elastic`,
:mod:`~agent_flywheel.logstore.opensearch`) that speaks its dialect: Elasticsearch opens a point in time at
``POST /{index}/_pit`` and closes it at ``DELETE /_pit``, OpenSearch at ``POST /{index}/_search/point_in_time``
and ``DELETE /_search/point_in_time``; OpenSearch before 3.3 has no ``_shard_doc`` tiebreaker.

Adapters raise :class:`~agent_flywheel.logstore.shape.IndexMissing` for a missing index and
:class:`TrustError` when the store's TLS certificate is not trusted; anything else the product's client raises
passes through (its connection errors and HTTP statuses are what the retry rules read).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from agent_flywheel.logstore.errors import LogStoreError

#: The sort tiebreaker that makes point-in-time paging exact: unique per document and stable within a PIT.
SHARD_DOC = "_shard_doc"
#: The tiebreaker where ``_shard_doc`` is missing (OpenSearch before 3.3): unique, but sorts on ``_id`` values.
DOC_ID = "_id"


class TrustError(LogStoreError):
    """The log store's TLS certificate is not trusted (or ours was refused); not worth retrying."""


class LogStoreClient(Protocol):
    """What the flywheel asks of an Elasticsearch or OpenSearch cluster (see the module)."""

    #: "Elasticsearch" or "OpenSearch", for messages.
    product: str
    #: The product client's errors that mean the store failed (unreachable, refused, answered an error).
    failures: tuple[type[Exception], ...]

    def tiebreaker(self) -> str:
        """The sort field that breaks ties in point-in-time paging (:data:`SHARD_DOC` or :data:`DOC_ID`)."""
        ...

    def get_mapping(self, index: str) -> dict[str, Any]:
        """``GET /{index}/_mapping``: ``{index name: {"mappings": ...}}`` for every index ``index`` names."""
        ...

    def index_exists(self, index: str) -> bool:
        """``HEAD /{index}``."""
        ...

    def create_index(self, index: str, mappings: dict[str, Any], settings: dict[str, Any]) -> bool:
        """``PUT /{index}``; False when it exists already (created by someone else in between)."""
        ...

    def refresh(self, index: str) -> None:
        """``POST /{index}/_refresh``: what was written becomes searchable."""
        ...

    def count(self, index: str, query: dict[str, Any]) -> int:
        """``POST /{index}/_count``."""
        ...

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /{index}/_search`` (aggregations and other one-shot searches)."""
        ...

    def open_pit(self, index: str, keep_alive: str) -> str:
        """Open a point in time on ``index``; its id."""
        ...

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /_search`` under a point in time (``body`` without ``pit``); the answer may carry a new ``pit_id``."""
        ...

    def close_pit(self, pit_id: str) -> None:
        """Free a point in time (it would expire after its keep-alive anyway)."""
        ...

    def bulk(self, actions: Iterable[dict[str, Any]], chunk_size: int) -> Iterator[tuple[bool, dict[str, Any]]]:
        """Bulk actions in chunks, retrying ``429`` items with back-off; ``(ok, {op: item})`` per action, failures
        included (never raised)."""
        ...

    def close(self) -> None:
        """Close the connections."""
        ...


_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]\s*([^()]*)")
_FINGERPRINT = re.compile(r'Fingerprints did not match\. Expected "([0-9a-fA-F:]+)", got "([0-9a-fA-F:]+)"')


def trust_error(where: str, exc: BaseException) -> TrustError:
    """One line for a TLS failure: what the store's certificate (or ours) did wrong, and what to set."""
    text = str(exc)
    pinned = _FINGERPRINT.search(text)
    if pinned:
        return TrustError(
            f"log store at {where}: TLS failed (its certificate's SHA-256 fingerprint is {pinned.group(2)}, not the "
            f"pinned {pinned.group(1)}); correct the LogStore block's ssl_assert_fingerprint, or give it ca_certs"
        )
    match = _SSL_REASON.search(text)
    code, reason = (match.group(1), match.group(2).strip().rstrip(":").strip()) if match else ("", text[:300])
    lowered = reason.lower()
    if "hostname mismatch" in lowered or "ip address mismatch" in lowered:
        fix = "use the host name its certificate names in the LogStore block's url"
    elif code == "CERTIFICATE_VERIFY_FAILED":
        fix = (
            "its certificate is not signed by a CA this worker trusts: give the LogStore block the CA certificate "
            "that signed it (ca_certs: the PEM text or a file), or its ssl_assert_fingerprint"
        )
    elif "CERTIFICATE_REQUIRED" in code or "BAD_CERTIFICATE" in code or "UNKNOWN_CA" in code:
        fix = (
            "the store refused this worker's client certificate or wants one: set the LogStore block's client_cert "
            "and client_key to a certificate its CA signed"
        )
    else:
        fix = "check the LogStore block's ca_certs, client_cert and client_key"
    detail = reason or code.lower().replace("_", " ")
    return TrustError(f"log store at {where}: TLS failed ({detail}); {fix}")
