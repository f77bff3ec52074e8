"""The traffic watch: which workloads have logged enough new records to be worth another flywheel run.

Every few minutes the ``traffic-watch`` flow counts, for each (workload, client) in the log store, the
records newer than the flywheel's last watermark, and emits ``flywheel.traffic.accumulated`` for those
that crossed a threshold. A deployment trigger turns that event into a ``flywheel`` run.

The watch is *level-triggered*: it recomputes the counts from the watermark on every tick instead of
remembering what it saw. An event that was lost, or a run that failed or was cancelled, is therefore
retried by a later tick, because the watermark only moves once a flywheel run has succeeded. Three
guards keep that from turning into a storm of runs:

* **cooldown** (here): an event for the same (workload, client) and the same watermark, that is for the
  same records plus a few more, is not emitted again until ``cooldown`` has passed since the last one;
* **active run** (here): no event while a ``flywheel`` run for that (workload, client) is already pending
  or running;
* **trigger window and deployment concurrency** (in ``prefect.yaml``): the automation fires at most once
  per window for one (workload, client), and the deployment never runs two flywheels at once.

Nothing here imports Prefect: :func:`decide` is pure, :func:`survey` only talks to the log store, and
:class:`EmitLog` is a small JSON file, so all of it is tested without a server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from agent_flywheel.logstore.client import LogStoreClient
from agent_flywheel.logstore.shape import IndexMissing, IndexShape, inspect_index
from agent_flywheel.logstore.traffic import count_since, list_workloads
from agent_flywheel.logstore.watermarks import WatermarkStore
from agent_flywheel.records.timestamps import format_timestamp, parse_timestamp

__all__ = [
    "EVENT_NAME",
    "RESOURCE_PREFIX",
    "Action",
    "EmitLog",
    "Key",
    "LastEmit",
    "TrafficCount",
    "WatchDecision",
    "decide",
    "event_payload",
    "event_resource",
    "survey",
    "utc_now",
]

EVENT_NAME = "flywheel.traffic.accumulated"
RESOURCE_PREFIX = "flywheel.workload."

Key = tuple[str, str]  # (workload_id, client_id)


@dataclasses.dataclass(frozen=True)
class TrafficCount:
    """One (workload, client) as the log store sees it now, relative to the flywheel's watermark."""

    workload_id: str
    client_id: str
    new_records: int  # records newer than the watermark (all of them before the first run)
    total_records: int
    since: datetime | None  # the watermark's timestamp; None before the first successful run
    latest: datetime | None  # the newest record's timestamp

    @property
    def key(self) -> Key:
        """``(workload_id, client_id)``, the unit that gets one flywheel run."""
        return (self.workload_id, self.client_id)


@dataclasses.dataclass(frozen=True)
class LastEmit:
    """The last event emitted for one (workload, client): when, and for which watermark."""

    at: datetime
    since: datetime | None
    new_records: int


class Action(StrEnum):
    """What the watch does about one (workload, client) on this tick."""

    EMIT = "emit"
    BELOW_THRESHOLD = "below-threshold"
    COOLDOWN = "cooldown"
    RUN_ACTIVE = "run-active"


@dataclasses.dataclass(frozen=True)
class WatchDecision:
    """The decision for one (workload, client), with a reason a person can read in the flow's log."""

    count: TrafficCount
    action: Action
    reason: str
    threshold: int

    def as_row(self) -> dict[str, Any]:
        """A flat row for the flow's table artifact and return value (JSON-able)."""
        return {
            "workload_id": self.count.workload_id,
            "client_id": self.count.client_id,
            "new_records": self.count.new_records,
            "total_records": self.count.total_records,
            "threshold": self.threshold,
            "since": _iso(self.count.since),
            "latest": _iso(self.count.latest),
            "action": str(self.action),
            "reason": self.reason,
        }


def _iso(value: datetime | None) -> str | None:
    return format_timestamp(value) if value is not None else None


