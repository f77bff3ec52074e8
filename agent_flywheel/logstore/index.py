"""The log index: its mapping, creating it, and the query that selects one workload's records in a time window.

Time windows are half-open, ``since <= timestamp < until``, and compared at Elasticsearch's millisecond
precision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch

#: The log index mapping. Unlike the blueprint's ``"dynamic": "strict"`` (which rejects any extra
#: top-level field a producer adds), unknown fields are mapped dynamically and kept. ``timestamp`` reads
#: ISO 8601 and epoch *seconds* (the blueprint's ``date`` read epoch seconds as milliseconds).
#: ``request``/``response`` are stored, not indexed: they are only ever read back whole.
#: ``date_detection`` is off so that a string field that once looked like a date does not later reject
#: documents where it does not.
LOG_INDEX_MAPPING: dict[str, Any] = {
    "dynamic": True,
    "date_detection": False,
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "request": {"type": "object", "enabled": False},
        "response": {"type": "object", "enabled": False},
    },
}
LOG_INDEX_SETTINGS: dict[str, Any] = {"index": {"mapping": {"total_fields": {"limit": 1000}}}}

RANGE_FORMAT = "strict_date_optional_time"


def ensure_index(es: Elasticsearch, index: str) -> bool:
    """Create the log index with :data:`LOG_INDEX_MAPPING` if it does not exist; True when created.

    Writing into a missing index would let Elasticsearch guess the mapping (``timestamp`` as a number
    or a string), after which range queries on it silently return nothing.
    """
    if es.indices.exists(index=index):
        return False
    try:
        es.indices.create(index=index, mappings=LOG_INDEX_MAPPING, settings=LOG_INDEX_SETTINGS)
    except ApiError as exc:  # another writer created it in between
        if "resource_already_exists" in str(exc):
            return False
        raise
    return True


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def floor_ms(value: datetime) -> datetime:
    """``value`` in UTC, floored to the millisecond (the precision Elasticsearch stores)."""
    utc = _utc(value)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def es_time(value: datetime) -> str:
    """A bound as Elasticsearch compares it: UTC, millisecond precision (floored)."""
    return floor_ms(value).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def window_query(workload_id: str, client_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    """The records of one workload and client with ``since <= timestamp < until`` (either bound optional)."""
    filters: list[dict[str, Any]] = [{"term": {"workload_id": workload_id}}, {"term": {"client_id": client_id}}]
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds["gte"] = es_time(since)
    if until is not None:
        bounds["lt"] = es_time(until)
    if bounds:
        filters.append({"range": {"timestamp": {**bounds, "format": RANGE_FORMAT}}})
    return {"bool": {"filter": filters}}
