"""The NeMo simulator over real HTTP, with small deterministic stand-ins for the Data Store and the NIM.

The stand-ins make the expected numbers exact: the "base" model always answers the weather in London,
so it is right on exactly the London rows; a LoRA adapter (an id with ``@cust-``) is always right; the
judge compares the two cities it is shown. Covers reference section 12.8's flow end to end plus the
real service's oddities (200 on job creation, ``pending`` before ``running``, 500 on a duplicate
deployment), error shapes, fault injection and a restart that keeps jobs.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from simulators.nemo.server import create_app
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port

pytestmark = pytest.mark.integration

NS = "dfwbp"
BASE = "meta/llama-3.2-1b-instruct"
JUDGE = "judge/llama-3.3-70b-instruct"
CITIES = ["London", "Paris", "London", "Rome", "Oslo", "London", "Lima", "London", "Cairo", "Quito"]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


# --------------------------------------------------------------------------------------------------
# Stand-ins
# --------------------------------------------------------------------------------------------------


@dataclass
class DataStoreStandIn:
    """Files by repository; the two read calls the NeMo simulator makes (tree and resolve)."""

    files: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)

    def put(self, namespace: str, name: str, path: str, content: str) -> None:
        self.files.setdefault((namespace, name), {})[path] = content.encode()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/hf/api/datasets/{ns}/{name}/tree/{rev}")
        async def tree(ns: str, name: str, rev: str) -> Any:
            repo = self.files.get((ns, name))
            if repo is None:
                return JSONResponse({"error": "Repository not found"}, status_code=404)
            return [{"type": "file", "path": path, "size": len(data), "oid": "0"} for path, data in repo.items()]

        @app.get("/v1/hf/datasets/{ns}/{name}/resolve/{rev}/{path:path}")
        async def resolve(ns: str, name: str, rev: str, path: str) -> Response:
            data = self.files.get((ns, name), {}).get(path)
            if data is None:
                return JSONResponse({"error": "Entry not found"}, status_code=404)
            return Response(content=data, media_type="application/octet-stream")

        return app


@dataclass
class NimStandIn:
    """Admin model registry plus a scripted chat completion endpoint that records what it was asked."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/admin/models")
        async def register(request: Request) -> Any:
            body = await request.json()
            self.models[body["id"]] = body
            return body

        @app.delete("/admin/models/{model_id:path}")
        async def unregister(model_id: str) -> Any:
            if self.models.pop(model_id, None) is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return {"id": model_id, "deleted": True}

        @app.get("/v1/models")
        async def list_models() -> Any:
            return {
                "object": "list",
                "data": [
                    {
                        "id": m,
                        "object": "model",
                        "created": 0,
                        "owned_by": "system",
                        "root": s["root"],
                        "parent": s["parent"],
                    }
                    for m, s in self.models.items()
                ],
            }

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            model = body.get("model")
            if model not in self.models and not str(model).startswith("judge/"):
                return JSONResponse({"error": {"message": f"The model `{model}` does not exist."}}, status_code=404)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            try:
                await asyncio.sleep(0.005)
                return _answer(model, body)
            finally:
                self.inflight -= 1

        return app


