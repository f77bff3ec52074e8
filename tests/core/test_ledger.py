"""What runs own on NeMo, read from the platform, and what to stop; the zombie rule; the adopters of a job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agent_flywheel.ledger import (
    Resource,
    add_job_user,
    all_job_users,
    judge,
    list_owned,
    read_job_users,
    remove_job_user,
)
from agent_flywheel.nemo import NemoClient, NemoEndpoints
from agent_flywheel.nemo.deployments import managed_fields
from agent_flywheel.state import MemoryStateStore
from agent_flywheel.zombies import RunActivity, zombie_reason

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEAD, LIVE, OTHER = "run-dead", "run-live", "run-other"


# --- judge --------------------------------------------------------------------------------------------


def job(*owners: str, created: datetime | None = None) -> Resource:
    return Resource("customization", "cust-1", owners, created_at=created)


def deployment(*owners: str) -> Resource:
    return Resource("deployment", "ns/model", owners)


def test_a_job_is_stopped_only_when_every_run_using_it_is_over() -> None:
    assert judge(job(DEAD), {DEAD}, now=NOW).action == "stop"
    kept = judge(job(DEAD, LIVE), {DEAD}, now=NOW)  # adopted by a live run
    assert kept.action == "keep" and LIVE in kept.reason
    assert judge(job(LIVE), set(), now=NOW).action == "keep"
    assert judge(job(DEAD, OTHER), {DEAD, OTHER}, now=NOW).over == (DEAD, OTHER)


def test_a_deployment_drops_the_users_that_are_over_and_goes_with_the_last() -> None:
    dropped = judge(deployment(DEAD, LIVE), {DEAD}, now=NOW)
    assert dropped.action == "drop-users" and dropped.over == (DEAD,)
    assert judge(deployment(DEAD), {DEAD}, now=NOW).action == "stop"
    assert judge(deployment(), set(), now=NOW).action == "stop"  # managed, nobody on its list
    assert judge(deployment(LIVE), set(), now=NOW).action == "keep"


def test_a_leaving_run_counts_as_over_for_what_it_owns() -> None:
    assert judge(job(LIVE), set(), now=NOW, leaving=LIVE).action == "stop"
    assert judge(job(LIVE, OTHER), set(), now=NOW, leaving=LIVE).action == "keep"
    left = judge(deployment(LIVE, OTHER), set(), now=NOW, leaving=LIVE)
    assert left.action == "drop-users" and left.over == (LIVE,)


def test_anything_older_than_the_limit_is_stopped_whoever_uses_it() -> None:
    old = job(LIVE, created=NOW - timedelta(hours=30))
    verdict = judge(old, set(), now=NOW, max_age=timedelta(hours=24))
    assert verdict.action == "stop" and "30.0 h > 24 h" in verdict.reason
    assert (
        judge(job(LIVE, created=NOW - timedelta(hours=2)), set(), now=NOW, max_age=timedelta(hours=24)).action == "keep"
    )
    assert judge(job(LIVE), set(), now=NOW, max_age=timedelta(hours=1)).action == "keep"  # age unknown


# --- the adopters of a job ------------------------------------------------------------------------------


def test_job_users_are_added_once_listed_and_removed_with_the_last() -> None:
    state = MemoryStateStore()
    assert add_job_user(state, "cust-1", "customization", LIVE) == [LIVE]
    assert add_job_user(state, "cust-1", "customization", LIVE) == [LIVE]
    add_job_user(state, "cust-1", "customization", OTHER)
    add_job_user(state, "eval-2", "evaluation", LIVE)
    assert all_job_users(state) == {"cust-1": [LIVE, OTHER], "eval-2": [LIVE]}
    remove_job_user(state, "cust-1", LIVE)
    assert read_job_users(state, "cust-1") == [OTHER]
    remove_job_user(state, "cust-1", OTHER)
    remove_job_user(state, "cust-1", OTHER)  # again: nothing left, no error
    assert all_job_users(state) == {"eval-2": [LIVE]}


# --- list_owned, against a fake platform -----------------------------------------------------------------


class Platform:
    """Lists jobs and deployments the NeMo way, honouring ``filter[status]`` and ``filter[namespace]``."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {
            "/v1/customization/jobs": [],
            "/v1/evaluation/jobs": [],
            "/v1/deployment/model-deployments": [],
        }
        self.queries: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.queries.append(params)
        items = self.items.get(request.url.path)
        if items is None:
            return httpx.Response(404, json={"detail": "not found"})
        matching = [
            item
            for item in items
            if params.get("filter[status]") in (None, item.get("status"), item.get("status_details", {}).get("status"))
            and params.get("filter[namespace]") in (None, item.get("namespace"))
        ]
        page = int(params.get("page", 1))
        return httpx.Response(200, json={"data": matching if page == 1 else []})


