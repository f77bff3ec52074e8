"""``traffic-watch``: emit ``flywheel.traffic.accumulated`` for every workload with enough new traffic.

Deployed as ``traffic-watch/every-15m``; the ``flywheel/on-new-traffic`` deployment's trigger turns each
event into a ``flywheel`` run with the event's ``workload_id`` and ``client_id``. The decision logic
(threshold, cooldown, payload) is :mod:`agent_flywheel.traffic_watch`; this module only adds Prefect:
the log store block, the query for flywheel runs already in flight, the events and an artifact.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel

from agent_flywheel.logstore.shape import IndexMissing, inspect_index
from agent_flywheel.paths import flywheel_home
from agent_flywheel.traffic_watch import (
    EVENT_NAME,
    Action,
    EmitLog,
    Key,
    LastEmit,
    TrafficCount,
    decide,
    event_payload,
    event_resource,
    survey,
    utc_now,
)
from blocks.log_store import LogStore
from blocks.resolve import load_block
from tasks.log_index import log_index_shape
from tasks.retries import retry_if_transient
from tasks.watermarks import watermark_store

FLYWHEEL_FLOW_NAME = "flywheel"
# A scheduled run counts as in flight once it is due within this margin (a run the trigger has just
# created, or one waiting for a concurrency slot); runs scheduled further ahead (tonight's nightly) do not.
DUE_MARGIN = timedelta(minutes=2)
# The most flow runs a Prefect server returns for one request (its PREFECT_SERVER_API_DEFAULT_LIMIT,
# 200 by default); it answers a larger ``limit`` with 422, so longer lists are read page by page.
PAGE_SIZE = 200


def emit_log_path() -> Path:
    """Where the watch remembers its last events (for the cooldown), next to the watermarks."""
    return flywheel_home() / "traffic-watch.json"


class TrafficDecision(BaseModel):
    """What the watch decided for one (workload, client), and why."""

    workload_id: str
    client_id: str
    new_records: int
    total_records: int
    threshold: int
    since: str | None
    latest: str | None
    action: str
    reason: str


class TrafficWatchOutcome(BaseModel):
    """One decision per (workload, client) the log store holds records of."""

    decisions: list[TrafficDecision]


@task(
    name="survey-traffic",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_if_transient,
    timeout_seconds=600,
    cache_policy=NO_CACHE,
)
def survey_traffic(store: LogStore, workload_ids: list[str] | None) -> list[TrafficCount]:
    """Count each workload's records newer than its flywheel watermark (retried: the log store may blip).

    The index's mapping is read first and said in the log; one the flywheel cannot read fails the watch in
    one line that says how to fix it (not retried).
    """
    es = store.get_client()
    try:
        try:
            shape = inspect_index(es, store.index)
        except IndexMissing:
            get_run_logger().info("log index %r does not exist yet: no traffic", store.index)
            return []
        log_index_shape(shape, get_run_logger())
        return survey(es, store.index, watermark_store(), workload_ids, shape=shape)
    finally:
        es.close()


def read_flywheel_runs_in_flight(client: SyncPrefectClient, due: datetime) -> list[FlowRun]:
    """Every ``flywheel`` run pending, running or cancelling, or scheduled to start before ``due``.

    Read page by page (``PAGE_SIZE`` runs a request, ordered by id), so any number of runs is found
    without asking the server for more than it serves at once.
    """
    flows = FlowFilter(name=FlowFilterName(any_=[FLYWHEEL_FLOW_NAME]))
    started = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])
        )
    )
    scheduled = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        expected_start_time=FlowRunFilterExpectedStartTime(before_=due),
    )
    runs: list[FlowRun] = []
    for run_filter in (started, scheduled):
        offset = 0
        while True:
            page = client.read_flow_runs(
                flow_filter=flows,
                flow_run_filter=run_filter,
                sort=FlowRunSort.ID_DESC,
                limit=PAGE_SIZE,
                offset=offset,
            )
            runs.extend(page)
            if len(page) < PAGE_SIZE:
                break
            offset += PAGE_SIZE
    return runs


@task(name="flywheel-runs-in-flight", retries=1, retry_delay_seconds=5)
def flywheel_runs_in_flight() -> set[Key]:
    """The (workload, client) pairs with a ``flywheel`` run pending, running, or scheduled and due now.

    An event for such a pair would only start a run that waits for (or is cancelled by) the one in
    flight, so the watch holds it back until that run has finished and moved the watermark.
    """
    with get_client(sync_client=True) as client:
        runs = read_flywheel_runs_in_flight(client, due=utc_now() + DUE_MARGIN)
    return {_run_key(run.parameters) for run in runs if _run_key(run.parameters) != ("", "")}


def _run_key(parameters: dict[str, Any]) -> Key:
    return (str(parameters.get("workload_id") or ""), str(parameters.get("client_id") or ""))


@flow(name="traffic-watch", log_prints=False)
def traffic_watch(
    threshold: int = 200,
    log_store_block: str = "local",
    workload_ids: list[str] | None = None,
    cooldown_minutes: float = 60.0,
) -> TrafficWatchOutcome:
    """Emit ``flywheel.traffic.accumulated`` for each workload and client with ``threshold`` new records.

    New means newer than the watermark the last successful flywheel run saved. ``cooldown_minutes``
    keeps the watch from re-emitting for the same watermark while a run it asked for has not yet moved
    it (see ``docs/operations.md``). Returns the decision for each (workload, client) and why.
    """
    logger = get_run_logger()
    counts = survey_traffic(load_block(LogStore, log_store_block), workload_ids)
    if workload_ids:
        missing = sorted(set(workload_ids) - {count.workload_id for count in counts})
        if missing:
            logger.info("no records in the log store for %s", ", ".join(missing))
    try:
        active = flywheel_runs_in_flight()
    except Exception as exc:  # the watch still works, the trigger window and concurrency limit still hold
        logger.warning("could not read flywheel runs in flight (%s); assuming none", exc)
        active = set()

    emit_log = EmitLog(emit_log_path())
    now = utc_now()
    decisions = decide(
        counts,
        threshold=threshold,
        cooldown=timedelta(minutes=cooldown_minutes),
        last_emits=emit_log.load(),
        active=active,
        now=now,
    )
    if PREFECT_API_URL.value() is None and any(d.action is Action.EMIT for d in decisions):
        logger.warning(
            "PREFECT_API_URL is not set: events go to a temporary server where no trigger runs; "
            "start one with `flywheel server up`"
        )
    emitted: dict[Key, LastEmit] = {}
    for decision in decisions:
        count = decision.count
        if decision.action is not Action.EMIT:
            logger.info("%s/%s: %s (%s)", count.workload_id, count.client_id, decision.action, decision.reason)
            continue
        event = emit_event(event=EVENT_NAME, resource=event_resource(count), payload=event_payload(decision, now))
        if event is None:
            logger.warning("%s/%s: events are disabled; nothing emitted", count.workload_id, count.client_id)
            continue
        emitted[count.key] = LastEmit(at=now, since=count.since, new_records=count.new_records)
        logger.info(
            "%s/%s: emitted %s (%d new records, event %s)",
            count.workload_id,
            count.client_id,
            EVENT_NAME,
            count.new_records,
            event.id,
        )
    emit_log.record(emitted)

    rows = [decision.as_row() for decision in decisions]
    if rows:
        create_table_artifact(
            key="traffic-watch",
            table=rows,
            description=f"New records per workload since the last flywheel run; threshold {threshold}.",
        )
    return TrafficWatchOutcome(decisions=[TrafficDecision.model_validate(row) for row in rows])


if __name__ == "__main__":
    traffic_watch()
