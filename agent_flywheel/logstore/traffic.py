"""Traffic in the log index, for the watcher: how many records came in, and which workloads log at all."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

from agent_flywheel.logstore.client import LogStoreClient
from agent_flywheel.logstore.shape import TIMESTAMP_FIELD, IndexMissing, IndexShape, inspect_index
from agent_flywheel.logstore.watermarks import Watermark, read_bounds

log = logging.getLogger(__name__)


def _shape_or_none(client: LogStoreClient, index: str, shape: IndexShape | None) -> IndexShape | None:
    """The index's shape (read when not given); None when the index does not exist yet."""
    if shape is not None:
        return shape
    try:
        return inspect_index(client, index)
    except IndexMissing:
        return None


def count_since(
    client: LogStoreClient,
    index: str,
    workload_id: str,
    client_id: str,
    since: datetime | Watermark | None,
    *,
    until: datetime | None = None,
    shape: IndexShape | None = None,
) -> int:
    """How many records one workload and client logged since a time or watermark (0 if no index yet).

    The traffic watcher asks this every few minutes to decide whether enough new data has come in. With
    a watermark, the count starts where the next read starts and the records it lists as already read are
    subtracted (exact unless some were deleted since); ``until`` then is not allowed, as those records may
    lie beyond it. ``shape`` is read from the index when not given.
    """
    if isinstance(since, Watermark) and until is not None:
        raise ValueError("count_since: a watermark counts to the newest record; until is not allowed with it")
    shape = _shape_or_none(client, index, shape)
    if shape is None or not shape.readable:
        return 0
    lower, upper = read_bounds(shape, since, until)
    try:
        count = client.count(index, shape.window_query(workload_id, client_id, lower, upper))
    except IndexMissing:
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


def _latest(shape: IndexShape, bucket: dict[str, Any]) -> datetime | None:
    """The newest timestamp of a ``max`` aggregation: its value is a stored position (a double in the answer)."""
    value = bucket.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return shape.time_at(int(value))
    except (ValueError, OverflowError):
        return None


def list_workloads(
    client: LogStoreClient,
    index: str,
    *,
    since: datetime | None = None,
    max_buckets: int = 1000,
    shape: IndexShape | None = None,
) -> list[WorkloadStats]:
    """Every (workload, client) with its record count and newest timestamp, in one terms aggregation.

    The traffic watcher uses it to discover workloads it was not told about. An index that does not
    exist yet has none. More than ``max_buckets`` workloads (or clients per workload) are logged as a
    warning, not silently cut. The aggregation runs on the keyword fields ``shape`` names (read from the
    index when not given), so a producer's ``text`` ids are counted exactly.
    """
    shape = _shape_or_none(client, index, shape)
    if shape is None or not shape.readable:
        return []
    aggs = {
        "workloads": {
            "terms": {"field": shape.workload_field, "size": max_buckets},
            "aggs": {
                "clients": {
                    "terms": {"field": shape.client_field, "size": max_buckets},
                    "aggs": {"latest": {"max": {"field": TIMESTAMP_FIELD}}},
                }
            },
        }
    }
    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        query = shape.range_clause(shape.position(since)) or query
    try:
        response = client.search(index, {"size": 0, "query": query, "aggs": aggs})
    except IndexMissing:
        return []
    workloads = response["aggregations"]["workloads"]
    if workloads.get("sum_other_doc_count"):
        log.warning("more than %d workloads in %s; the rest are not listed", max_buckets, index)
    stats = []
    for workload in workloads.get("buckets", []):
        clients = workload["clients"]
        if clients.get("sum_other_doc_count"):
            log.warning("workload %s has more than %d clients; the rest are not listed", workload["key"], max_buckets)
        for bucket in clients.get("buckets", []):
            stats.append(
                WorkloadStats(
                    workload_id=str(workload["key"]),
                    client_id=str(bucket["key"]),
                    count=int(bucket["doc_count"]),
                    latest=_latest(shape, bucket.get("latest") or {}),
                )
            )
    return sorted(stats, key=lambda s: (s.workload_id, s.client_id))