def _completion(model: str, content: str | None, tool_calls: list[dict[str, Any]] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chat-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool_calls else "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def _answer(model: str, body: dict[str, Any]) -> dict[str, Any]:
    text = "\n".join(str(m.get("content")) for m in body["messages"])
    if model == "judge/rambling":
        return _completion(model, "Both look reasonable to me.", None)
    if model.startswith("judge/"):
        found = re.search(r"TRUTH=(.*?) PRED=(.*)", text)
        rating = 1 if found and json.loads(found.group(1)) == json.loads(found.group(2)) else 0
        return _completion(model, f"RATING: {rating}\nEXPLANATION: compared the cities", None)
    asked = re.search(r"weather in (\w+)", text)
    city = asked.group(1) if asked else "London"
    answered = city if "@cust-" in model else "London"
    call = {
        "id": "call_x",
        "type": "function",
        "function": {"name": "get_weather", "arguments": json.dumps({"city": answered})},
    }
    return _completion(model, None, [call])


# --------------------------------------------------------------------------------------------------
# Data and request bodies
# --------------------------------------------------------------------------------------------------


def _eval_row(city: str) -> dict[str, Any]:
    """A logged call as an eval row: the reference's arguments are an object, as NeMo Evaluator expects."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": city}},
    }
    return {
        "request": {"messages": [{"role": "user", "content": f"What's the weather in {city}?"}], "tools": TOOLS},
        "response": {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [call]}}]},
    }


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def _seed_files(datastore: DataStoreStandIn, name: str, train_records: int = 20) -> None:
    datastore.put(NS, name, "eval_data.jsonl", _jsonl([_eval_row(c) for c in CITIES]))
    training = [
        {"messages": _eval_row(f"City{i}")["request"]["messages"], "tools": TOOLS} for i in range(train_records)
    ]
    datastore.put(NS, name, "training/train_data.jsonl", _jsonl(training))
    datastore.put(NS, name, "validation/val_data.jsonl", _jsonl(training[:3]))


def _eval_config(dataset: str, limit: int | None = None, judge: str = JUDGE, parallelism: int = 4) -> dict[str, Any]:
    files: dict[str, Any] = {"files_url": f"hf://datasets/{NS}/{dataset}/eval_data.jsonl"}
    if limit:
        files["limit"] = limit
    return {
        "type": "custom",
        "params": {"parallelism": parallelism, "temperature": 0},
        "tasks": {
            "custom-tool-calling": {
                "type": "chat-completion",
                "dataset": files,
                "params": {
                    "template": {
                        "messages": "{{ item.request.messages | tojson }}",
                        "tools": "{{ item.request.tools | tojson }}",
                        "tool_choice": "required",
                    }
                },
                "metrics": {
                    "tool-calling-accuracy": {
                        "type": "tool-calling",
                        "params": {
                            "tool_calls_ground_truth": "{{ item.response.choices[0].message.tool_calls | tojson }}"
                        },
                    },
                    "correctness": {
                        "type": "llm-judge",
                        "params": {
                            "model": judge,
                            "template": {
                                "messages": [
                                    {"role": "system", "content": "Return RATING: 0 or 1"},
                                    {
                                        "role": "user",
                                        "content": "TRUTH={{ item.response.choices[0].message.tool_calls[0].function.arguments | tojson }}"
                                        " PRED={{ sample.response.choices[0].message.tool_calls[0].function.arguments }}",
                                    },
                                ]
                            },
                            "scores": {
                                "rating": {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}}
                            },
                        },
                    },
                },
            }
        },
    }


def _config_body() -> dict[str, Any]:
    return {
        "name": "llama-3.2-1b-instruct@v1.0.0+dfw",
        "namespace": NS,
        "target": f"{BASE}@2.0",
        "training_options": [
            {
                "training_type": "sft",
                "finetuning_type": "lora",
                "num_gpus": 1,
                "num_nodes": 1,
                "tensor_parallel_size": 1,
                "data_parallel_size": 1,
                "use_sequence_parallel": False,
                "micro_batch_size": 1,
            }
        ],
        "training_precision": "bf16-mixed",
        "max_seq_length": 8192,
    }


def _job_body(dataset: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"customization-orders-{BASE}",
        "output_model": f"{NS}/customized-meta-llama-3.2-1b-instruct@v1",
        "config": f"{NS}/llama-3.2-1b-instruct@v1.0.0+dfw",
        "dataset": {"name": dataset, "namespace": NS},
        "hyperparameters": {
            "training_type": "sft",
            "finetuning_type": "lora",
            "epochs": 2,
            "batch_size": 4,
            "learning_rate": 0.0001,
            "lora": {"adapter_dim": 32, "adapter_dropout": 0.1},
        },
    }
    body.update(overrides)
    return body


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    nemo: httpx.Client
    nim: NimStandIn
    datastore: DataStoreStandIn
    cfg: LocalStackConfig
    nim_url: str


def _start_stack(
    state_dir: Path, clock_speed: float, nemo_settings: dict[str, Any] | None = None
) -> tuple[Stack, list[ThreadedServer]]:
    datastore, nim = DataStoreStandIn(), NimStandIn()
    ds_server, nim_server = ThreadedServer(datastore.app()), ThreadedServer(nim.app())
    ports = Ports(nemo=free_port(), datastore=ds_server.port, nim=nim_server.port)
    cfg = LocalStackConfig(
        state_dir=str(state_dir),
        clock_speed=clock_speed,
        ports=ports,
        nemo={"tick_interval_s": 0.02, **(nemo_settings or {})},
    )
    servers = [ds_server.start(), nim_server.start(), ThreadedServer(create_app(cfg), port=ports.nemo).start()]
    client = httpx.Client(base_url=cfg.url("nemo"), timeout=10)
    return Stack(client, nim, datastore, cfg, cfg.url("nim")), servers


def _stop(stack: Stack, servers: list[ThreadedServer]) -> None:
    stack.nemo.close()
    with ThreadPoolExecutor(len(servers)) as pool:  # each stop waits for uvicorn's 0.1 s tick: do them together
        list(pool.map(ThreadedServer.stop, servers))


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Clock at 1000x: a two-epoch fine-tune takes tens of milliseconds."""
    stack, servers = _start_stack(tmp_path_factory.mktemp("nemo-fast"), 1000)
    yield stack
    _stop(stack, servers)


@pytest.fixture
def frozen(tmp_path: Path) -> Iterator[Stack]:
    """Clock practically stopped: time moves only through ``POST /admin/clock {"advance_s"}``."""
    stack, servers = _start_stack(tmp_path / "state", 1e-6)
    yield stack
    _stop(stack, servers)


def _wait(probe: Callable[[], Any], timeout_s: float = 120.0, interval_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {probe}")


def _wait_status(client: httpx.Client, path: str, wanted: set[str], seen: list[str] | None = None) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = client.get(path).json()
        status = body.get("status") or body.get("status_details", {}).get("status")
        if seen is not None and (not seen or seen[-1] != status):
            seen.append(status)
        return body if status in wanted else None

    return dict(_wait(probe))


def _advance(client: httpx.Client, seconds: float) -> None:
    assert client.post("/admin/clock", json={"advance_s": seconds}).status_code == 200


# --------------------------------------------------------------------------------------------------
# The minimal flow (reference 12.8)
# --------------------------------------------------------------------------------------------------


def test_minimal_flow_end_to_end(fast: Stack) -> None:
    nemo = fast.nemo
    # 1. Namespace (409 on the second try).
    created = nemo.post("/v1/namespaces", json={"id": NS})
    assert created.status_code == 200 and created.json()["id"] == NS
    assert nemo.post("/v1/namespaces", json={"id": NS}).status_code == 409

    # 2-3. Files in the Data Store, dataset registered the blueprint's way (GET 404 -> POST, then PATCH).
    _seed_files(fast.datastore, "flywheel-ds")
    assert nemo.get(f"/v1/datasets/{NS}/flywheel-ds").status_code == 404
    dataset_body = {
        "name": "flywheel-ds",
        "namespace": NS,
        "files_url": f"hf://datasets/{NS}/flywheel-ds",
        "project": "flywheel",
    }
    dataset = nemo.post("/v1/datasets", json=dataset_body)
    assert dataset.status_code == 200 and dataset.json()["id"].startswith("dataset-")
    patched = nemo.patch(f"/v1/datasets/{NS}/flywheel-ds", json={**dataset_body, "description": "eval + train"})
    assert patched.status_code == 200 and patched.json()["description"] == "eval + train"

    # 4. Deploy the base NIM: pending -> ready, then the NIM serves it; a duplicate is the real DMS's 500.
    deploy_body = {
        "name": "meta-llama-3.2-1b-instruct",
        "namespace": NS,
        "config": {
            "model": BASE,
            "nim_deployment": {"image_name": "nvcr.io/nim/meta/llama-3.2-1b-instruct", "image_tag": "1.8.3", "gpu": 1},
        },
    }
    deployment = nemo.post("/v1/deployment/model-deployments", json=deploy_body)
    assert deployment.status_code == 200
    assert deployment.json()["status_details"]["status"] == "pending" and deployment.json()["deployed"] is False
    assert deployment.json()["url"] == fast.nim_url
    duplicate = nemo.post("/v1/deployment/model-deployments", json=deploy_body)
    assert duplicate.status_code == 500 and "model deployment already exists" in duplicate.text
    ready = _wait_status(nemo, f"/v1/deployment/model-deployments/{NS}/meta-llama-3.2-1b-instruct", {"ready"})
    assert ready["deployed"] is True
    assert fast.nim.models[BASE] == {"id": BASE, "root": BASE, "parent": None, "lora": None}

    # 5. Base evaluation: right on the London rows only.
    job = nemo.post(
        "/v1/evaluation/jobs", json={"config": _eval_config("flywheel-ds"), "target": {"type": "model", "model": BASE}}
    )
    assert job.status_code == 200
    body = job.json()
    assert body["id"].startswith("eval-") and body["status"] == "created"
    assert body["status_details"] == {"message": None, "task_status": {}, "progress": None}
    assert body["config"]["id"].startswith("eval-config-") and body["target"]["id"].startswith("eval-target-")
    task_dataset = body["config"]["tasks"]["custom-tool-calling"]["dataset"]
    assert task_dataset["id"].startswith("dataset-") and task_dataset["version_id"] == "main"
    seen: list[str] = []
    done = _wait_status(nemo, f"/v1/evaluation/jobs/{body['id']}", {"completed", "failed"}, seen)
    assert done["status"] == "completed", done["status_details"]
    assert set(seen) <= {"created", "running", "completed"}
    assert done["status_details"]["progress"] == 100.0 and done["status_details"]["samples_processed"] == 10
    results = nemo.get(f"/v1/evaluation/jobs/{body['id']}/results").json()
    assert results["job"] == body["id"] and results["id"].startswith("evaluation_result-")
    scores = results["tasks"]["custom-tool-calling"]["metrics"]["tool-calling-accuracy"]["scores"]
    assert scores["function_name_accuracy"]["value"] == 1.0
    assert scores["function_name_and_args_accuracy"]["value"] == pytest.approx(0.4)
    stats = scores["function_name_and_args_accuracy"]["stats"]
    assert stats["count"] == 10 and stats["sum"] == 4.0 and stats["nan_count"] == 0 and stats["min"] == 0.0
    rating = results["tasks"]["custom-tool-calling"]["metrics"]["correctness"]["scores"]["rating"]
    assert rating["value"] == pytest.approx(0.4)
    # The NIM got the rendered template: a real list of messages, the tools, the inference params.
    asked = next(r for r in fast.nim.requests if r["model"] == BASE)
    assert isinstance(asked["messages"], list) and asked["tools"] == TOOLS and asked["tool_choice"] == "required"
    assert asked["temperature"] == 0
    assert fast.nim.max_inflight <= 4
    archive = zipfile.ZipFile(io.BytesIO(nemo.get(f"/v1/evaluation/jobs/{body['id']}/download-results").content))
    per_sample = json.loads(archive.read("results.json"))["custom-tool-calling"]
    assert len(per_sample) == 10
    first = per_sample[0]
    assert first["item"] == _eval_row("London") and first["sample"]["response"]["choices"][0]["message"]["tool_calls"]
    assert first["metrics"]["tool-calling-accuracy"]["scores"]["function_name_and_args_accuracy"] == {"value": 1.0}
    assert per_sample[1]["metrics"]["correctness"]["scores"]["rating"] == {"value": 0.0}

    # 6. Customization: config 200 then 409; job 200 with the versioned output model.
    assert nemo.post("/v1/customization/configs", json=_config_body()).status_code == 200
    assert nemo.post("/v1/customization/configs", json=_config_body()).status_code == 409
    created_job = nemo.post("/v1/customization/jobs", json=_job_body("flywheel-ds"))
    assert created_job.status_code == 200, created_job.text
    cust = created_job.json()
    assert re.fullmatch(r"cust-[0-9A-Za-z]{22}", cust["id"])
    assert cust["status"] == "created" and cust["dataset"] == f"{NS}/flywheel-ds"
    assert cust["output_model"] == f"{NS}/customized-meta-llama-3.2-1b-instruct@{cust['id']}"
    assert cust["config_snapshot"]["base_model"] == BASE
    assert cust["status_details"]["status_logs"][0]["message"] == "created"
    model_path = f"/v1/models/{cust['output_model']}"
    # The entity exists at once (at 1000x the job may already have finished: "created" is checked in unit tests).
    assert nemo.get(model_path).json()["artifact"]["status"] in ("created", "upload_completed")
    status = _wait_status(nemo, f"/v1/customization/jobs/{cust['id']}/status", {"completed", "failed"})
    assert status["status"] == "completed", status["status_logs"]
    assert status["percentage_done"] == 100.0 and status["epochs_completed"] == 2
    assert status["steps_per_epoch"] == 5 and status["steps_completed"] == 10
    losses = [p["value"] for p in status["metrics"]["metrics"]["val_loss"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert [log["message"] for log in status["status_logs"]][:4] == [
        "created",
        "pending",
        "running",
        "Epoch 1/2 completed",
    ]
    _wait(lambda: cust["output_model"] in fast.nim.models)
    assert fast.nim.models[cust["output_model"]] == {
        "id": cust["output_model"],
        "root": BASE,
        "parent": BASE,
        "lora": {"train_records": 20, "epochs": 2},
    }
    entity = nemo.get(model_path).json()
    assert entity["artifact"]["status"] == "upload_completed" and entity["peft"]["finetuning_type"] == "lora"
    listed = nemo.get(
        "/v1/customization/jobs", params={"filter[status]": "completed", "filter[base_model]": BASE}
    ).json()
    assert cust["id"] in [j["id"] for j in listed["data"]]

    # 7. Evaluate the adapter: always right.
    job2 = nemo.post(
        "/v1/evaluation/jobs",
        json={
            "config": _eval_config("flywheel-ds", limit=5),
            "target": {"type": "model", "model": cust["output_model"]},
        },
    ).json()
    _wait_status(nemo, f"/v1/evaluation/jobs/{job2['id']}", {"completed"})
    scores2 = nemo.get(f"/v1/evaluation/jobs/{job2['id']}/results").json()["tasks"]["custom-tool-calling"]["metrics"]
    assert scores2["tool-calling-accuracy"]["scores"]["function_name_and_args_accuracy"]["value"] == 1.0
    assert scores2["tool-calling-accuracy"]["scores"]["function_name_and_args_accuracy"]["stats"]["count"] == 5

    # 8. Cleanup.
    deleted = nemo.delete(model_path)
    assert deleted.status_code == 200 and deleted.json()["message"] == "Resource deleted successfully."
    assert nemo.get(model_path).status_code == 404
    assert nemo.delete(f"/v1/customization/configs/{NS}/llama-3.2-1b-instruct@v1.0.0+dfw").status_code == 200
    for job_id in (body["id"], job2["id"]):
        assert nemo.delete(f"/v1/evaluation/jobs/{job_id}").status_code == 200
        assert nemo.get(f"/v1/evaluation/jobs/{job_id}").status_code == 404
    assert nemo.delete(f"/v1/datasets/{NS}/flywheel-ds").status_code == 200
    gone = nemo.delete(f"/v1/deployment/model-deployments/{NS}/meta-llama-3.2-1b-instruct")
    assert gone.status_code == 200 and gone.json()["id"] == f"{NS}/meta-llama-3.2-1b-instruct"
    assert nemo.get(f"/v1/deployment/model-deployments/{NS}/meta-llama-3.2-1b-instruct").status_code == 404
    assert BASE not in fast.nim.models


def test_the_official_sdk_reads_our_answers(fast: Stack) -> None:
    """Auto-pagination (empty page past the end) and the typed models of nemo-microservices 1.5.0."""
    from nemo_microservices import NeMoMicroservices

    sdk = NeMoMicroservices(base_url=fast.cfg.url("nemo"), max_retries=0)
    for i in range(12):
        sdk.namespaces.create(id=f"sdk-ns-{i}")
    names = [ns.id for ns in sdk.namespaces.list(page_size=5)]
    assert [f"sdk-ns-{i}" for i in range(12)] == [n for n in names if n and n.startswith("sdk-ns-")]
    targets = sdk.customization.targets.list()
    assert {t.name for t in targets.data} >= {"llama-3.2-1b-instruct@2.0", "llama-3.1-8b-instruct@2.0"}
    _seed_files(fast.datastore, "sdk-ds")
    sdk.datasets.create(name="sdk-ds", namespace=NS, files_url=f"hf://datasets/{NS}/sdk-ds")
    job = sdk.customization.jobs.create(
        config="meta/llama-3.2-1b-instruct@v1.0.0+A100",
        dataset={"name": "sdk-ds", "namespace": NS},
        hyperparameters={"finetuning_type": "lora", "epochs": 1},
        output_model=f"{NS}/sdk-model",
    )
    job_id = str(job.id)
    assert job.status == "created" and job.output_model == f"{NS}/sdk-model@{job_id}"
    _wait(lambda: sdk.customization.jobs.status(job_id).status == "completed")
    details = sdk.customization.jobs.status(job_id)
    assert details.metrics is not None and details.metrics.metrics is not None and details.metrics.metrics.train_loss
    cancelled = sdk.customization.jobs.list(filter={"status": "cancelled"})
    assert job_id not in [j.id for j in cancelled.data]


# --------------------------------------------------------------------------------------------------
# Lifecycles on a frozen clock
# --------------------------------------------------------------------------------------------------


def test_customization_goes_created_pending_running_completed(frozen: Stack) -> None:
    nemo = frozen.nemo
    _seed_files(frozen.datastore, "ds", train_records=40)
    nemo.post("/v1/datasets", json={"name": "ds", "namespace": NS, "files_url": f"hf://datasets/{NS}/ds"})
    body = _job_body("ds", config="meta/llama-3.2-1b-instruct@v1.0.0+A100")
    body["hyperparameters"]["log_every_n_steps"] = 2
    job = nemo.post("/v1/customization/jobs", json=body)
    assert job.status_code == 200
    job_id = job.json()["id"]
    path = f"/v1/customization/jobs/{job_id}"
    assert nemo.get(path).json()["status"] == "created"
    _advance(nemo, 2.5)
    assert nemo.get(path).json()["status"] == "pending", "pending comes before running, as on the real service"
    _advance(nemo, 5)
    running = nemo.get(f"{path}/status").json()
    assert running["status"] == "running" and running["percentage_done"] < 5
    # 40 records x 2 epochs x 0.75 s = 60 s of training.
    _advance(nemo, 40)
    half = nemo.get(f"{path}/status").json()
    assert half["status"] == "running" and 60 < half["percentage_done"] < 75 and half["epochs_completed"] == 1
    points = half["metrics"]["metrics"]["train_loss"]
    assert [p["step"] for p in points] == [1, 3, 5, 7, 9, 11] and points[-1]["value"] < points[0]["value"]
    assert nemo.get(f"{path}/container-logs").json()["entries"]
    assert job.json()["output_model"] not in frozen.nim.models
    _advance(nemo, 25)
    done = nemo.get(path).json()
    assert done["status"] == "completed" and done["status_details"]["percentage_done"] == 100.0
    _wait(lambda: done["output_model"] in frozen.nim.models)
    assert nemo.post(f"{path}/cancel").status_code == 409


def test_cancel_and_not_enough_resources(frozen: Stack) -> None:
    nemo = frozen.nemo
    _seed_files(frozen.datastore, "ds")
    nemo.post("/v1/datasets", json={"name": "ds", "namespace": NS, "files_url": f"hf://datasets/{NS}/ds"})
    body = _job_body("ds", config="meta/llama-3.2-1b-instruct@v1.0.0+A100")
    job_id = nemo.post("/v1/customization/jobs", json=body).json()["id"]
    _advance(nemo, 10)
    cancelled = nemo.post(f"/v1/customization/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["status_details"]["status_logs"][-1]["message"] == "cancelled"
    _advance(nemo, 1000)
    assert nemo.get(f"/v1/customization/jobs/{job_id}").json()["status"] == "cancelled"
    model = nemo.get(f"/v1/models/{cancelled.json()['output_model']}").json()
    assert model["artifact"]["status"] == "created" and cancelled.json()["output_model"] not in frozen.nim.models

    faults = nemo.post("/admin/faults", json={"customization_not_enough_resources": True})
    assert faults.status_code == 200 and faults.json()["customization_not_enough_resources"] is True
    stuck = nemo.post("/v1/customization/jobs", json=body).json()["id"]
    _advance(nemo, 5000)
    status = nemo.get(f"/v1/customization/jobs/{stuck}/status").json()
    assert status["status"] == "pending" and status["status_logs"][-1]["message"] == "NotEnoughResources"
    nemo.post("/admin/faults", json={"customization_not_enough_resources": False, "customization_failed": True})
    failing = nemo.post("/v1/customization/jobs", json=body).json()["id"]
    _advance(nemo, 5000)
    failed = nemo.get(f"/v1/customization/jobs/{failing}/status").json()
    assert failed["status"] == "failed" and "simulated fault" in failed["status_logs"][-1]["detail"]
    assert nemo.get(f"/v1/customization/jobs/{stuck}").json()["status"] == "pending", "faults apply to new jobs only"
    assert nemo.delete("/admin/faults").json()["customization_failed"] is False


def test_adapter_is_listed_late_when_asked(frozen: Stack) -> None:
    nemo = frozen.nemo
    _seed_files(frozen.datastore, "ds")
    nemo.post("/v1/datasets", json={"name": "ds", "namespace": NS, "files_url": f"hf://datasets/{NS}/ds"})
    nemo.post("/admin/faults", json={"adapter_visible_after_s": 120})
    job = nemo.post(
        "/v1/customization/jobs", json=_job_body("ds", config="meta/llama-3.2-1b-instruct@v1.0.0+A100")
    ).json()
    _advance(nemo, 100)
    assert nemo.get(f"/v1/customization/jobs/{job['id']}").json()["status"] == "completed"
    assert job["output_model"] not in frozen.nim.models
    _advance(nemo, 120)
    _wait(lambda: job["output_model"] in frozen.nim.models)


def test_deployment_failure_and_409_flag(tmp_path: Path) -> None:
    stack, servers = _start_stack(tmp_path, 1e-6, {"dms_duplicate_500": False, "faults": {"deployment_failed": True}})
    try:
        body = {"name": "judge", "namespace": NS, "config": {"model": JUDGE}}
        assert stack.nemo.post("/v1/deployment/model-deployments", json=body).status_code == 200
        assert stack.nemo.post("/v1/deployment/model-deployments", json=body).status_code == 409
        _advance(stack.nemo, 31)
        got = stack.nemo.get(f"/v1/deployment/model-deployments/{NS}/judge").json()
        assert got["status_details"]["status"] == "failed" and got["deployed"] is False
        assert JUDGE not in stack.nim.models
        listed = stack.nemo.get("/v1/deployment/model-deployments", params={"filter[status]": "failed"}).json()
        assert [d["name"] for d in listed["data"]] == ["judge"]
    finally:
        _stop(stack, servers)


# --------------------------------------------------------------------------------------------------
# Evaluator failures
# --------------------------------------------------------------------------------------------------


def test_evaluation_failures_and_unparseable_judges(fast: Stack) -> None:
    nemo = fast.nemo
    _seed_files(fast.datastore, "ev")
    unknown = nemo.post(
        "/v1/evaluation/jobs", json={"config": _eval_config("ev"), "target": {"type": "model", "model": "nobody/model"}}
    ).json()
    failed = _wait_status(nemo, f"/v1/evaluation/jobs/{unknown['id']}", {"failed", "completed"})
    assert failed["status"] == "failed" and "404" in failed["status_details"]["message"]
    assert failed["status_details"]["task_status"] == {"custom-tool-calling": "failed"}
    assert nemo.get(f"/v1/evaluation/jobs/{unknown['id']}/results").status_code == 404
    assert nemo.post(f"/v1/evaluation/jobs/{unknown['id']}/cancel").status_code == 409

    missing = nemo.post(
        "/v1/evaluation/jobs",
        json={"config": _eval_config("no-such-dataset"), "target": {"type": "model", "model": "judge/x"}},
    ).json()
    failed = _wait_status(nemo, f"/v1/evaluation/jobs/{missing['id']}", {"failed", "completed"})
    assert failed["status"] == "failed" and "Data Store" in failed["status_details"]["message"]

    # A judge that never gives a score: counted in nan_count, the job still completes.
    fast.nim.models.setdefault(BASE, {"id": BASE, "root": BASE, "parent": None, "lora": None})
    rambling = nemo.post(
        "/v1/evaluation/jobs",
        json={
            "config": _eval_config("ev", limit=3, judge="judge/rambling"),
            "target": {"type": "model", "model": BASE},
        },
    ).json()
    done = _wait_status(nemo, f"/v1/evaluation/jobs/{rambling['id']}", {"completed", "failed"})
    assert done["status"] == "completed", done["status_details"]
    rating = nemo.get(f"/v1/evaluation/jobs/{rambling['id']}/results").json()["tasks"]["custom-tool-calling"][
        "metrics"
    ]["correctness"]["scores"]["rating"]
    assert rating["value"] is None and rating["stats"]["nan_count"] == 3 and rating["stats"]["count"] == 0

    # An endpoint target (api_endpoint) and a config/target stored first and referenced by name.
    target = nemo.post(
        "/v1/evaluation/targets",
        json={
            "type": "model",
            "name": "by-endpoint",
            "namespace": NS,
            "model": {"api_endpoint": {"url": f"{fast.nim_url}/v1", "model_id": BASE}},
        },
    )
    assert target.status_code == 200 and target.json()["id"].startswith("eval-target-")
    config = nemo.post("/v1/evaluation/configs", json={**_eval_config("ev", limit=2), "name": "tc", "namespace": NS})
    assert config.status_code == 200
    by_ref = nemo.post("/v1/evaluation/jobs", json={"config": f"{NS}/tc", "target": f"{NS}/by-endpoint"})
    assert by_ref.status_code == 200 and by_ref.json()["config"]["name"] == "tc"
    assert (
        _wait_status(nemo, f"/v1/evaluation/jobs/{by_ref.json()['id']}", {"completed", "failed"})["status"]
        == "completed"
    )


def test_evaluation_pending_fault(frozen: Stack) -> None:
    nemo = frozen.nemo
    frozen.nim.models[BASE] = {"id": BASE, "root": BASE, "parent": None, "lora": None}
    _seed_files(frozen.datastore, "ev")
    nemo.post("/admin/faults", json={"evaluation_pending_s": 30})
    job = nemo.post(
        "/v1/evaluation/jobs", json={"config": _eval_config("ev", limit=2), "target": {"type": "model", "model": BASE}}
    ).json()
    _advance(nemo, 2)
    _wait_status(nemo, f"/v1/evaluation/jobs/{job['id']}", {"pending"})
    _advance(nemo, 30)
    assert _wait_status(nemo, f"/v1/evaluation/jobs/{job['id']}", {"completed", "failed"})["status"] == "completed"


# --------------------------------------------------------------------------------------------------
# Errors, faults, restart
# --------------------------------------------------------------------------------------------------


def test_error_shapes(fast: Stack) -> None:
    nemo = fast.nemo
    missing = nemo.get("/v1/customization/jobs/cust-nope")
    assert missing.status_code == 404 and "cust-nope" in missing.json()["detail"]
    bad = nemo.post(
        "/v1/customization/jobs",
        json={"config": "meta/llama-3.2-1b-instruct@v1.0.0+A100", "dataset": "x/y", "hyperparameters": {}},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "hyperparameters", "finetuning_type"]
    assert bad.json()["detail"][0]["type"] == "missing"
    unversioned = nemo.post("/v1/customization/jobs", json=_job_body("x", config=BASE))
    assert unversioned.status_code == 422 and unversioned.json()["detail"][0]["loc"] == ["body", "config"]
    assert nemo.post("/v1/customization/jobs", json=_job_body("x", config=f"{NS}/nope@v1")).status_code == 404
    no_dataset = nemo.post(
        "/v1/customization/jobs", json=_job_body("nope", config="meta/llama-3.2-1b-instruct@v1.0.0+A100")
    )
    assert no_dataset.status_code == 404 and "Dataset" in no_dataset.json()["detail"]
    not_json = nemo.post("/v1/namespaces", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and isinstance(not_json.json()["detail"], list)
    bad_target = nemo.post(
        "/v1/customization/configs", json={**_config_body(), "name": "x@v1", "target": "meta/none@1"}
    )
    assert bad_target.status_code == 404
    unsupported = nemo.post(
        "/v1/evaluation/jobs", json={"config": {"type": "gsm8k"}, "target": {"type": "model", "model": BASE}}
    )
    assert unsupported.status_code == 422 and unsupported.json()["detail"][0]["loc"] == ["body", "config", "type"]
    assert nemo.get("/v1/namespaces", params={"sort": "-nonsense"}).status_code == 422
    assert nemo.post("/admin/faults", json={"error_rate": "lots"}).status_code == 422
    page = nemo.get("/v1/customization/configs", params={"page": 99}).json()
    assert page["data"] == [] and page["pagination"]["page"] == 99


def test_http_faults(tmp_path: Path) -> None:
    stack, servers = _start_stack(tmp_path, 1000, {"faults": {"seed": 1}})
    try:
        nemo = stack.nemo
        nemo.post("/admin/faults", json={"error_rate": {"/v1/namespaces": 1.0}})
        answer = nemo.get("/v1/namespaces")
        assert answer.status_code == 503 and answer.headers["x-flywheel-simulated"] == "true"
        assert nemo.get("/v1/datasets").status_code == 200, "other prefixes are untouched"
        assert nemo.get("/health").status_code == 200
        nemo.post("/admin/faults", json={"error_rate": {}, "drop_rate": {"/v1/models": 1.0}})
        with pytest.raises(httpx.TransportError):
            nemo.get("/v1/models")
        nemo.post("/admin/faults", json={"drop_rate": {}, "latency_s": {"/v1/projects": 0.2}})
        started = time.monotonic()
        assert nemo.get("/v1/projects").status_code == 200
        assert time.monotonic() - started >= 0.2
    finally:
        _stop(stack, servers)


def test_a_restart_keeps_jobs(tmp_path: Path) -> None:
    stack, servers = _start_stack(tmp_path, 1e-6)
    try:
        _seed_files(stack.datastore, "ds")
        stack.nemo.post("/v1/datasets", json={"name": "ds", "namespace": NS, "files_url": f"hf://datasets/{NS}/ds"})
        job_id = stack.nemo.post(
            "/v1/customization/jobs", json=_job_body("ds", config="meta/llama-3.2-1b-instruct@v1.0.0+A100")
        ).json()["id"]
        _advance(stack.nemo, 20)
        before = stack.nemo.get(f"/v1/customization/jobs/{job_id}/status").json()
        assert before["status"] == "running"
    finally:
        _stop(stack, servers)
    again, servers = _start_stack(tmp_path, 1e-6)
    try:
        after = again.nemo.get(f"/v1/customization/jobs/{job_id}/status").json()
        assert after["status"] == "running" and after["steps_completed"] == before["steps_completed"]
        assert again.nemo.get(f"/v1/datasets/{NS}/ds").status_code == 200
        _advance(again.nemo, 100)
        assert again.nemo.get(f"/v1/customization/jobs/{job_id}").json()["status"] == "completed"
    finally:
        _stop(again, servers)


def test_contract_with_the_real_nim_simulator(tmp_path: Path) -> None:
    """The NIM simulator of this project accepts our registrations and serves what we evaluate."""
    from simulators.nim.server import create_app as nim_app

    datastore = DataStoreStandIn()
    ds_server = ThreadedServer(datastore.app())
    ports = Ports(nemo=free_port(), datastore=ds_server.port, nim=free_port())
    cfg = LocalStackConfig(
        state_dir=str(tmp_path),
        clock_speed=1000,
        ports=ports,
        nemo={"tick_interval_s": 0.02},
        nim={"latency": {"time_scale": 0}},
    )
    servers = [ds_server.start(), ThreadedServer(nim_app(cfg), port=ports.nim).start()]
    servers.append(ThreadedServer(create_app(cfg), port=ports.nemo).start())
    nemo = httpx.Client(base_url=cfg.url("nemo"), timeout=30)

    def served() -> list[str]:
        return [m["id"] for m in httpx.get(f"{cfg.url('nim')}/v1/models").json()["data"]]

    try:
        _seed_files(datastore, "ds")
        nemo.post("/v1/datasets", json={"name": "ds", "namespace": NS, "files_url": f"hf://datasets/{NS}/ds"})
        nemo.post("/v1/deployment/model-deployments", json={"name": "base", "namespace": NS, "config": {"model": BASE}})
        _wait_status(nemo, f"/v1/deployment/model-deployments/{NS}/base", {"ready"})
        assert BASE in served()
        job = nemo.post(
            "/v1/evaluation/jobs",
            json={"config": _eval_config("ds", limit=4, judge=BASE), "target": {"type": "model", "model": BASE}},
        ).json()
        done = _wait_status(nemo, f"/v1/evaluation/jobs/{job['id']}", {"completed", "failed"})
        assert done["status"] == "completed", done["status_details"]
        scores = nemo.get(f"/v1/evaluation/jobs/{job['id']}/results").json()["tasks"]["custom-tool-calling"]
        name_score = scores["metrics"]["tool-calling-accuracy"]["scores"]["function_name_accuracy"]
        assert name_score["stats"]["count"] == 4 and 0.0 <= name_score["value"] <= 1.0
        body = _job_body("ds", config="meta/llama-3.2-1b-instruct@v1.0.0+A100")
        cust = nemo.post("/v1/customization/jobs", json=body).json()
        assert _wait_status(nemo, f"/v1/customization/jobs/{cust['id']}/status", {"completed"})
        _wait(lambda: cust["output_model"] in served())
        assert nemo.delete(f"/v1/deployment/model-deployments/{NS}/base").status_code == 200
        assert BASE not in served()
    finally:
        nemo.close()
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(ThreadedServer.stop, servers))
