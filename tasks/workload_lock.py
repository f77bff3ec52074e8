"""At most one flywheel run per workload at a time, whichever deployment, worker or machine started it.

The lock is a Prefect global concurrency limit of one slot per workload (``flywheel-workload-<workload>``,
created on first use), held under a lease that a thread renews every 90 s; a Prefect variable of the same
name records the holder (flow run id, lease id), so the next run can name it, and free its slot when the
holder is over. How long a dead run can keep the workload:

- a run that failed, crashed or was cancelled releases the slot on its way out;
- a run killed outright (SIGKILL, lost pod) stops renewing: its lease expires after
  :data:`WORKLOAD_LEASE_S` and the Prefect server's repossessor frees the slot; a run that finds it held
  by a run Prefect reports crashed, or by a process of this host that is gone, frees it at once.

A run that finds the workload held by a live run waits up to ``wait_s`` (0 by default), then is skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prefect.client.schemas.objects import FlowRun, StateType
from prefect.variables import Variable

from tasks.ownership import (
    Lease,
    ensure_limit,
    flow_run_label,
    force_free_one,
    owner_is_dead,
    read_flow_run,
    release_lease,
    run_dir,
    try_acquire,
)

logger = logging.getLogger(__name__)

#: Renewed every 90 s; a holder that stops renewing loses the workload this long after its last renewal.
WORKLOAD_LEASE_S = 120.0
#: How often a run that waits for the workload asks again.
POLL_S = 10.0


def workload_lock_name(workload_id: str) -> str:
    """``flywheel-workload-<workload>``: valid as a concurrency limit and a variable name for any workload id
    (an id that had to be changed gets a hash of the original, so two ids never share a lock)."""
    label = re.sub(r"[^a-z0-9-]+", "-", workload_id.lower()).strip("-")[:80]
    if label != workload_id:
        label = f"{label or 'workload'}-{hashlib.sha256(workload_id.encode('utf-8')).hexdigest()[:8]}"
    return f"flywheel-workload-{label}"


@dataclass(frozen=True)
class WorkloadClaim:
    """Whether this run holds its workload; when not, who does (a line for the log and the final state)."""

    acquired: bool
    holder: str = ""


async def _holder_record(name: str) -> dict[str, Any]:
    value = await Variable.aget(name)
    return value if isinstance(value, dict) else {}


def _left_without_releasing(run: FlowRun | None, flow_run_id: str) -> bool:
    """A holder that ended without giving its slot back: crashed, or its process on this host is gone.

    A run that completed, failed or was cancelled released its slot on the way out, so the slot is held by
    a newer run (that has not recorded itself yet), not by it.
    """
    if owner_is_dead(run_dir(flow_run_id)):
        return True
    return run is not None and run.state is not None and run.state.type is StateType.CRASHED


async def _free_if_dead(name: str, own_run_id: str) -> str:
    """Free the slot when its recorded holder is this very run (an earlier attempt) or ended without
    releasing it; otherwise return a description of the holder."""
    record = await _holder_record(name)
    holder_id = str(record.get("flow_run_id") or "")
    if not holder_id:
        return "a run that has not recorded itself yet"
    run = await read_flow_run(holder_id)
    if holder_id == own_run_id or _left_without_releasing(run, holder_id):
        logger.warning("%s was held by %s, which ended without releasing it; freeing it", name, holder_id)
        if not await release_lease(record.get("lease_id")):
            await force_free_one(name)
        return ""
    if run is not None and run.state is not None and run.state.is_final():
        return f"a run that started after {flow_run_label(run, holder_id)} and has not recorded itself yet"
    return flow_run_label(run, holder_id)


@asynccontextmanager
async def hold_workload(
    workload_id: str,
    flow_run_id: str,
    *,
    wait_s: float = 0.0,
    poll_s: float = POLL_S,
    lease_s: float = WORKLOAD_LEASE_S,
) -> AsyncIterator[WorkloadClaim]:
    """Hold the workload for the ``with`` block, or yield a claim that says who holds it.

    Waits up to ``wait_s`` for a live holder to finish (asking every ``poll_s``). An inactive limit (set so
    by an operator in the Prefect UI) switches the lock off.
    """
    name = workload_lock_name(workload_id)
    if not await ensure_limit(name):
        logger.warning("%s is inactive: runs of workload %s are not kept apart", name, workload_id)
        yield WorkloadClaim(acquired=True)
        return
    deadline = time.monotonic() + wait_s
    holder = ""
    while (lease := await try_acquire(name, flow_run_id, lease_s)) is None:
        holder = await _free_if_dead(name, flow_run_id)
        if not holder:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        logger.info("workload %s is held by %s; waiting (%.0f s left)", workload_id, holder, left)
        await asyncio.sleep(min(poll_s, left))
    if lease is None:
        yield WorkloadClaim(acquired=False, holder=holder)
        return
    try:
        await Variable.aset(name, record_of(flow_run_id, lease), overwrite=True)
        yield WorkloadClaim(acquired=True)
    finally:
        await lease.release()


def record_of(flow_run_id: str, lease: Lease) -> dict[str, Any]:
    """What the holder records about itself, so that others can name it and free a dead one's slot."""
    return {"flow_run_id": flow_run_id, "lease_id": str(lease.lease_id), "acquired_at": time.time()}
