"""Who owns what across flywheel runs: is a run still alive, and short-held locks on the Prefect server.

Liveness comes from the Prefect API (a run in a final state is over) and, for runs on this host, from the
process that claimed the run's directory (a run killed with SIGKILL stays ``Running`` in Prefect until
something marks it crashed, but its process is gone). Unsure means alive: nothing is taken from a run that
might still use it.

Locks are Prefect global concurrency limits of one slot, created on first use, held with a lease that a
thread renews (so a run whose event loop is busy in a long synchronous task keeps its lease) and that the
server revokes when its holder stops renewing it (see docs/operations.md, "One run per workload").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, FlowRun
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from agent_flywheel.paths import state_dir

logger = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
#: The one lock around every read-modify-write of a deployment's list of users (see tasks.nemo_jobs).
DEPLOYMENT_USERS_LOCK = "flywheel-deployment-users"
#: A lease the server has not seen renewed for this long is revoked (Prefect's minimum is 60 s).
MUTEX_LEASE_S = 60.0
#: How long to wait for the deployment-users lock before taking it as left behind by a dead run: it is
#: held for a read and a write, seconds at most, so a minute without it means its holder is gone.
MUTEX_WAIT_S = 60.0
#: What the server answers to renewing a lease it does not hold (410; 404 on older servers).
LEASE_GONE = (404, 410)


# --- liveness ---------------------------------------------------------------------------------------


def run_dir(flow_run_id: str) -> Path:
    """The local state directory of a flywheel run (its ledger, datasets, quarantine)."""
    return state_dir("runs", flow_run_id)


def claim_run_dir(directory: Path) -> None:
    """Record which process runs in ``directory``, so a later run on this host can tell that it died."""
    directory.mkdir(parents=True, exist_ok=True)
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    (directory / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")


def owner_is_dead(directory: Path) -> bool:
    """True only when the run's process is known to be gone (same host, no such pid); unsure means alive."""
    try:
        owner = json.loads((directory / OWNER_FILE).read_text(encoding="utf-8"))
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. EPERM: the pid exists
        return False
    return False


async def read_flow_run(flow_run_id: str) -> FlowRun | None:
    """The flow run, or None when the id is not a run this Prefect server knows (or it cannot be asked)."""
    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        return None
    try:
        async with get_client() as client:
            return await client.read_flow_run(run_id)
    except ObjectNotFound:
        return None
    except (httpx.HTTPError, RuntimeError) as exc:
        logger.warning("could not read flow run %s from Prefect (%s)", flow_run_id, exc)
        return None


async def flow_run_is_over(flow_run_id: str) -> bool:
    """True when the run can no longer use anything: Prefect has it in a final state, or its process on this
    host is gone. A run Prefect does not know, or that cannot be asked about, counts as alive."""
    if owner_is_dead(run_dir(flow_run_id)):
        return True
    run = await read_flow_run(flow_run_id)
    return run is not None and run.state is not None and run.state.is_final()


def flow_run_label(run: FlowRun | None, flow_run_id: str) -> str:
    """``'name' (id), state, <UI link>`` for log lines that name another run."""
    from prefect.utilities.urls import url_for

    if run is None:
        return f"flow run {flow_run_id}"
    state = run.state.name if run.state is not None else "unknown state"
    link = url_for("flow-run", obj_id=run.id)
    return f"flow run '{run.name}' ({run.id}, {state}{', ' + link if link else ''})"


# --- global concurrency limits of one slot ------------------------------------------------------------


async def ensure_limit(name: str, slots: int = 1) -> bool:
    """Create the global concurrency limit ``name`` when missing; False when it exists but is inactive.

    An existing limit is left as the operator set it (an inactive one switches the lock off).
    """
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                logger.info("created the global concurrency limit %s (%d slot)", name, slots)
            except ObjectAlreadyExists:  # created at the same moment by another run
                pass
            return True
    return bool(limit.active)


