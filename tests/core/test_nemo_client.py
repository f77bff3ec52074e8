"""The NeMo client against ``httpx.MockTransport``: retries, errors, secrets, statuses, idempotency, polling."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import pickle
import random
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agent_flywheel.nemo import (
    IdempotencyKey,
    JobBlockedError,
    JobFailedError,
    JobStalledError,
    JobTimeoutError,
    NemoAPIError,
    NemoClient,
    NemoEndpoints,
    Observation,
    Phase,
    PollSettings,
    classify,
    content_hash,
    wait_for,
)
from agent_flywheel.nemo.customizer import cancel_path
from agent_flywheel.nemo.http import RetryPolicy, filter_params
from agent_flywheel.nemo.models import ModelDeployment
from agent_flywheel.nemo.status import is_failure, is_success, is_waiting

API_KEY = "sk-nemo-secret-0123456789"
JUDGE_KEY = "nvapi-judge-secret-abcdef"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeNemo:
    """Routes ``(method, path)`` to handlers; unrouted calls are 404. Records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Handler | list[Handler]] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, *handlers: Handler) -> None:
        """One handler answers every call; several answer in turn (the last one repeats)."""
        self.routes[(method, path)] = list(handlers) if len(handlers) > 1 else handlers[0]

    def calls(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.url.path == path)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return httpx.Response(404, json={"detail": f"no route {request.method} {request.url.path}"})
        if not isinstance(route, list):
            return route(request)
        return (route.pop(0) if len(route) > 1 else route[0])(request)


def reply(status: int, body: Any = None, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers or None)


def fail(exc: type[Exception]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)  # type: ignore[call-arg]

    return handler


