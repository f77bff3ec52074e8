"""The NeMo client against the local stack's simulators (NeMo, Data Store, NIM) over real HTTP.

Covers the flywheel's path end to end: upload and register a dataset with ``huggingface_hub``,
deploy a NIM until ready, fine-tune until the adapter is served, evaluate with per-sample results,
cancel a running job, and retries against injected faults. The simulators run at clock speed 1000.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_flywheel.config import CustomizerConfig, EvaluationConfig, FlywheelConfig, NIMConfig
from agent_flywheel.nemo import (
    IdempotencyKey,
    JobFailedError,
    NemoAPIError,
    NemoClient,
    NemoEndpoints,
    Observation,
    Phase,
    PollSettings,
    RetryPolicy,
    content_hash,
    wait_for,
)
from agent_flywheel.nemo import payloads as p
from agent_flywheel.nemo.deployments import CREATOR_FIELD, deployment_users, is_managed
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port

pytestmark = pytest.mark.integration

NS = "itest"
BASE = "meta/llama-3.2-1b-instruct"
FAST = PollSettings(interval_s=0.05, stall_timeout_s=30, timeout_s=60)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    }
]


def _record(i: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Where is my order A{i:04d}?"}]
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_order_status", "arguments": json.dumps({"order_id": f"A{i:04d}"})},
    }
    return {
        "timestamp": 1_700_000_000 + i,
        "workload_id": "orders",
        "client_id": "itest",
        "request": {"model": "meta/llama-3.3-70b-instruct", "messages": messages, "tools": TOOLS},
        "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "", "tool_calls": [call]}}]},
    }


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _training_row(record: dict[str, Any]) -> dict[str, Any]:
    message = record["response"]["choices"][0]["message"]
    return {"messages": [*record["request"]["messages"], message], "tools": record["request"]["tools"]}


EVAL_RECORDS = [_record(i) for i in range(12)]
TRAIN_RECORDS = [_record(i) for i in range(100, 160)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackConfig]:
    from simulators.datastore.server import create_app as datastore_app
    from simulators.nemo.server import create_app as nemo_app
    from simulators.nim.server import create_app as nim_app

    ports = Ports(nemo=free_port(), datastore=free_port(), nim=free_port(), logserver=free_port(), agent=free_port())
    cfg = LocalStackConfig(state_dir=str(tmp_path_factory.mktemp("stack")), clock_speed=1000, ports=ports)
    servers = [
        ThreadedServer(datastore_app(cfg), port=ports.datastore),
        ThreadedServer(nim_app(cfg), port=ports.nim),
        ThreadedServer(nemo_app(cfg), port=ports.nemo),
    ]
    started: list[ThreadedServer] = []
    try:
        for server in servers:
            started.append(server.start())
        yield cfg
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
async def nemo(stack: LocalStackConfig) -> AsyncIterator[NemoClient]:
    async with NemoClient(
        NemoEndpoints.shared(stack.url("nemo"), stack.url("datastore"), stack.url("nim")),
        timeout_s=30,
        retry=RetryPolicy(max_retries=4, backoff_base_s=0.01, backoff_max_s=0.05),
    ) as client:
        yield client


@pytest.fixture
def nim() -> NIMConfig:
    return NIMConfig(
        model_name=BASE,
        gpus=1,
        customization_enabled=True,
        customizer_configs=CustomizerConfig(target=f"{BASE}@2.0"),
    )


@pytest.fixture
def cfg(nim: NIMConfig) -> FlywheelConfig:
    return FlywheelConfig(namespace=NS, nims=[nim], evaluation_config=EvaluationConfig(limit=10))


async def _admin(base_url: str, path: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        response = await client.post(path, json=body)
        response.raise_for_status()


async def _upload(nemo: NemoClient, name: str, files: dict[str, str]) -> str:
    dataset = await nemo.upload_dataset(NS, name, files, description="integration test")
    return dataset.files_url


async def _deploy_base(nemo: NemoClient, nim: NIMConfig) -> None:
    body = p.dms_deployment_body(nim, NS)
    deployment, _ = await nemo.deployments.ensure(body)
    if not deployment.ready:
        await nemo.deployments.wait_until_ready(NS, body["name"], settings=FAST)
    await nemo.nim.wait_for_model(nim.model_name, settings=FAST)


async def test_upload_and_register_dataset(nemo: NemoClient) -> None:
    files = {"eval_data.jsonl": _jsonl(EVAL_RECORDS)}
    files_url = await _upload(nemo, "ds-upload", files)
    assert files_url == f"hf://datasets/{NS}/ds-upload"
    # Again: namespaces exist (409), the repo exists (exist_ok), the registration is PATCHed.
    again = await nemo.upload_dataset(NS, "ds-upload", files, description="second upload")
    assert again.description == "second upload"
    registered = await nemo.entity_store.get_dataset(NS, "ds-upload")
    assert registered is not None and registered.files_url == files_url
    assert await nemo.datastore.read_file(NS, "ds-upload", "eval_data.jsonl") == files["eval_data.jsonl"].encode()
    assert await nemo.datastore.get_namespace(NS) is not None
    # Cleanup is idempotent too.
    assert await nemo.datastore.delete_repo(NS, "ds-upload") is True
    assert await nemo.datastore.delete_repo(NS, "ds-upload") is False
    assert await nemo.entity_store.delete_dataset(NS, "ds-upload") is True
    assert await nemo.entity_store.delete_dataset(NS, "ds-upload") is False


async def test_upload_folder(nemo: NemoClient, tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "train_data.jsonl").write_text(_jsonl([_training_row(r) for r in TRAIN_RECORDS[:5]]))
    await nemo.ensure_namespace(NS)
    files_url = await nemo.datastore.upload_folder(NS, "ds-folder", tmp_path)
    assert files_url == f"hf://datasets/{NS}/ds-folder"
    content = await nemo.datastore.read_file(NS, "ds-folder", "training/train_data.jsonl")
    assert len(content.splitlines()) == 5


async def test_deploy_until_ready_and_reuse(nemo: NemoClient, nim: NIMConfig) -> None:
    body = p.dms_deployment_body(nim, NS)
    deployment, created = await nemo.deployments.create(body)
    assert created is True and not deployment.ready
    progress: list[str] = []
    ready = await nemo.deployments.wait_until_ready(
        NS, body["name"], settings=FAST, on_progress=lambda status, percent, details: progress.append(status)
    )
    assert ready.ready and progress[-1] == "ready"
    await nemo.nim.wait_for_model(BASE, settings=FAST)
    # A duplicate create (the simulator answers like real DMS: 500 "already exists") is a reuse.
    again, created = await nemo.deployments.create(body)
    assert created is False and again.ready
    assert (await nemo.deployments.ensure(body))[1] is False
    assert await nemo.deployments.is_ready(NS, body["name"])


async def test_customization_job_to_served_adapter(nemo: NemoClient, nim: NIMConfig, cfg: FlywheelConfig) -> None:
    train = {
        "training/train_data.jsonl": _jsonl([_training_row(r) for r in TRAIN_RECORDS]),
        "validation/val_data.jsonl": _jsonl([_training_row(r) for r in TRAIN_RECORDS[:6]]),
    }
    await _upload(nemo, "ds-train", train)
    assert await nemo.customizer.ensure_config(p.customization_config_body(nim, NS, cfg.training_config)) is True
    assert await nemo.customizer.ensure_config(p.customization_config_body(nim, NS, cfg.training_config)) is False

    key = IdempotencyKey(content_hash("ds-train", train), flow_run_id="itest-run-1")
    body = p.customization_job_body(
        nim, NS, "ds-train", training=cfg.training_config, lora=cfg.lora_config, idempotency=key, workload_id="orders"
    )
    job = await nemo.customizer.create_job(body, idempotency=key)
    assert job.output_model and job.output_model.startswith(f"{NS}/customized-meta-llama-3.2-1b-instruct@")
    # A retried flow run finds the job instead of starting a second fine-tune.
    assert (await nemo.customizer.create_job(body, idempotency=key)).id == job.id

    percents: list[float | None] = []
    status = await nemo.customizer.wait_for_job(
        job.id, settings=FAST, on_progress=lambda status, percent, details: percents.append(percent)
    )
    assert status.status == "completed"
    assert any(p is not None and p > 0 for p in percents)
    served = await nemo.nim.wait_for_model(job.output_model, settings=FAST)
    assert served.id == job.output_model
    namespace, name = job.output_model.split("/", 1)
    assert await nemo.entity_store.get_model(namespace, name) is not None
    listed = await nemo.customizer.list_jobs(filters={"namespace": NS, "status": "completed"})
    assert job.id in [j.id for j in listed]


async def test_evaluation_with_per_sample_results(nemo: NemoClient, nim: NIMConfig, cfg: FlywheelConfig) -> None:
    await _upload(nemo, "ds-eval", {"eval_data.jsonl": _jsonl(EVAL_RECORDS)})
    await _deploy_base(nemo, nim)
    config = p.eval_config_for_run(cfg, p.eval_files_url(NS, "ds-eval"), tool_calling=True)
    key = IdempotencyKey(content_hash("ds-eval", BASE, config), flow_run_id="itest-run-1")
    body = p.evaluation_job_body(config, BASE, NS, idempotency=key, eval_mode="base-eval")
    job = await nemo.evaluator.create_job(body, idempotency=key)
    assert (await nemo.evaluator.create_job(body, idempotency=key)).id == job.id

    done = await nemo.evaluator.wait_for_job(job.id, settings=FAST)
    assert done.status == "completed"
    result = await nemo.evaluator.get_results(job.id)
    for score in (p.FUNCTION_NAME_SCORE, p.FUNCTION_NAME_AND_ARGS_SCORE):
        value = result.score(p.TOOL_CALLING_TASK, p.TOOL_CALLING_METRIC, score)
        assert value is not None and 0.0 <= value <= 1.0
    rating = result.score(p.TOOL_CALLING_TASK, p.CORRECTNESS_METRIC, p.RATING_SCORE)
    assert rating is not None and 0.0 <= rating <= 1.0
    samples = await nemo.evaluator.sample_results(job.id)
    rows = samples[p.TOOL_CALLING_TASK]
    assert len(rows) == 10, "dataset.limit from the run's config caps the samples"
    assert all(row.score(p.TOOL_CALLING_METRIC, p.FUNCTION_NAME_SCORE) in (0.0, 1.0) for row in rows)
    assert await nemo.evaluator.delete_job(job.id) is True
    assert await nemo.evaluator.delete_job(job.id) is False


async def test_cancel_a_running_customization_job(
    nemo: NemoClient, nim: NIMConfig, cfg: FlywheelConfig, stack: LocalStackConfig
) -> None:
    await _upload(nemo, "ds-cancel", {"training/train_data.jsonl": _jsonl([_training_row(r) for r in TRAIN_RECORDS])})
    await nemo.customizer.ensure_config(p.customization_config_body(nim, NS, cfg.training_config))
    # Slow the clock so the job stays running long enough to be cancelled.
    await _admin(stack.url("nemo"), "/admin/clock", {"speed": 20})
    try:
        job = await nemo.customizer.create_job(p.customization_job_body(nim, NS, "ds-cancel"))

        async def running() -> Observation:
            status = await nemo.customizer.get_status(job.id)
            return Observation(status.status, phase=Phase.SUCCEEDED if status.status == "running" else None)

        await wait_for(running, what="job start", settings=FAST)
        cancelled = await nemo.customizer.cancel_job(job.id)
        assert cancelled.status in ("cancelled", "cancelling")
        final = await nemo.customizer.get_job(job.id)
        assert final.status in ("cancelled", "cancelling")
        # Cancelling again is harmless: the finished job comes back.
        assert (await nemo.customizer.cancel_job(job.id)).id == job.id
    finally:
        await _admin(stack.url("nemo"), "/admin/clock", {"speed": 1000})


async def test_retries_ride_out_injected_5xx(
    nemo: NemoClient, stack: LocalStackConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent_flywheel.nemo.http")
    await _admin(stack.url("nemo"), "/admin/faults", {"error_rate": {"/v1/namespaces": 0.5}, "seed": 3})
    try:
        for _ in range(5):
            await nemo.entity_store.ensure_namespace(NS)
            assert await nemo.entity_store.get_namespace(NS) is not None
    finally:
        await _admin(stack.url("nemo"), "/admin/faults", {"error_rate": {}})
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert retries, "the fault injection should have forced at least one retry"


async def test_errors_name_the_call(nemo: NemoClient) -> None:
    with pytest.raises(NemoAPIError) as caught:
        await nemo.customizer.get_job("cust-does-not-exist")
    assert caught.value.status == 404
    assert "/v1/customization/jobs/cust-does-not-exist" in str(caught.value)


# --- deployments shared by runs ------------------------------------------------------------------------


class Runs:
    """Which flow runs are over, for ``Deployments.release``'s liveness check."""

    def __init__(self) -> None:
        self.over: set[str] = set()
        self.asked: list[str] = []

    async def is_over(self, run_id: str) -> bool:
        self.asked.append(run_id)
        return run_id in self.over