def owned(platform: Platform, **kwargs: Any) -> list[Resource]:
    async def read() -> list[Resource]:
        endpoints = NemoEndpoints.shared("http://nemo.test", "http://ds.test", "http://nim.test")
        async with NemoClient(endpoints, transport=httpx.MockTransport(platform)) as nemo:
            return await list_owned(nemo, **kwargs)

    return asyncio.run(read())


def test_live_labelled_jobs_and_managed_deployments_are_listed_with_their_owners() -> None:
    platform = Platform()
    platform.items["/v1/customization/jobs"] = [
        {"id": "cust-run", "namespace": "ns", "status": "running", "custom_fields": {"flywheel_run_id": DEAD}},
        {"id": "cust-done", "namespace": "ns", "status": "completed", "custom_fields": {"flywheel_run_id": DEAD}},
        {"id": "cust-theirs", "namespace": "ns", "status": "running", "custom_fields": {}},
        {"id": "cust-other-ns", "namespace": "other", "status": "pending", "custom_fields": {"flywheel_run_id": DEAD}},
    ]
    platform.items["/v1/evaluation/jobs"] = [
        {
            "id": "eval-1",
            "namespace": "ns",
            "status": "created",
            "created_at": "2026-03-01T10:00:00",
            "custom_fields": {"flywheel_run_id": LIVE, "flywheel_eval_mode": "base-eval", "flywheel_target_model": "m"},
        }
    ]
    platform.items["/v1/deployment/model-deployments"] = [
        {"name": "m", "namespace": "ns", "custom_fields": managed_fields(DEAD, [DEAD, LIVE])},
        {"name": "platform-team", "namespace": "ns", "custom_fields": {}},
    ]
    found = {r.ref: r for r in owned(platform, namespaces=["ns"], adopters={"cust-run": [LIVE]})}
    assert set(found) == {"cust-run", "eval-1", "ns/m"}
    assert found["cust-run"].owners == (DEAD, LIVE)
    assert found["eval-1"].description == "base-eval m" and found["eval-1"].created_at == NOW - timedelta(hours=2)
    assert found["ns/m"].owners == (DEAD, LIVE) and found["ns/m"].kind == "deployment"
    asked = {q.get("filter[status]") for q in platform.queries if "filter[status]" in q}
    assert asked == {"created", "pending", "running"}  # finished jobs are never read
    everywhere = {r.ref for r in owned(platform)}
    assert "cust-other-ns" in everywhere


# --- zombies ----------------------------------------------------------------------------------------------


def activity(state: str = "RUNNING", *, beat: timedelta | None, changed: timedelta = timedelta(hours=3)) -> RunActivity:
    return RunActivity("id", "crimson-fox", state, NOW - changed, None if beat is None else NOW - beat)


def test_a_running_run_whose_heartbeats_stopped_is_a_zombie() -> None:
    reason = zombie_reason(activity(beat=timedelta(minutes=25)), now=NOW, after=timedelta(minutes=10))
    assert reason is not None and "no heartbeat for 25.0 min" in reason and "limit is 10.0 min" in reason


def test_a_recent_heartbeat_or_state_change_keeps_a_run_alive() -> None:
    after = timedelta(minutes=10)
    assert zombie_reason(activity(beat=timedelta(minutes=9)), now=NOW, after=after) is None
    assert (
        zombie_reason(activity(beat=timedelta(minutes=30), changed=timedelta(minutes=2)), now=NOW, after=after) is None
    )


def test_without_heartbeats_or_when_not_running_nothing_is_judged() -> None:
    assert zombie_reason(activity(beat=None, changed=timedelta(days=3)), now=NOW) is None
    assert zombie_reason(activity("COMPLETED", beat=timedelta(days=1)), now=NOW) is None
    assert zombie_reason(activity("PENDING", beat=timedelta(days=1)), now=NOW) is None


def test_a_zero_limit_takes_any_run_whose_last_sign_of_life_is_past() -> None:
    assert zombie_reason(activity(beat=timedelta(seconds=1), changed=timedelta(seconds=5)), now=NOW, after=timedelta(0))
    with pytest.raises(ValueError, match="negative"):
        zombie_reason(activity(beat=timedelta(0)), now=NOW, after=timedelta(minutes=-1))