class Lease:
    """A slot of a global concurrency limit held under a lease that a daemon thread renews until released."""

    def __init__(self, name: str, lease_id: UUID, duration_s: float) -> None:
        self.name = name
        self.lease_id = lease_id
        self.duration_s = duration_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(0.75 * self.duration_s):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(self.lease_id, self.duration_s)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in LEASE_GONE:
                    logger.error("the lease on %s was revoked: another run may take it now", self.name)
                    return
                logger.warning("could not renew the lease on %s (%s); trying again", self.name, exc)
            except Exception as exc:  # the next beat tries again; the slot is lost only if every beat fails
                logger.warning("could not renew the lease on %s (%s); trying again", self.name, exc)

    async def release(self) -> None:
        """Stop renewing and give the slot back (a lease the server already revoked is no error)."""
        self._stop.set()
        try:
            async with get_client() as client:
                await client.release_concurrency_slots_with_lease(self.lease_id)
        except (httpx.HTTPError, RuntimeError) as exc:
            logger.warning("could not release %s (%s); the server frees it when the lease expires", self.name, exc)


def _locked(exc: httpx.HTTPStatusError) -> bool:
    return exc.response.status_code == 423


async def try_acquire(name: str, holder_run_id: str | None, duration_s: float) -> Lease | None:
    """Take the limit's slot now if it is free (None when it is taken); the limit must exist."""
    holder = None
    if holder_run_id:
        try:
            holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(holder_run_id))
        except ValueError:
            holder = None
    async with get_client() as client:
        try:
            response = await client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=duration_s, holder=holder
            )
        except httpx.HTTPStatusError as exc:
            if _locked(exc):
                return None
            raise
    body = response.json()
    if not body.get("limits"):
        raise RuntimeError(f"the global concurrency limit {name} does not exist or is inactive")
    return Lease(name, UUID(str(body["lease_id"])), duration_s)


async def release_lease(lease_id: str | None) -> bool:
    """Give back the slot held under another run's lease; False when the server does not know that lease
    (it was released already, or a temporary server that knew it is gone, or a restart lost it)."""
    if not lease_id:
        return False
    try:
        lease = UUID(lease_id)
    except ValueError:
        return False
    async with get_client() as client:
        try:
            await client.renew_concurrency_lease(lease, MUTEX_LEASE_S)  # 410 unless the server holds it
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in LEASE_GONE:
                return False
            raise
        await client.release_concurrency_slots_with_lease(lease)
    return True


async def force_free_one(name: str) -> None:
    """Free one slot of a full limit whose holder is gone and whose lease no server knows any more."""
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(name)
        if limit.active_slots >= limit.limit:
            await client.release_concurrency_slots(names=[name], slots=1, occupancy_seconds=1.0)
            logger.warning("freed a slot of %s that a run which is gone still held", name)


@asynccontextmanager
async def deployment_users_lock(holder_run_id: str | None) -> AsyncIterator[bool]:
    """Hold :data:`DEPLOYMENT_USERS_LOCK` while a deployment's users are read and written; yields whether it
    is held. A lock still taken after :data:`MUTEX_WAIT_S` was left by a run that died holding it and is
    freed; when the server cannot be asked at all, the caller goes on unlocked (it is told so)."""
    lease: Lease | None = None
    try:
        await ensure_limit(DEPLOYMENT_USERS_LOCK)
        deadline = time.monotonic() + MUTEX_WAIT_S
        while (lease := await try_acquire(DEPLOYMENT_USERS_LOCK, holder_run_id, MUTEX_LEASE_S)) is None:
            if time.monotonic() >= deadline:
                logger.warning("%s was held for over %.0f s: freeing it", DEPLOYMENT_USERS_LOCK, MUTEX_WAIT_S)
                await force_free_one(DEPLOYMENT_USERS_LOCK)
                deadline = time.monotonic() + MUTEX_WAIT_S
            await asyncio.sleep(0.2)
    except (httpx.HTTPError, RuntimeError, ObjectNotFound) as exc:
        logger.warning("could not take %s (%s)", DEPLOYMENT_USERS_LOCK, exc)
        lease = None
    try:
        yield lease is not None
    finally:
        if lease is not None:
            await lease.release()