async def test_a_shared_deployment_stays_up_until_its_last_live_user_leaves(nemo: NemoClient, nim: NIMConfig) -> None:
    body = p.dms_deployment_body(nim, "shared")
    name = str(body["name"])
    runs = Runs()
    first = await nemo.deployments.use(body, "run-a")
    assert first.created and first.managed and first.users == ["run-a"]
    second = await nemo.deployments.use(body, "run-b")
    assert not second.created and second.managed and second.users == ["run-a", "run-b"]
    assert (await nemo.deployments.use(body, "run-b")).users == ["run-a", "run-b"]  # joining again: once
    stored = await nemo.deployments.get("shared", name)
    assert stored is not None and stored.custom_fields is not None
    assert stored.custom_fields[CREATOR_FIELD] == "run-a" and deployment_users(stored) == ["run-a", "run-b"]

    # The creator leaves first (say it was cancelled): run-b is alive, so the deployment stays.
    left = await nemo.deployments.release("shared", name, "run-a", is_over=runs.is_over)
    assert (left.deleted, left.users, left.dropped) == (False, ["run-b"], [])
    assert runs.asked == ["run-b"]
    stored = await nemo.deployments.get("shared", name)
    assert stored is not None and deployment_users(stored) == ["run-b"]

    # run-c joins; run-b dies without leaving; run-c, the last live user, deletes it.
    await nemo.deployments.use(body, "run-c")
    runs.over.add("run-b")
    last = await nemo.deployments.release("shared", name, "run-c", is_over=runs.is_over)
    assert (last.deleted, last.users, last.dropped) == (True, [], ["run-b"])
    assert await nemo.deployments.get("shared", name) is None
    gone = await nemo.deployments.release("shared", name, "run-c", is_over=runs.is_over)
    assert (gone.existed, gone.deleted) == (False, False)