def decide(
    counts: Iterable[TrafficCount],
    *,
    threshold: int,
    cooldown: timedelta,
    last_emits: Mapping[Key, LastEmit],
    active: Collection[Key] = (),
    now: datetime,
) -> list[WatchDecision]:
    """Decide, for every counted (workload, client), whether to emit ``flywheel.traffic.accumulated``.

    A pair is emitted when its new records reach ``threshold``, no flywheel run for it is pending or
    running, and the last event for the *same watermark* is older than ``cooldown``. When the watermark
    has moved since the last event (a flywheel run consumed those records), the cooldown does not
    apply: the records are new ones. The order of ``counts`` is kept.
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if cooldown < timedelta(0):
        raise ValueError(f"cooldown must not be negative, got {cooldown}")
    decisions = []
    for count in counts:
        decisions.append(_decide_one(count, threshold, cooldown, last_emits.get(count.key), count.key in active, now))
    return decisions


def _decide_one(
    count: TrafficCount, threshold: int, cooldown: timedelta, last: LastEmit | None, active: bool, now: datetime
) -> WatchDecision:
    def decision(action: Action, reason: str) -> WatchDecision:
        return WatchDecision(count=count, action=action, reason=reason, threshold=threshold)

    if count.new_records < threshold:
        return decision(Action.BELOW_THRESHOLD, f"{count.new_records} new records < threshold {threshold}")
    if active:
        return decision(Action.RUN_ACTIVE, "a flywheel run for this workload and client is already pending or running")
    if last is not None and last.since == count.since:
        elapsed = now - last.at
        if elapsed < cooldown:
            left = cooldown - elapsed
            return decision(
                Action.COOLDOWN,
                f"already emitted for this watermark at {format_timestamp(last.at)}; "
                f"next event in {_minutes(left)} unless a flywheel run moves the watermark",
            )
    return decision(Action.EMIT, f"{count.new_records} new records >= threshold {threshold}")


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.1f} min"


def event_resource(count: TrafficCount) -> dict[str, str]:
    """The event's resource: ``flywheel.workload.<workload_id>``, with labels the trigger buckets on.

    The trigger in ``prefect.yaml`` fires once per window for each (``prefect.resource.id``,
    ``flywheel.client_id``), so two clients of one workload do not silence each other.
    """
    return {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{count.workload_id}",
        "prefect.resource.name": count.workload_id,
        "flywheel.workload_id": count.workload_id,
        "flywheel.client_id": count.client_id,
    }


def event_payload(decision: WatchDecision, now: datetime) -> dict[str, Any]:
    """The event's payload: the ids the trigger passes to the flywheel run, the counts and the window.

    ``window`` is the span of records counted: from the watermark (exclusive of records already read;
    ``null`` before the first run) to the newest record.
    """
    count = decision.count
    return {
        "workload_id": count.workload_id,
        "client_id": count.client_id,
        "new_records": count.new_records,
        "total_records": count.total_records,
        "threshold": decision.threshold,
        "window": {"since": _iso(count.since), "until": _iso(count.latest)},
        "detected_at": format_timestamp(now),
    }


def survey(
    client: LogStoreClient,
    index: str,
    watermarks: WatermarkStore,
    workload_ids: Collection[str] | None = None,
    shape: IndexShape | None = None,
) -> list[TrafficCount]:
    """Count every (workload, client) in the log index, and its records newer than the saved watermark.

    One terms aggregation lists the pairs; one ``_count`` per pair that has a watermark gives the new
    records (a pair without one has never been read: all its records are new). ``workload_ids``
    restricts the survey; workloads without any record are simply absent. ``shape`` (read from the index
    when not given; see :func:`~agent_flywheel.logstore.shape.inspect_index`) builds the queries, so an
    index a producer created is counted as exactly as ours; an index that does not exist has no traffic.
    """
    if shape is None:
        try:
            shape = inspect_index(client, index)
        except IndexMissing:
            return []
    wanted = set(workload_ids) if workload_ids is not None else None
    counts = []
    for stats in list_workloads(client, index, shape=shape):
        if wanted is not None and stats.workload_id not in wanted:
            continue
        watermark = watermarks.get(stats.workload_id, stats.client_id)
        if watermark is None:
            new_records = stats.count
        else:
            new_records = count_since(client, index, stats.workload_id, stats.client_id, watermark, shape=shape)
        counts.append(
            TrafficCount(
                workload_id=stats.workload_id,
                client_id=stats.client_id,
                new_records=new_records,
                total_records=stats.count,
                since=watermark.timestamp if watermark is not None else None,
                latest=stats.latest,
            )
        )
    return counts


class EmitLog:
    """The last event emitted per (workload, client), in one small JSON file, for the cooldown.

    Written atomically (temporary file + ``os.replace``); the ``traffic-watch`` deployment runs one
    watch at a time, so there is no lock. An unreadable file is treated as empty, which at worst
    re-emits once: the trigger window and the deployment's concurrency limit still hold.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[Key, LastEmit]:
        """Every remembered event; empty when the file is missing or unreadable."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        entries = data.get("emitted") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            return {}
        result: dict[Key, LastEmit] = {}
        for workload_id, clients in entries.items():
            if not isinstance(clients, dict):
                continue
            for client_id, entry in clients.items():
                with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                    since = entry.get("since")
                    result[(str(workload_id), str(client_id))] = LastEmit(
                        at=parse_timestamp(entry["at"]),
                        since=parse_timestamp(since) if since is not None else None,
                        new_records=int(entry.get("new_records", 0)),
                    )
        return result

    def record(self, emitted: Mapping[Key, LastEmit]) -> None:
        """Remember these events (keeping every other pair's)."""
        if not emitted:
            return
        merged = {**self.load(), **emitted}
        data: dict[str, Any] = {"version": 1, "emitted": {}}
        for (workload_id, client_id), last in sorted(merged.items()):
            data["emitted"].setdefault(workload_id, {})[client_id] = {
                "at": format_timestamp(last.at),
                "since": _iso(last.since),
                "new_records": last.new_records,
            }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def utc_now() -> datetime:
    """The current time in UTC (one place, so the flow and the tests agree on the clock's type)."""
    return datetime.now(UTC)
