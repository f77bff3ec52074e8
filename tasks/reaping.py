"""Stopping what flywheel runs left on NeMo, whichever machine they ran on, and marking dead runs crashed.

What a run owns is read from the platform (:mod:`agent_flywheel.ledger`: the run id on every job, the users
on every deployment, the adopters of a job in the state store); whether a run is over, from the Prefect API
(:func:`tasks.ownership.runs_over`). Three callers:

- :func:`cleanup_run`, the flywheel's failure, crash and cancellation hooks (in the run's own process): the
  jobs of the run that no other live run uses are cancelled, the run leaves its deployments;
- :func:`reap_orphans`, when a run succeeded: what runs that are over left in its namespace;
- the ``reaper`` flow (:mod:`flows.reaper`), every 10 minutes on any worker: :func:`mark_zombies` marks runs
  whose heartbeats stopped ``Crashed`` (:mod:`agent_flywheel.zombies`), then :func:`reap` stops what belongs
  to runs that are over, on any machine: the runs that died without their hooks (SIGKILL, an evicted pod).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventOrder,
    EventResourceFilter,
)
from prefect.runtime import flow_run as current_run
from prefect.states import Crashed
from pydantic import BaseModel

from agent_flywheel.ledger import (
    Resource,
    Verdict,
    all_job_users,
    job_users_name,
    judge,
    list_owned,
    remove_job_user,
)
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.zombies import HEARTBEAT_EVENT, RunActivity, zombie_reason
from tasks.ownership import deployment_users_lock, release_deployment, release_line, runs_over
from tasks.state_store import state_store

logger = logging.getLogger(__name__)

#: The flows whose runs the reaper judges by their heartbeats: this project's.
PROJECT_FLOWS = ("flywheel", "flywheel-candidate", "traffic-watch", "scaling", "rollout-check", "reaper")
#: Flow runs read per request (a Prefect server's default page limit).
PAGE_SIZE = 200


class ReapedLine(BaseModel):
    """One thing the reaper (or a hook) looked at: what, whose, what it did and why."""

    kind: str
    ref: str
    owners: list[str]
    action: str
    done: str


def _log(line: str) -> None:
    try:
        get_run_logger().warning("%s", line)
    except Exception:  # a hook outside any run context
        logger.warning("%s", line)


async def _stop_job(resource: Resource, nemo: NemoClient) -> None:
    if resource.kind == "customization":
        await nemo.customizer.cancel_job(resource.ref)
    else:
        await nemo.evaluator.cancel_job(resource.ref)


async def _act(verdict: Verdict, nemo: NemoClient, *, leaving: str | None) -> str:
    """Do what the verdict says; returns what was done, in words. Never raises: every resource gets its turn."""
    resource = verdict.resource
    try:
        if verdict.action == "keep":
            return f"kept {resource.kind} {resource.ref}: {verdict.reason}"
        if resource.is_job:
            await _stop_job(resource, nemo)
            state_store().delete(job_users_name(resource.ref))
            return f"stopped {resource.kind} {resource.ref}: {verdict.reason}"
        namespace, name = resource.ref.split("/", 1)
        if verdict.reason.startswith("older than"):
            async with deployment_users_lock(leaving) as locked:
                if not locked:
                    return f"left deployment {resource.ref} running (its users could not be locked)"
                await nemo.deployments.delete(namespace, name)
            return f"stopped deployment {resource.ref}: {verdict.reason}"
        leaver = leaving or (verdict.over[0] if verdict.over else "")
        release = await release_deployment(namespace, name, leaver, nemo)
        return f"{release_line('deployment', resource.ref, release)} ({verdict.reason})"
    except Exception as exc:
        return f"could not {verdict.action} {resource.kind} {resource.ref}: {exc}"


async def reap(
    nemo: NemoClient,
    *,
    namespaces: Sequence[str] | None = None,
    max_age: timedelta | None = None,
    leaving: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[ReapedLine]:
    """Stop the jobs and deployments (of ``namespaces``; all when None) whose every owner is over.

    ``leaving``: a run that is ending (its hooks): only what it owns is looked at, and it counts as over.
    ``max_age``: also stop what is older, whoever uses it. ``dry_run``: say what would be done, do nothing.
    """
    state = state_store()
    adopters = all_job_users(state)
    owned = await list_owned(nemo, namespaces=namespaces, adopters=adopters)
    if leaving is not None:
        owned = [r for r in owned if leaving in r.owners]
    owners = {owner for r in owned for owner in r.owners} - ({leaving} if leaving else set())
    over = await runs_over(owners)
    moment = now or datetime.now(UTC)
    lines: list[ReapedLine] = []
    for resource in owned:
        verdict = judge(resource, over, now=moment, max_age=max_age, leaving=leaving)
        if verdict.action == "keep" and leaving is None:
            continue
        if dry_run:
            done = f"would {verdict.line()}"
        elif verdict.action == "keep" and leaving is not None and resource.is_job:
            remove_job_user(state, resource.ref, leaving)
            done = f"left {resource.kind} {resource.ref} running: {verdict.reason}"
        else:
            done = await _act(verdict, nemo, leaving=leaving)
        lines.append(
            ReapedLine(
                kind=resource.kind, ref=resource.ref, owners=list(resource.owners), action=verdict.action, done=done
            )
        )
    if leaving is None and not dry_run:
        live = {r.ref for r in owned if r.is_job}
        for job_id in set(adopters) - live:  # the job ended (or is gone): nobody waits for it any more
            state.delete(job_users_name(job_id))
    return lines


async def cleanup_run(run_id: str, nemo: NemoClient) -> list[str]:
    """Cancel the jobs run ``run_id`` started or took over that no other live run uses, and leave the
    deployments it used (deleted when no other live run uses them); returns what was done.

    Called from the flow's failure, crash and cancellation hooks, so it never raises: each failure is a line.
    """
    try:
        return [line.done for line in await reap(nemo, leaving=run_id)]
    except Exception as exc:
        return [f"could not list what run {run_id} left on NeMo: {exc}"]


@task(name="reap-orphans", cache_policy=NO_CACHE)
async def reap_orphans(namespace: str, nemo: NemoClient) -> list[str]:
    """Stop what runs that are over left in this run's namespace and nobody uses.

    Called once this run is done: any job it needed from a dead run it took over by then (same inputs, same
    keys), so a job whose runs are all over is waited on by nobody (say its candidate was dropped from the
    config, or new records changed its inputs) and would run on for nothing; a deployment they used is left
    by them (deleted unless a live run uses it).
    """
    done = [line.done for line in await reap(nemo, namespaces=[namespace])]
    for line in done:
        _log(f"reap-orphans: {line}")
    return done


# --- zombies ----------------------------------------------------------------------------------------------


async def _running_runs(client: PrefectClient, flow_names: Sequence[str]) -> list[FlowRun]:
    flows = FlowFilter(name=FlowFilterName(any_=list(flow_names)))
    running = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])))
    runs: list[FlowRun] = []
    offset = 0
    while True:
        page = await client.read_flow_runs(
            flow_filter=flows, flow_run_filter=running, sort=FlowRunSort.ID_DESC, limit=PAGE_SIZE, offset=offset
        )
        runs.extend(page)
        if len(page) < PAGE_SIZE:
            return runs
        offset += PAGE_SIZE


async def _last_heartbeat(client: PrefectClient, run: FlowRun, now: datetime) -> datetime | None:
    since = run.start_time or run.expected_start_time or (now - timedelta(days=7))
    page = await client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since, until=now),
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            order=EventOrder.DESC,
        ),
        limit=1,
    )
    return page.events[0].occurred if page.events else None


class ZombieLine(BaseModel):
    """A run found to be a zombie, and whether it was marked ``Crashed``."""

    flow_run_id: str
    name: str
    reason: str
    marked: bool


@task(name="mark-zombies", cache_policy=NO_CACHE)
async def mark_zombies(
    flow_names: Sequence[str] = PROJECT_FLOWS,
    zombie_after: timedelta = timedelta(minutes=10),
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[ZombieLine]:
    """Mark ``Crashed`` every run of ``flow_names`` that is ``Running`` but whose heartbeats stopped (the rule:
    :mod:`agent_flywheel.zombies`), so that Prefect, the workload lock and the reaper see it over."""
    found: list[ZombieLine] = []
    own = str(current_run.id or "")
    async with get_client() as client:
        moment = now or datetime.now(UTC)
        for run in await _running_runs(client, flow_names):
            if run.state is None or str(run.id) == own:
                continue
            activity = RunActivity(
                run_id=str(run.id),
                name=run.name,
                state_type=run.state.type.value,
                state_since=run.state.timestamp,
                last_heartbeat=await _last_heartbeat(client, run, moment),
            )
            reason = zombie_reason(activity, now=moment, after=zombie_after)
            if reason is None:
                continue
            if not dry_run:
                await client.set_flow_run_state(run.id, Crashed(message=reason), force=True)
                _log(f"mark-zombies: flow run '{run.name}' ({run.id}) marked Crashed: {reason}")
            found.append(ZombieLine(flow_run_id=str(run.id), name=run.name, reason=reason, marked=not dry_run))
    return found


@task(name="reap-left-behind", cache_policy=NO_CACHE)
async def reap_left_behind(
    nemo: NemoClient,
    namespaces: Sequence[str] | None = None,
    max_age: timedelta | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[ReapedLine]:
    """The reaper's pass over NeMo: stop what belongs only to runs that are over (or is older than ``max_age``)."""
    lines = await reap(nemo, namespaces=namespaces, max_age=max_age, dry_run=dry_run, now=now)
    for line in lines:
        _log(f"reaper: {line.done}")
    return lines


def table(lines: Sequence[ReapedLine], zombies: Sequence[ZombieLine]) -> list[dict[str, Any]]:
    """The rows of the reaper's ``reaper`` artifact."""
    rows: list[dict[str, Any]] = [
        {
            "what": "flow run",
            "ref": z.flow_run_id,
            "owners": z.name,
            "done": f"{'marked Crashed' if z.marked else 'would mark Crashed'}: {z.reason}",
        }
        for z in zombies
    ]
    rows += [
        {"what": line.kind, "ref": line.ref, "owners": ", ".join(line.owners), "done": line.done} for line in lines
    ]
    return rows