async def test_a_deployment_agent_flywheel_did_not_make_is_used_and_never_deleted(
    nemo: NemoClient, nim: NIMConfig
) -> None:
    body = p.dms_deployment_body(nim, "platform")
    await nemo.deployments.create(body)  # the platform team's own deployment
    use = await nemo.deployments.use(body, "run-a")
    assert (use.created, use.managed) == (False, False)
    runs = Runs()
    runs.over.add("run-a")
    released = await nemo.deployments.release("platform", str(body["name"]), "run-a", is_over=runs.is_over)
    assert (released.existed, released.managed, released.deleted) == (True, False, False)
    stored = await nemo.deployments.get("platform", str(body["name"]))
    assert stored is not None and not is_managed(stored) and deployment_users(stored) == []


async def test_a_failed_managed_deployment_is_replaced_for_its_users(
    nemo: NemoClient, nim: NIMConfig, stack: LocalStackConfig
) -> None:
    body = p.dms_deployment_body(nim, "replace")
    await _admin(stack.url("nemo"), "/admin/faults", {"deployment_failed": True})
    try:
        await nemo.deployments.use(body, "run-a")
        with pytest.raises(JobFailedError):
            await nemo.deployments.wait_until_ready("replace", str(body["name"]), settings=FAST)
    finally:
        await _admin(stack.url("nemo"), "/admin/faults", {"deployment_failed": False})
    use = await nemo.deployments.use(body, "run-b")
    assert use.created and use.users == ["run-a", "run-b"]
    assert (await nemo.deployments.wait_until_ready("replace", str(body["name"]), settings=FAST)).ready
    runs = Runs()
    runs.over |= {"run-a", "run-b"}
    assert (await nemo.deployments.release("replace", str(body["name"]), "run-b", is_over=runs.is_over)).deleted
