"""One flywheel run per workload at a time, on this session's Prefect server (a real server process).

Each probe is a flow run that takes its workload's lock and holds it until the test lets it go, so two
runs of one workload really are in flight at once. Nothing here depends on timing: the test waits on
events the probes set, and a probe that waits for the workload asks again every 0.1 s.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.runtime import flow_run
from prefect.states import Crashed
from prefect.variables import Variable

from agent_flywheel.config import FlywheelConfig, NIMConfig
from tasks.ownership import try_acquire
from tasks.workload_lock import hold_workload, record_of, workload_lock_name

pytestmark = pytest.mark.integration

EVENTS: dict[str, asyncio.Event] = {}
RUNS: dict[str, tuple[str, str]] = {}


def _event(name: str) -> asyncio.Event:
    return EVENTS.setdefault(name, asyncio.Event())


@flow(name="workload-lock-probe")
async def probe(workload_id: str, key: str, wait_s: float = 0.0) -> str:
    """Hold ``workload_id`` until ``<key>-release`` is set; returns "ran", or "busy: <who holds it>"."""
    RUNS[key] = (str(flow_run.id), str(flow_run.name))
    async with hold_workload(workload_id, str(flow_run.id), wait_s=wait_s, poll_s=0.1) as claim:
        if not claim.acquired:
            return f"busy: {claim.holder}"
        _event(f"{key}-acquired").set()
        await _event(f"{key}-release").wait()
        return "ran"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_lock_names_are_valid_for_any_workload_id_and_never_shared() -> None:
    assert workload_lock_name("customer-support") == "flywheel-workload-customer-support"
    odd = workload_lock_name("<workflow>")
    assert odd.startswith("flywheel-workload-workflow-") and odd != workload_lock_name("workflow")
    assert workload_lock_name("Orders/EU") != workload_lock_name("orders-eu")
    assert all(c.isalnum() or c == "-" for c in workload_lock_name("a b/c%d&e>f<g"))


def test_a_second_run_of_a_held_workload_is_skipped_naming_the_holder() -> None:
    workload = _unique("busy")

    async def scenario() -> tuple[str, str, str]:
        EVENTS.clear()
        first = asyncio.create_task(probe(workload, "a"))
        await asyncio.wait_for(_event("a-acquired").wait(), timeout=300)
        second = await probe(workload, "b")
        other_workload = await _other_workload_runs_meanwhile()
        _event("a-release").set()
        await first
        _event("c-release").set()
        third = await probe(workload, "c")  # the holder is done: the workload is free again
        return second, other_workload, third

    async def _other_workload_runs_meanwhile() -> str:
        _event("d-release").set()
        return await probe(_unique("other"), "d")

    second, other_workload, third = asyncio.run(scenario())
    holder_id, holder_name = RUNS["a"]
    assert second.startswith(f"busy: flow run '{holder_name}' ({holder_id}, Running")
    assert other_workload == "ran"
    assert third == "ran"


def test_a_run_that_may_wait_runs_once_the_holder_is_done(caplog: pytest.LogCaptureFixture) -> None:
    workload = _unique("wait")
    caplog.set_level(logging.INFO, logger="tasks.workload_lock")

    async def scenario() -> str:
        EVENTS.clear()
        first = asyncio.create_task(probe(workload, "a"))
        await asyncio.wait_for(_event("a-acquired").wait(), timeout=300)
        _event("b-release").set()
        second = asyncio.create_task(probe(workload, "b", wait_s=600))
        while not any("waiting" in r.getMessage() for r in caplog.records):  # b asked, found a, waits
            assert not second.done(), second.result()
            await asyncio.sleep(0.05)
        _event("a-release").set()
        await first
        return await second

    assert asyncio.run(scenario()) == "ran"
    assert any(f"workload {workload} is held by flow run '{RUNS['a'][1]}'" in r.getMessage() for r in caplog.records)


async def _dead_holder(workload: str, *, lease_known: bool) -> str:
    """A run that took the workload and crashed without giving it back; returns its flow run id."""
    name = workload_lock_name(workload)
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        dead = await client.create_flow_run(probe, parameters={"workload_id": workload, "key": "dead"})
        await client.set_flow_run_state(dead.id, Crashed(message="killed"), force=True)
        if lease_known:
            lease = await try_acquire(name, str(dead.id), 120.0)
            assert lease is not None
            lease._stop.set()  # the dead run renews nothing
            record: dict[str, Any] = record_of(str(dead.id), lease)
        else:  # the temporary server that knew its lease died with it: a slot taken, no lease behind it
            await client.increment_concurrency_slots(names=[name], slots=1, mode="concurrency")
            record = {"flow_run_id": str(dead.id), "lease_id": str(uuid.uuid4()), "acquired_at": 0}
        limit = await client.read_global_concurrency_limit_by_name(name)
        assert limit.active_slots == 1
    await Variable.aset(name, record, overwrite=True)
    return str(dead.id)


@pytest.mark.parametrize("lease_known", [True, False], ids=["lease-expires-later", "lease-lost"])
def test_a_workload_held_by_a_crashed_run_is_taken_over_at_once(
    lease_known: bool, caplog: pytest.LogCaptureFixture
) -> None:
    workload = _unique("crashed")
    caplog.set_level(logging.WARNING, logger="tasks.workload_lock")

    async def scenario() -> tuple[str, str]:
        EVENTS.clear()
        dead = await _dead_holder(workload, lease_known=lease_known)
        _event("a-release").set()
        return dead, await probe(workload, "a")

    dead, result = asyncio.run(scenario())
    assert result == "ran"
    assert any(f"held by {dead}, which ended without releasing it" in r.getMessage() for r in caplog.records)

    async def slots() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(workload_lock_name(workload))).active_slots

    assert asyncio.run(slots()) == 0  # and the run gave it back when it was done


def test_the_flywheel_skips_a_busy_workload_and_says_so_in_its_final_state() -> None:
    from flows.flywheel import flywheel

    workload = _unique("flywheel")
    cfg = FlywheelConfig(nims=[NIMConfig(model_name="meta/llama-3.2-1b-instruct")])

    async def scenario() -> Any:
        EVENTS.clear()
        holder = asyncio.create_task(probe(workload, "a"))
        await asyncio.wait_for(_event("a-acquired").wait(), timeout=300)
        state = await flywheel(workload_id=workload, client_id="c", config=cfg, return_state=True)
        _event("a-release").set()
        await holder
        return state

    state = asyncio.run(scenario())
    holder_id, holder_name = RUNS["a"]
    assert state.is_completed()
    assert state.message.startswith(
        f"flywheel {workload}/c: workload-busy: skipped: workload {workload} is held by flow run '{holder_name}'"
    )
    assert holder_id in state.message
    outcome = state.result()
    assert outcome.outcome == "workload-busy" and outcome.mlflow_run_id == ""
