"""Two flywheel runs share one NIM deployment; cancelling one leaves it up for the other (issue #12).

Deployment names depend only on the model, so runs of different workloads that evaluate the same model
use one deployment. Run A creates it, run B joins it, A is cancelled while both have evaluations queued
on it: A leaves the deployment (B still uses it), B's evaluations finish, and B, the last user, deletes it.
The evaluations are held in ``pending`` (a simulator fault, on its simulated clock) until the test moves
the clock on, so nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agent_flywheel.config import FlywheelConfig, parse_config
from agent_flywheel.nemo.deployments import USERS_FIELD
from agent_flywheel.nemo.payloads import deployment_name
from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig

pytestmark = pytest.mark.integration

SMALL = "meta/llama-3.2-1b-instruct"
NAMESPACE = "shared"
CLIENT = "demo"
SOURCE_WORKLOAD = "customer-support"  # what the demo agent logs
WORKLOADS = ("orders-a", "orders-b")
HELD_S = 100_000.0  # simulated seconds an evaluation stays pending, until the test advances the clock


def _config() -> FlywheelConfig:
    return parse_config(
        {
            "namespace": NAMESPACE,
            "nims": [{"model_name": SMALL}],
            "data_split_config": {"eval_size": 40, "min_total_records": 50, "limit": 1000},
            "evaluation_config": {"poll_interval_s": 0.2, "timeout_s": 600},
        },
        FlywheelConfig,
        "test:shared",
    )


@pytest.fixture(scope="module")
def stack(start_local_stack: Callable[..., LocalStackConfig]) -> LocalStackConfig:
    """A stack of its own, with the demo agent's traffic logged under two workloads."""
    stack = start_local_stack()
    report = run_traffic(stack.url("agent"), requests=150, concurrency=8, seed=5)
    assert report.failed == 0
    assert httpx.post(f"{stack.url('agent')}/admin/flush", timeout=60).status_code == 200
    logs = stack.url("logserver")
    found = httpx.post(
        f"{logs}/flywheel/_search",
        json={"size": 5000, "query": {"term": {"workload_id": SOURCE_WORKLOAD}}},
        timeout=60,
    ).json()["hits"]["hits"]
    assert len(found) >= 100
    lines = []
    for workload in WORKLOADS:
        for hit in found:
            lines.append(json.dumps({"index": {"_index": "flywheel", "_id": f"{workload}-{hit['_id']}"}}))
            lines.append(json.dumps({**hit["_source"], "workload_id": workload}))
    bulk = httpx.post(
        f"{logs}/_bulk",
        params={"refresh": "true"},
        content="\n".join(lines) + "\n",
        headers={"content-type": "application/x-ndjson"},
        timeout=60,
    )
    assert bulk.status_code == 200 and not bulk.json()["errors"]
    return stack


def _get(stack: LocalStackConfig, path: str, **params: Any) -> Any:
    response = httpx.get(f"{stack.url('nemo')}{path}", params={"page_size": 100, **params}, timeout=30)
    response.raise_for_status()
    return response.json()


def _evaluations(stack: LocalStackConfig, workload: str) -> list[dict[str, Any]]:
    jobs = _get(stack, "/v1/evaluation/jobs", **{"filter[namespace]": NAMESPACE})["data"]
    return [j for j in jobs if (j.get("custom_fields") or {}).get("flywheel_workload_id") == workload]


def _deployment(stack: LocalStackConfig) -> dict[str, Any] | None:
    response = httpx.get(
        f"{stack.url('nemo')}/v1/deployment/model-deployments/{NAMESPACE}/{deployment_name(SMALL)}", timeout=30
    )
    return None if response.status_code == 404 else response.json()


def _admin(stack: LocalStackConfig, path: str, body: dict[str, Any] | None) -> None:
    url = f"{stack.url('nemo')}{path}"
    response = httpx.delete(url, timeout=10) if body is None else httpx.post(url, json=body, timeout=10)
    response.raise_for_status()


async def _until(what: str, check: Callable[[], Any], *others: asyncio.Task[Any]) -> Any:
    """Poll ``check`` until it returns something truthy; fail at once if a run ended meanwhile."""
    for _ in range(6000):  # generous: 10 minutes on a busy machine
        value = check()
        if value:
            return value
        for task in others:
            if task.done():
                raise AssertionError(f"a run ended before {what}: {task.exception() or task.result()}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_cancelling_one_run_leaves_the_shared_deployment_to_the_other(stack: LocalStackConfig) -> None:
    from flows.flywheel import flywheel

    cfg = _config()
    small_jobs: dict[str, list[dict[str, Any]]] = {}

    def small_evaluations(workload: str) -> list[dict[str, Any]]:
        jobs = [j for j in _evaluations(stack, workload) if j["custom_fields"].get("flywheel_target_model") == SMALL]
        return jobs if len(jobs) == 2 else []  # base-eval and icl-eval

    async def scenario() -> Any:
        run_a = asyncio.create_task(flywheel(workload_id=WORKLOADS[0], client_id=CLIENT, config=cfg))
        small_jobs["a"] = await _until(
            "run A's evaluations on the deployment", lambda: small_evaluations(WORKLOADS[0]), run_a
        )
        run_b = asyncio.create_task(flywheel(workload_id=WORKLOADS[1], client_id=CLIENT, config=cfg))
        small_jobs["b"] = await _until(
            "run B's evaluations on it", lambda: small_evaluations(WORKLOADS[1]), run_a, run_b
        )
        a_id, b_id = (
            small_jobs["a"][0]["custom_fields"]["flywheel_run_id"],
            small_jobs["b"][0]["custom_fields"]["flywheel_run_id"],
        )
        shared = _deployment(stack)
        assert shared is not None and shared["custom_fields"][USERS_FIELD] == f"{a_id},{b_id}"

        run_a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run_a
        left = _deployment(stack)
        assert left is not None, "cancelling run A tore down the deployment run B is evaluating on"
        assert left["custom_fields"][USERS_FIELD] == b_id and left["status_details"]["status"] == "ready"

        _admin(stack, "/admin/faults", None)
        _admin(stack, "/admin/clock", {"advance_s": 2 * HELD_S})  # B's evaluations leave pending
        return await run_b

    _admin(stack, "/admin/faults", {"evaluation_pending_s": HELD_S})
    try:
        outcome = asyncio.run(scenario())
    finally:
        _admin(stack, "/admin/faults", None)
    assert outcome.outcome in {"promoted", "no-candidate"}, outcome.reason
    statuses = {j["id"]: j["status"] for j in _evaluations(stack, WORKLOADS[1])}
    assert statuses and set(statuses.values()) == {"completed"}, statuses
    cancelled = {j["id"] for j in _evaluations(stack, WORKLOADS[0]) if j["status"] in ("cancelled", "cancelling")}
    assert {j["id"] for j in small_jobs["a"]} <= cancelled
    assert _deployment(stack) is None  # B was the last user