class Sleeps:
    """An injected sleep: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def fake() -> FakeNemo:
    return FakeNemo()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def nemo(fake: FakeNemo, sleeps: Sleeps) -> Iterator[NemoClient]:
    yield NemoClient(
        NemoEndpoints.shared("http://nemo.test", "http://ds.test", "http://nim.test"),
        api_key=SecretStr(API_KEY),
        retry=RetryPolicy(max_retries=3, backoff_base_s=0.5, backoff_max_s=10),
        transport=httpx.MockTransport(fake),
        sleep=sleeps,
        rng=random.Random(7),
    )


# --- retries ---------------------------------------------------------------------------------------


async def test_retries_5xx_with_growing_jittered_backoff(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps) -> None:
    fake.on("GET", "/v1/datasets/ns/d", reply(502), reply(503), reply(504), reply(200, {"files_url": "hf://x"}))
    dataset = await nemo.entity_store.get_dataset("ns", "d")
    assert dataset is not None and dataset.files_url == "hf://x"
    assert fake.calls("GET", "/v1/datasets/ns/d") == 4
    assert len(sleeps.delays) == 3
    for attempt, delay in enumerate(sleeps.delays, start=1):
        ceiling = 0.5 * 2 ** (attempt - 1)
        assert ceiling / 2 <= delay <= ceiling


async def test_retries_connection_errors_and_timeouts(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps) -> None:
    fake.on("GET", "/v1/models", fail(httpx.ConnectError), fail(httpx.ReadTimeout), reply(200, {"data": []}))
    assert await nemo.nim.list_models() == []
    assert fake.calls("GET", "/v1/models") == 3
    assert len(sleeps.delays) == 2


async def test_gives_up_after_max_retries_with_a_useful_error(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("GET", "/v1/customization/jobs/cust-1/status", reply(500, {"detail": "database is down"}))
    with pytest.raises(NemoAPIError) as caught:
        await nemo.customizer.get_status("cust-1")
    err = caught.value
    assert fake.calls("GET", "/v1/customization/jobs/cust-1/status") == 4
    assert (err.service, err.method, err.path, err.status, err.attempts) == (
        "customizer",
        "GET",
        "/v1/customization/jobs/cust-1/status",
        500,
        4,
    )
    text = str(err)
    for part in ("customizer", "GET", "/v1/customization/jobs/cust-1/status", "500", "database is down", "hint"):
        assert part in text


async def test_retry_after_header_is_honoured_up_to_the_cap(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps) -> None:
    fake.on("GET", "/v1/models", reply(503, {"detail": "busy"}, **{"Retry-After": "3"}), reply(200, {"data": []}))
    await nemo.nim.list_models()
    assert sleeps.delays == [3.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_no_retry_on_4xx(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps, status: int) -> None:
    fake.on("GET", "/v1/evaluation/jobs/eval-1", reply(status, {"detail": "nope"}))
    with pytest.raises(NemoAPIError) as caught:
        await nemo.evaluator.get_job("eval-1")
    assert caught.value.status == status
    assert fake.calls("GET", "/v1/evaluation/jobs/eval-1") == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [408, 425, 429])
async def test_request_timeout_too_early_and_rate_limit_are_retried(
    nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps, status: int
) -> None:
    fake.on("GET", "/v1/evaluation/jobs/eval-1", reply(status, {"detail": "later"}), reply(200, {"id": "eval-1"}))
    await nemo.evaluator.get_job("eval-1")
    assert fake.calls("GET", "/v1/evaluation/jobs/eval-1") == 2
    assert len(sleeps.delays) == 1


async def test_a_wrong_but_live_url_fails_at_once_naming_the_url_and_status(
    nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps
) -> None:
    fake.on("POST", "/v1/customization/jobs", reply(400, {"error": "unknown path"}))
    with pytest.raises(NemoAPIError) as caught:
        await nemo.customizer.create_job({"name": "j", "config": "c@v1"})
    assert fake.calls("POST", "/v1/customization/jobs") == 1 and sleeps.delays == []
    assert not caught.value.retryable
    assert "http://nemo.test answered 400" in caught.value.hint and "SDK" not in str(caught.value)


async def test_409_is_an_answer_not_retried(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps) -> None:
    fake.on("POST", "/v1/namespaces", reply(409, {"detail": "exists"}))
    fake.on("POST", "/v1/customization/configs", reply(409, {"detail": "exists"}))
    assert await nemo.entity_store.ensure_namespace("dfwbp") is False
    assert await nemo.customizer.ensure_config({"name": "c@v1", "namespace": "dfwbp"}) is False
    assert fake.calls("POST", "/v1/namespaces") == 1
    assert fake.calls("POST", "/v1/customization/configs") == 1
    assert sleeps.delays == []


async def test_creating_post_is_not_resent_after_an_ambiguous_failure(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("POST", "/v1/customization/jobs", fail(httpx.ReadTimeout))
    with pytest.raises(NemoAPIError) as caught:
        await nemo.customizer.create_job({"name": "j", "namespace": "ns"})
    assert caught.value.ambiguous and caught.value.status is None
    assert fake.calls("POST", "/v1/customization/jobs") == 1


async def test_creating_post_is_resent_when_it_surely_did_not_arrive(nemo: NemoClient, fake: FakeNemo) -> None:
    job = {"id": "cust-1", "status": "created", "output_model": "ns/m@cust-1"}
    fake.on("POST", "/v1/customization/jobs", fail(httpx.ConnectError), reply(503), reply(200, job))
    created = await nemo.customizer.create_job({"name": "j", "namespace": "ns"})
    assert created.id == "cust-1"
    assert fake.calls("POST", "/v1/customization/jobs") == 3


# --- errors and secrets ----------------------------------------------------------------------------


async def test_bearer_token_is_sent(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("GET", "/v1/models", reply(200, {"data": []}))
    await nemo.nim.list_models()
    assert fake.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_errors_never_contain_the_api_key(nemo: NemoClient, fake: FakeNemo) -> None:
    def echo_auth(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": f"bad token {request.headers['authorization']}"})

    fake.on("GET", "/v1/datasets/ns/d", echo_auth)
    with pytest.raises(NemoAPIError) as caught:
        await nemo.entity_store.get_dataset("ns", "d")
    assert "bad token" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), caught.value.detail, pickle.dumps(caught.value).hex()):
        assert API_KEY not in text
        assert API_KEY.encode().hex() not in text
    assert API_KEY not in repr(nemo)


async def test_422_detail_names_fields_and_hides_the_judge_key(nemo: NemoClient, fake: FakeNemo) -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(
            422,
            json={
                "detail": [
                    {"loc": ["body", "config", "type"], "msg": "field required", "type": "missing", "input": body},
                    {"loc": ["body", "x"], "msg": f"echo {JUDGE_KEY}", "type": "value_error"},
                ]
            },
        )

    fake.on("POST", "/v1/evaluation/jobs", reject)
    body = {"config": {"judge": {"api_endpoint": {"url": "u", "model_id": "m", "api_key": JUDGE_KEY}}}, "target": "t"}
    with pytest.raises(NemoAPIError) as caught:
        await nemo.evaluator.create_job(body)
    text = str(caught.value)
    assert "config.type: field required" in text
    assert JUDGE_KEY not in text
    assert caught.value.status == 422


async def test_api_key_never_logged(nemo: NemoClient, fake: FakeNemo, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent_flywheel.nemo")
    fake.on("POST", "/v1/evaluation/jobs", reply(503), reply(200, {"id": "eval-1", "status": "created"}))
    body = {"config": {"api_key": JUDGE_KEY}, "target": "t", "namespace": "ns"}
    await nemo.evaluator.create_job(body)
    assert caplog.records
    assert all(JUDGE_KEY not in r.getMessage() and API_KEY not in r.getMessage() for r in caplog.records)


async def test_unexpected_success_status_is_reported(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("POST", "/v1/customization/jobs", reply(201, {"id": "cust-1"}))
    with pytest.raises(NemoAPIError, match="expects 200"):
        await nemo.customizer.create_job({"name": "j"})


# --- status sets -----------------------------------------------------------------------------------


def test_blueprint_bug_2_pending_is_waiting() -> None:
    assert classify("pending") is Phase.WAITING
    assert classify("created") is Phase.WAITING
    assert is_waiting("pending") and not is_failure("pending")


def test_status_sets() -> None:
    assert classify("running") is Phase.RUNNING
    assert is_success("completed") and is_success("ready") and is_success(" Completed ")
    assert is_failure("failed") and is_failure("cancelled")
    assert classify("cancelling") is Phase.WAITING


def test_unknown_status_waits_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agent_flywheel.nemo.status")
    assert classify("deploying-in-a-new-way") is Phase.WAITING
    assert classify("unknown") is Phase.WAITING
    assert any("deploying-in-a-new-way" in r.getMessage() for r in caplog.records)


async def test_evaluation_wait_survives_pending(nemo: NemoClient, fake: FakeNemo) -> None:
    def job(status: str, progress: float | None) -> Handler:
        return reply(200, {"id": "eval-1", "status": status, "status_details": {"progress": progress}})

    fake.on(
        "GET",
        "/v1/evaluation/jobs/eval-1",
        job("created", None),
        job("pending", None),
        job("running", 40.0),
        job("completed", 100.0),
    )
    seen: list[tuple[str, float | None]] = []
    done = await nemo.evaluator.wait_for_job(
        "eval-1", on_progress=lambda status, percent, details: seen.append((status, percent))
    )
    assert done.status == "completed"
    assert seen == [("created", None), ("pending", None), ("running", 40.0), ("completed", 100.0)]


# --- customizer ------------------------------------------------------------------------------------


async def test_blueprint_bug_3_cancel_path(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("POST", "/v1/customization/jobs/cust-9/cancel", reply(200, {"id": "cust-9", "status": "cancelled"}))
    job = await nemo.customizer.cancel_job("cust-9")
    assert job.status == "cancelled"
    assert cancel_path("cust-9") == "/v1/customization/jobs/cust-9/cancel"
    assert [r.url.path for r in fake.requests] == ["/v1/customization/jobs/cust-9/cancel"]
    assert all("/v1/customizations/" not in r.url.path for r in fake.requests)


async def test_cancel_of_a_finished_job_returns_it(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("POST", "/v1/customization/jobs/cust-9/cancel", reply(409, {"detail": "already completed"}))
    fake.on("GET", "/v1/customization/jobs/cust-9", reply(200, {"id": "cust-9", "status": "completed"}))
    assert (await nemo.customizer.cancel_job("cust-9")).status == "completed"


async def test_customization_job_is_found_instead_of_recreated(nemo: NemoClient, fake: FakeNemo) -> None:
    key = IdempotencyKey(content_hash("train-manifest", 1), flow_run_id="run-1")
    other = IdempotencyKey(content_hash("other"), flow_run_id="run-1")
    jobs = [
        {"id": "cust-old", "status": "failed", "custom_fields": key.custom_fields()},
        {"id": "cust-other", "status": "running", "custom_fields": other.custom_fields()},
        {"id": "cust-live", "status": "running", "description": key.describe("fine-tune")},
    ]
    fake.on("GET", "/v1/customization/jobs", reply(200, {"data": jobs}), reply(200, {"data": []}))
    job = await nemo.customizer.create_job({"name": "j", "namespace": "ns"}, idempotency=key)
    assert job.id == "cust-live"
    assert fake.calls("POST", "/v1/customization/jobs") == 0
    listing = next(r for r in fake.requests if r.method == "GET")
    assert listing.url.params["filter[namespace]"] == "ns"


async def test_an_excluded_completed_job_is_not_reused(nemo: NemoClient, fake: FakeNemo) -> None:
    """A completed fine-tune whose adapter is gone (its id excluded by the caller) is trained again."""
    key = IdempotencyKey(content_hash("train-manifest", 2))
    done = {"id": "cust-done", "status": "completed", "custom_fields": key.custom_fields()}
    fake.on("GET", "/v1/customization/jobs", reply(200, {"data": [done]}), reply(200, {"data": []}))
    fake.on("POST", "/v1/customization/jobs", reply(200, {"id": "cust-new", "status": "created"}))
    assert (await nemo.customizer.find_job(key, namespace="ns")) is not None
    fake.on("GET", "/v1/customization/jobs", reply(200, {"data": [done]}), reply(200, {"data": []}))
    job = await nemo.customizer.create_job({"name": "j", "namespace": "ns"}, idempotency=key, exclude={"cust-done"})
    assert job.id == "cust-new"
    assert fake.calls("POST", "/v1/customization/jobs") == 1


async def test_ambiguous_create_finds_the_job_the_service_made(nemo: NemoClient, fake: FakeNemo) -> None:
    key = IdempotencyKey(content_hash("x"), flow_run_id="run-2")
    made = {"id": "cust-made", "status": "created", "custom_fields": key.custom_fields()}
    fake.on("GET", "/v1/customization/jobs", reply(200, {"data": []}), reply(200, {"data": [made]}))
    fake.on("POST", "/v1/customization/jobs", reply(504, {"detail": "gateway timeout"}))
    job = await nemo.customizer.create_job({"name": "j", "namespace": "ns"}, idempotency=key)
    assert job.id == "cust-made"
    assert fake.calls("POST", "/v1/customization/jobs") == 1


async def test_job_name_conflict_retries_under_a_new_name(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on(
        "POST",
        "/v1/customization/jobs",
        reply(409, {"detail": "name taken"}),
        lambda r: httpx.Response(200, json={"id": "cust-2", "name": json.loads(r.content)["name"]}),
    )
    job = await nemo.customizer.create_job({"name": "flywheel-x", "namespace": "ns"})
    assert job.name == "flywheel-x-2"


async def test_customization_failure_reports_the_last_log(nemo: NemoClient, fake: FakeNemo) -> None:
    status = {
        "status": "failed",
        "status_logs": [{"message": "created"}, {"message": "Failed", "detail": "CUDA out of memory"}],
    }
    fake.on("GET", "/v1/customization/jobs/cust-1/status", reply(200, status))
    with pytest.raises(JobFailedError, match="CUDA out of memory"):
        await nemo.customizer.wait_for_job("cust-1")


@pytest.mark.parametrize("status", ["pending", "running"])
async def test_not_enough_resources_ends_the_wait_at_once(nemo: NemoClient, fake: FakeNemo, status: str) -> None:
    """A job that says no node can take it would otherwise sit out the stall timeout (an hour by default)."""
    logs = [{"message": "created"}, {"message": "NotEnoughResources", "detail": "0/4 GPUs"}]
    fake.on("GET", "/v1/customization/jobs/cust-1/status", reply(200, {"status": status, "status_logs": logs}))
    clock = FakeClock()

    async def fetch() -> Observation:
        from agent_flywheel.nemo.customizer import customization_observation

        return customization_observation(await nemo.customizer.get_status("cust-1"))

    with pytest.raises(JobBlockedError, match=r"NotEnoughResources.*0/4 GPUs"):
        await wait_for(
            fetch, what="job", settings=PollSettings(30, stall_timeout_s=3600), sleep=clock.sleep, clock=clock.now
        )
    assert fake.calls("GET", "/v1/customization/jobs/cust-1/status") == 1
    assert clock.t == 0


async def test_a_job_that_moved_past_not_enough_resources_is_waited_for(nemo: NemoClient, fake: FakeNemo) -> None:
    logs = [{"message": "NotEnoughResources", "detail": "0/4 GPUs"}, {"message": "running"}]
    done = {"status": "completed", "status_logs": [*logs, {"message": "completed"}]}
    fake.on(
        "GET",
        "/v1/customization/jobs/cust-1/status",
        reply(200, {"status": "running", "percentage_done": 10, "status_logs": logs}),
        reply(200, done),
    )
    status = await nemo.customizer.wait_for_job("cust-1", settings=PollSettings(0.01))
    assert status.status == "completed"


# --- deployments -----------------------------------------------------------------------------------


def test_blueprint_bug_8_ready_status() -> None:
    assert ModelDeployment.model_validate({"status_details": {"status": "ready"}}).ready
    assert ModelDeployment.model_validate({"status_details": {"status": "unknown"}, "deployed": True}).ready
    assert not ModelDeployment.model_validate({"status_details": {"status": "deployed"}}).ready
    assert not ModelDeployment.model_validate({"status_details": {"status": "pending"}, "deployed": False}).ready
    assert ModelDeployment.model_validate({"status_details": {"status": "failed"}}).failed


async def test_deployment_wait_reaches_ready_and_fails_fast(nemo: NemoClient, fake: FakeNemo) -> None:
    path = "/v1/deployment/model-deployments/ns/m"

    def dep(status: str, deployed: bool = False) -> Handler:
        return reply(200, {"name": "m", "namespace": "ns", "deployed": deployed, "status_details": {"status": status}})

    fake.on("GET", path, dep("pending"), dep("deploying"), dep("ready", True))
    assert (await nemo.deployments.wait_until_ready("ns", "m")).ready
    fake.on("GET", path, dep("pending"), dep("failed"), dep("ready", True))
    with pytest.raises(JobFailedError):
        await nemo.deployments.wait_until_ready("ns", "m")
    assert fake.calls("GET", path) == 5


@pytest.mark.parametrize(
    ("description", "blocked"),
    [
        ("Back-off pulling image nvcr.io/nim/meta/x:9.9: ImagePullBackOff", True),
        ("container nim: CrashLoopBackOff", True),
        ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu", False),  # GPUs may free up: wait
        ("Model deployment created", False),
    ],
)
async def test_a_pending_deployment_that_cannot_start_fails_at_once(
    nemo: NemoClient, fake: FakeNemo, description: str, blocked: bool
) -> None:
    path = "/v1/deployment/model-deployments/ns/m"
    pending = {"name": "m", "namespace": "ns", "status_details": {"status": "pending", "description": description}}
    ready = {"name": "m", "namespace": "ns", "deployed": True, "status_details": {"status": "ready"}}
    fake.on("GET", path, reply(200, pending), reply(200, ready))
    if blocked:
        with pytest.raises(JobBlockedError, match=description.split(":")[-1].strip()):
            await nemo.deployments.wait_until_ready("ns", "m", settings=PollSettings(0.01))
        assert fake.calls("GET", path) == 1
    else:
        assert (await nemo.deployments.wait_until_ready("ns", "m", settings=PollSettings(0.01))).ready


async def test_500_already_exists_means_reuse(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps) -> None:
    fake.on(
        "POST",
        "/v1/deployment/model-deployments",
        lambda r: httpx.Response(500, text="Internal error: model deployment already exists"),
    )
    existing = {"name": "m", "namespace": "ns", "deployed": True, "status_details": {"status": "ready"}}
    fake.on("GET", "/v1/deployment/model-deployments/ns/m", reply(200, existing))
    deployment, created = await nemo.deployments.create({"name": "m", "namespace": "ns", "config": {}})
    assert deployment.ready and created is False
    assert fake.calls("POST", "/v1/deployment/model-deployments") == 1
    assert sleeps.delays == []


async def test_409_deployment_means_reuse_and_ensure_skips_the_post(nemo: NemoClient, fake: FakeNemo) -> None:
    existing = {"name": "m", "namespace": "ns", "status_details": {"status": "pending"}}
    fake.on("POST", "/v1/deployment/model-deployments", reply(409, {"detail": "exists"}))
    fake.on("GET", "/v1/deployment/model-deployments/ns/m", reply(200, existing))
    _, created = await nemo.deployments.create({"name": "m", "namespace": "ns", "config": {}})
    assert created is False
    _, created = await nemo.deployments.ensure({"name": "m", "namespace": "ns", "config": {}})
    assert created is False
    assert fake.calls("POST", "/v1/deployment/model-deployments") == 1


async def test_other_500s_on_deploy_are_retried_then_raised(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("POST", "/v1/deployment/model-deployments", reply(500, {"detail": "k8s api unavailable"}))
    with pytest.raises(NemoAPIError, match="k8s api unavailable"):
        await nemo.deployments.create({"name": "m", "namespace": "ns", "config": {}})
    assert fake.calls("POST", "/v1/deployment/model-deployments") == 4


# --- entity store, evaluator, nim ------------------------------------------------------------------


async def test_dataset_upsert_posts_then_patches(nemo: NemoClient, fake: FakeNemo) -> None:
    body = {"name": "d", "namespace": "ns", "files_url": "hf://datasets/ns/d"}
    fake.on("GET", "/v1/datasets/ns/d", reply(404, {"detail": "not found"}), reply(200, body))
    fake.on("POST", "/v1/datasets", reply(200, {**body, "id": "dataset-1"}))
    fake.on("PATCH", "/v1/datasets/ns/d", reply(200, {**body, "id": "dataset-1"}))
    assert (await nemo.entity_store.upsert_dataset(body)).id == "dataset-1"
    assert (await nemo.entity_store.upsert_dataset(body)).id == "dataset-1"
    assert fake.calls("POST", "/v1/datasets") == 1 and fake.calls("PATCH", "/v1/datasets/ns/d") == 1


async def test_list_pages_until_an_empty_page(nemo: NemoClient, fake: FakeNemo) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        data = [{"name": f"m{number}-{i}", "namespace": "ns"} for i in range(2)] if number <= 2 else []
        return httpx.Response(200, json={"data": data})

    fake.on("GET", "/v1/models", page)
    models = await nemo.entity_store.list_models("ns")
    assert [m.name for m in models] == ["m1-0", "m1-1", "m2-0", "m2-1"]
    assert fake.requests[0].url.params["filter[namespace]"] == "ns"
    assert fake.requests[0].url.params["sort"] == "-created_at"


async def test_delete_of_missing_things_is_false(nemo: NemoClient, fake: FakeNemo) -> None:
    assert await nemo.entity_store.delete_model_ref("ns/customized-m@cust-1") is False
    assert fake.requests[0].url.path == "/v1/models/ns/customized-m@cust-1"
    assert await nemo.evaluator.delete_job("eval-1") is False


async def test_download_results_parses_per_sample_rows(nemo: NemoClient, fake: FakeNemo) -> None:
    rows = {
        "custom-tool-calling": [
            {
                "item": {"request": {}},
                "sample": {"output_text": ""},
                "metrics": {"tool-calling-accuracy": {"scores": {"function_name_accuracy": {"value": 1.0}}}},
            },
            "not a row",
        ]
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("eval-1/results.json", json.dumps(rows))
    fake.on(
        "GET", "/v1/evaluation/jobs/eval-1/download-results", lambda r: httpx.Response(200, content=buffer.getvalue())
    )
    samples = await nemo.evaluator.sample_results("eval-1")
    assert len(samples["custom-tool-calling"]) == 1
    assert samples["custom-tool-calling"][0].score("tool-calling-accuracy", "function_name_accuracy") == 1.0
    assert fake.requests[0].headers["accept"] == "application/zip"


async def test_results_scores(nemo: NemoClient, fake: FakeNemo) -> None:
    result = {
        "job": "eval-1",
        "tasks": {"llm-as-judge": {"metrics": {"llm-judge": {"scores": {"similarity": {"value": 7.5}}}}}},
    }
    fake.on("GET", "/v1/evaluation/jobs/eval-1/results", reply(200, result))
    parsed = await nemo.evaluator.get_results("eval-1")
    assert parsed.score("llm-as-judge", "llm-judge", "similarity") == 7.5
    assert parsed.score("llm-as-judge", "llm-judge", "missing") is None
    assert parsed.flat_scores() == {"llm-as-judge/llm-judge/similarity": 7.5}


async def test_embeddings_in_batches_keep_order(nemo: NemoClient, fake: FakeNemo) -> None:
    def embed(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["input_type"] == "passage"
        data = [{"index": i, "embedding": [float(len(text))]} for i, text in enumerate(body["input"])]
        return httpx.Response(200, json={"data": list(reversed(data))})

    fake.on("POST", "/v1/embeddings", embed)
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    vectors = await nemo.nim.embeddings(texts, "embedder", input_type="passage", batch_size=2)
    assert vectors == [[1.0], [2.0], [3.0], [4.0], [5.0]]
    assert fake.calls("POST", "/v1/embeddings") == 3


async def test_wait_for_model_polls_until_served(nemo: NemoClient, fake: FakeNemo, sleeps: Sleeps) -> None:
    fake.on(
        "GET",
        "/v1/models",
        reply(200, {"data": [{"id": "base"}]}),
        reply(200, {"data": [{"id": "base"}, {"id": "ns/m@cust-1", "parent": "base"}]}),
    )
    model = await nemo.nim.wait_for_model("ns/m@cust-1", settings=PollSettings(interval_s=30))
    assert model.parent == "base"
    assert sleeps.delays == [30]


async def test_chat_minimal(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("POST", "/v1/chat/completions", reply(200, {"choices": [{"message": {"content": "hi"}}]}))
    answer = await nemo.nim.chat("m", [{"role": "user", "content": "hi"}], tool_choice="auto", max_tokens=5)
    assert answer["choices"][0]["message"]["content"] == "hi"
    sent = json.loads(fake.requests[0].content)
    assert sent["max_tokens"] == 5 and sent["tool_choice"] == "auto" and "tools" not in sent


# --- poller ----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def scripted(*observations: Observation) -> Callable[[], Any]:
    queue = list(observations)

    async def fetch() -> Observation:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return fetch


async def test_poller_stall_timeout_fires_without_progress() -> None:
    clock = FakeClock()
    fetch = scripted(Observation("running", 10.0))
    with pytest.raises(JobStalledError) as caught:
        await wait_for(
            fetch, what="job", settings=PollSettings(5, stall_timeout_s=60), sleep=clock.sleep, clock=clock.now
        )
    assert clock.t == 60
    assert caught.value.last is not None and caught.value.last.progress == 10.0


async def test_poller_stall_timer_resets_on_progress() -> None:
    clock = FakeClock()
    # 10 % more every 50 s with a 60 s stall timeout: slow but moving, so never stalled.
    steps = [Observation("running", float(p)) for p in range(0, 100, 10) for _ in range(10)]
    fetch = scripted(*steps, Observation("completed", 100.0))
    calls: list[tuple[str, float | None, dict[str, Any]]] = []

    async def progress(status: str, percent: float | None, details: Any) -> None:
        calls.append((status, percent, dict(details)))

    done = await wait_for(
        fetch,
        what="job",
        settings=PollSettings(5, stall_timeout_s=60),
        on_progress=progress,
        sleep=clock.sleep,
        clock=clock.now,
    )
    assert done.status == "completed"
    assert clock.t > 60 * 5
    assert [c[1] for c in calls] == [float(p) for p in range(0, 100, 10)] + [100.0]


async def test_poller_overall_timeout() -> None:
    clock = FakeClock()
    counter = iter(range(10_000))

    async def fetch() -> Observation:
        return Observation("running", float(next(counter)))

    with pytest.raises(JobTimeoutError):
        await wait_for(
            fetch,
            what="job",
            settings=PollSettings(10, stall_timeout_s=60, timeout_s=100),
            sleep=clock.sleep,
            clock=clock.now,
        )
    assert clock.t == 100


async def test_poller_unknown_status_waits_until_stall() -> None:
    clock = FakeClock()
    fetch = scripted(Observation("warming-up"))
    with pytest.raises(JobStalledError, match="warming-up"):
        await wait_for(
            fetch, what="job", settings=PollSettings(5, stall_timeout_s=30), sleep=clock.sleep, clock=clock.now
        )


async def test_poller_tolerates_transient_errors_and_a_failing_callback() -> None:
    clock = FakeClock()
    answers: list[Any] = [
        NemoAPIError(service="s", method="GET", path="/p", status=503, detail="busy"),
        Observation("running", 50.0),
        httpx.ConnectError("down"),
        Observation("completed", 100.0),
    ]

    async def fetch() -> Observation:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def broken_callback(status: str, percent: float | None, details: Any) -> None:
        raise RuntimeError("UI down")

    done = await wait_for(
        fetch, what="job", on_progress=broken_callback, settings=PollSettings(1), sleep=clock.sleep, clock=clock.now
    )
    assert done.status == "completed"


async def test_poller_raises_non_transient_errors() -> None:
    async def fetch() -> Observation:
        raise NemoAPIError(service="s", method="GET", path="/p", status=404, detail="gone")

    with pytest.raises(NemoAPIError):
        await wait_for(fetch, what="job", sleep=Sleeps())


async def test_poller_is_cancellation_safe() -> None:
    cancelled: list[str] = []
    started = asyncio.Event()

    async def fetch() -> Observation:
        started.set()
        return Observation("running", 1.0)

    async def on_cancel() -> None:
        cancelled.append("remote job cancelled")

    task = asyncio.create_task(wait_for(fetch, what="job", settings=PollSettings(interval_s=3600), on_cancel=on_cancel))
    await started.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == ["remote job cancelled"]


async def test_cancel_on_abort_cancels_the_customization_job(nemo: NemoClient, fake: FakeNemo) -> None:
    fake.on("GET", "/v1/customization/jobs/cust-1/status", reply(200, {"status": "running", "percentage_done": 5}))
    fake.on("POST", "/v1/customization/jobs/cust-1/cancel", reply(200, {"id": "cust-1", "status": "cancelled"}))
    gate = asyncio.Event()

    async def park(seconds: float) -> None:
        gate.set()
        await asyncio.Event().wait()

    nemo.customizer.http._sleep = park
    task = asyncio.create_task(nemo.customizer.wait_for_job("cust-1", cancel_on_abort=True))
    await gate.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.calls("POST", "/v1/customization/jobs/cust-1/cancel") == 1


# --- small pieces ----------------------------------------------------------------------------------


def test_filter_params_are_bracketed() -> None:
    assert filter_params({"namespace": "ns", "custom_fields": {"k": "v"}, "peft": {"lora": True}, "x": None}) == {
        "filter[namespace]": "ns",
        "filter[custom_fields][k]": "v",
        "filter[peft][lora]": "true",
    }


def test_retry_policy_caps_the_delay() -> None:
    policy = RetryPolicy(backoff_base_s=1, backoff_max_s=4)
    rng = random.Random(1)
    assert all(2 <= policy.delay(attempt, rng) <= 4 for attempt in range(3, 10))
    assert policy.delay(1, rng, retry_after_s=100) == 4


def test_idempotency_key_matching() -> None:
    key = IdempotencyKey(content_hash({"a": 1}), flow_run_id="run-1")
    assert content_hash({"a": 1}) == content_hash({"a": 1}) != content_hash({"a": 2})
    assert key.matches(custom_fields=key.custom_fields())
    assert key.matches(description=key.describe("eval"))
    assert not key.matches(custom_fields=IdempotencyKey(key.content_hash, "run-2").custom_fields())
    assert IdempotencyKey(key.content_hash).matches(custom_fields=key.custom_fields())
    assert not key.matches(description="no tag here")
    with pytest.raises(ValueError):
        IdempotencyKey("not-hex")


async def test_endpoints_route_services_to_their_urls(fake: FakeNemo) -> None:
    shared = NemoEndpoints.shared("http://nemo.test", "http://data-store.test", "http://nim.test")
    endpoints = dataclasses.replace(shared, evaluator="http://eval.test/")
    async with NemoClient(endpoints, transport=httpx.MockTransport(fake)) as client:
        fake.on("GET", "/v1/evaluation/jobs/e", reply(200, {"id": "e"}))
        await client.evaluator.get_job("e")
        assert fake.requests[-1].url.host == "eval.test"
        assert "authorization" not in fake.requests[-1].headers
        assert client.datastore.hf_endpoint == "http://data-store.test/v1/hf"
