"""Traffic in the log index, for the watcher: how many records came in, and which workloads log at all."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from agent_flywheel.logstore.index import RANGE_FORMAT, es_time, window_query
from agent_flywheel.logstore.watermarks import Watermark
from agent_flywheel.records.timestamps import parse_timestamp

log = logging.getLogger(__name__)


def count_since(
    es: Elasticsearch,
    index: str,
    workload_id: str,
    client_id: str,
    since: datetime | Watermark | None,
    *,
    until: datetime | None = None,
) -> int:
    """How many records one workload and client logged since a time or watermark (0 if no index yet).

    The traffic watcher asks this every few minutes to decide whether enough new data has come in. With
    a watermark, the records it lists are subtracted (exact unless some were deleted since).
    """
    start = since.timestamp if isinstance(since, Watermark) else since
    try:
        count = int(es.count(index=index, query=window_query(workload_id, client_id, start, until))["count"])
    except NotFoundError:
        return 0
    if isinstance(since, Watermark):
        count = max(0, count - len(since.ids))
    return count


@dataclasses.dataclass(frozen=True)
class WorkloadStats:
    """One (workload, client) pair in the log index: how many records and the newest timestamp."""

    workload_id: str
    client_id: str
    count: int
    latest: datetime | None


def _agg_time(bucket: dict[str, Any]) -> datetime | None:
    text = bucket.get("value_as_string")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return parse_timestamp(text)
    value = bucket.get("value")
    if isinstance(value, int | float):
        with contextlib.suppress(ValueError, OverflowError, OSError):
            return datetime.fromtimestamp(value / 1000, UTC)
    return None


def list_workloads(
    es: Elasticsearch, index: str, *, since: datetime | None = None, max_buckets: int = 1000
) -> list[WorkloadStats]:
    """Every (workload, client) with its record count and newest timestamp, in one terms aggregation.

    The traffic watcher uses it to discover workloads it was not told about. An index that does not
    exist yet has none. More than ``max_buckets`` workloads (or clients per workload) are logged as a
    warning, not silently cut.
    """
    aggs = {
        "workloads": {
            "terms": {"field": "workload_id", "size": max_buckets},
            "aggs": {
                "clients": {
                    "terms": {"field": "client_id", "size": max_buckets},
                    "aggs": {"latest": {"max": {"field": "timestamp"}}},
                }
            },
        }
    }
    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        query = {"range": {"timestamp": {"gte": es_time(since), "format": RANGE_FORMAT}}}
    try:
        response = es.search(index=index, size=0, query=query, aggs=aggs)
    except NotFoundError:
        return []
    workloads = response["aggregations"]["workloads"]
    if workloads.get("sum_other_doc_count"):
        log.warning("more than %d workloads in %s; the rest are not listed", max_buckets, index)
    stats = []
    for workload in workloads.get("buckets", []):
        clients = workload["clients"]
        if clients.get("sum_other_doc_count"):
            log.warning("workload %s has more than %d clients; the rest are not listed", workload["key"], max_buckets)
        for client in clients.get("buckets", []):
            stats.append(
                WorkloadStats(
                    workload_id=str(workload["key"]),
                    client_id=str(client["key"]),
                    count=int(client["doc_count"]),
                    latest=_agg_time(client.get("latest") or {}),
                )
            )
    return sorted(stats, key=lambda s: (s.workload_id, s.client_id))
