"""The NeMo simulator app in-process (no sockets): entities, validation, state machines, admin, persistence.

The Data Store and NIM neighbours are replaced by fakes on the app's shared state, and time moves only
through ``POST /admin/clock`` (the clock runs at a millionth of real speed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from simulators.nemo.server import create_app
from simulators.nemo.upstream import HfLocation, UpstreamError
from simulators.settings import LocalStackConfig, SettingsError

NS = "dfwbp"
A100 = "meta/llama-3.2-1b-instruct@v1.0.0+A100"


class FakeDatastore:
    def __init__(self) -> None:
        self.records = 20
        self.broken = False

    async def count_records(self, location: HfLocation, folder: str = "training") -> int:
        if self.broken:
            raise UpstreamError("Data Store unreachable (fake)")
        return self.records

    async def read_rows(self, files_url: str, endpoint: str | None = None) -> list[dict[str, Any]]:
        return [{"question": f"q{i}"} for i in range(3)]


class FakeNim:
    base_url = "http://nim.fake"
    chat_url = "http://nim.fake/v1/chat/completions"

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        self.down = False
        self.block = asyncio.Event()
        self.calls = 0

    async def register_model(self, model_id: str, root: str, parent: str | None, lora: dict[str, Any] | None) -> None:
        if self.down:
            raise UpstreamError("NIM unreachable (fake)")
        self.models[model_id] = {"root": root, "parent": parent, "lora": lora}

    async def unregister_model(self, model_id: str) -> None:
        self.models.pop(model_id, None)

    async def chat(self, url: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls += 1
        await self.block.wait()
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}


def _cfg(tmp_path: Path, **nemo: Any) -> LocalStackConfig:
    return LocalStackConfig(state_dir=str(tmp_path), clock_speed=1e-6, nemo={"tick_interval_s": 0, **nemo})


def _app(cfg: LocalStackConfig) -> tuple[FastAPI, FakeDatastore, FakeNim]:
    app = create_app(cfg)
    datastore, nim = FakeDatastore(), FakeNim()
    app.state.sim.datastore = datastore
    app.state.sim.nim = nim
    return app, datastore, nim


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeDatastore, FakeNim]]:
    app, datastore, nim = _app(_cfg(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nemo") as client:
        yield client, datastore, nim
    for key in list(app.state.sim.tasks):
        app.state.sim.cancel_task(key)


async def _advance(client: httpx.AsyncClient, seconds: float) -> None:
    assert (await client.post("/admin/clock", json={"advance_s": seconds})).status_code == 200


async def _dataset(client: httpx.AsyncClient, name: str = "ds") -> None:
    answer = await client.post(
        "/v1/datasets", json={"name": name, "namespace": NS, "files_url": f"hf://datasets/{NS}/{name}"}
    )
    assert answer.status_code == 200


def _job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "config": A100,
        "dataset": f"{NS}/ds",
        "hyperparameters": {"finetuning_type": "lora", "epochs": 2},
    }
    body.update(overrides)
    return body


async def test_a_fresh_platform_is_seeded(sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim]) -> None:
    client, _, _ = sim
    targets = (await client.get("/v1/customization/targets")).json()["data"]
    assert {f"{t['namespace']}/{t['name']}" for t in targets} == {
        "meta/llama-3.2-1b-instruct@2.0",
        "meta/llama-3.2-3b-instruct@2.0",
        "meta/llama-3.1-8b-instruct@2.0",
    }
    assert all(t["enabled"] and t["status"] == "ready" and t["id"].startswith("cust-target-") for t in targets)
    config = (await client.get(f"/v1/customization/configs/{A100}")).json()
    assert config["target"] == "meta/llama-3.2-1b-instruct@2.0"
    assert {o["finetuning_type"] for o in config["training_options"]} == {"lora", "all_weights"}
    lora_configs = (await client.get("/v1/customization/configs", params={"filter[finetuning_type]": "lora"})).json()
    assert lora_configs["pagination"]["total_results"] == 3
    assert [n["id"] for n in (await client.get("/v1/namespaces")).json()["data"]] == ["default", "meta"]


async def test_entity_crud(sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim]) -> None:
    client, _, _ = sim
    assert (await client.post("/v1/namespaces", json={"id": "a/b"})).status_code == 422
    project = await client.post("/v1/projects", json={"name": "flywheel", "namespace": NS})
    assert project.status_code == 200 and project.json()["id"].startswith("project-")
    model = await client.post("/v1/models", json={"name": "base@v1", "namespace": NS, "base_model": "meta/x"})
    assert model.status_code == 200
    patched = await client.patch(f"/v1/models/{NS}/base@v1", json={"description": "d", "name": "renamed"})
    assert patched.json()["name"] == "base@v1" and patched.json()["description"] == "d"
    assert patched.json()["created_at"] == model.json()["created_at"]
    await client.post("/v1/models", json={"name": "other", "namespace": "elsewhere"})
    listed = (await client.get("/v1/models", params={"filter[namespace]": NS, "sort": "-created_at"})).json()
    assert [m["name"] for m in listed["data"]] == ["base@v1"]
    bad_patch = await client.patch(f"/v1/models/{NS}/base@v1", json={"model_providers": "not-a-list"})
    assert bad_patch.status_code == 422
    deleted = (await client.delete(f"/v1/models/{NS}/base@v1")).json()
    assert deleted["message"] == "Resource deleted successfully." and deleted["id"] == model.json()["id"]
    assert (await client.delete(f"/v1/models/{NS}/base@v1")).status_code == 404


async def test_customization_job_validation(sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim]) -> None:
    client, _, _ = sim
    await _dataset(client)
    not_power_of_two = _job(hyperparameters={"finetuning_type": "lora", "lora": {"adapter_dim": 24}})
    assert (await client.post("/v1/customization/jobs", json=not_power_of_two)).status_code == 422
    dpo = _job(hyperparameters={"finetuning_type": "lora", "training_type": "dpo"})
    refused = await client.post("/v1/customization/jobs", json=dpo)
    assert refused.status_code == 422 and "no training option" in refused.json()["detail"][0]["msg"]
    await client.patch("/v1/customization/targets/meta/llama-3.2-1b-instruct@2.0", json={"enabled": False})
    disabled = await client.post("/v1/customization/jobs", json=_job())
    assert disabled.status_code == 422 and "not enabled" in disabled.json()["detail"][0]["msg"]
    await client.patch("/v1/customization/targets/meta/llama-3.2-1b-instruct@2.0", json={"enabled": True})
    inline = await client.post(
        "/v1/customization/jobs",
        json=_job(config={"target": "meta/llama-3.2-1b-instruct@2.0", "max_seq_length": 2048, "training_options": []}),
    )
    assert inline.status_code == 422 and inline.json()["detail"][0]["loc"][:3] == ["body", "config", "training_options"]


async def test_customization_job_answer_and_side_effects(sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim]) -> None:
    client, datastore, nim = sim
    await _dataset(client)
    answer = await client.post("/v1/customization/jobs", json=_job(output_model=f"{NS}/tuned@v7", name="run-1"))
    assert answer.status_code == 200
    job = answer.json()
    assert job["name"] == "run-1" and job["output_model"] == f"{NS}/tuned@{job['id']}"
    assert job["hyperparameters"]["lora"] == {
        "adapter_dim": 8,
        "adapter_dropout": None,
        "alpha": 16,
        "target_modules": None,
    }
    assert job["hyperparameters"]["batch_size"] == 8 and job["hyperparameters"]["training_type"] == "sft"
    assert job["config_snapshot"]["training_option"]["finetuning_type"] == "lora"
    assert job["status_details"]["percentage_done"] == 0.0 and job["warnings"] is None
    assert not any(key.startswith("_") for key in job)
    model = (await client.get(f"/v1/models/{NS}/tuned@{job['id']}")).json()
    assert model["artifact"]["status"] == "created" and model["base_model"] == "meta/llama-3.2-1b-instruct"

    bare = (await client.post("/v1/customization/jobs", json=_job())).json()
    assert bare["output_model"] is None
    datastore.broken = True
    broken = (await client.post("/v1/customization/jobs", json=_job())).json()

    nim.down = True
    await _advance(client, 500)
    assert (await client.get(f"/v1/customization/jobs/{job['id']}")).json()["status"] == "completed"
    assert job["output_model"] not in nim.models, "the NIM is down: registration waits"
    nim.down = False
    await client.get(f"/v1/customization/jobs/{job['id']}")
    assert nim.models[job["output_model"]]["lora"] == {"train_records": 20, "epochs": 2}
    assert (await client.get(f"/v1/models/{NS}/tuned@{job['id']}")).json()["artifact"]["status"] == "upload_completed"

    failed = (await client.get(f"/v1/customization/jobs/{broken['id']}/status")).json()
    assert failed["status"] == "failed" and "Data Store unreachable" in failed["status_logs"][-1]["detail"]
    completed = await client.get("/v1/customization/jobs", params={"filter[status]": "completed", "page_size": 1})
    assert completed.json()["pagination"]["total_results"] == 2 and len(completed.json()["data"]) == 1
    by_dataset = await client.get("/v1/customization/jobs", params={"filter[dataset]": f"hf://datasets/{NS}/ds"})
    assert by_dataset.json()["pagination"]["total_results"] == 3
    assert (await client.get("/v1/customization/jobs", params={"filter[epochs]": "3"})).json()["data"] == []


async def test_deployment_lifecycle(sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim]) -> None:
    client, _, nim = sim
    created = await client.post(
        "/v1/deployment/model-deployments", json={"namespace": NS, "config": {"model": "meta/llama-3.2-1b-instruct"}}
    )
    assert created.status_code == 200 and created.json()["name"] == "meta-llama-3.2-1b-instruct"
    path = f"/v1/deployment/model-deployments/{NS}/meta-llama-3.2-1b-instruct"
    nim.down = True
    await _advance(client, 60)
    waiting = (await client.get(path)).json()
    assert (
        waiting["status_details"]["status"] == "pending"
        and "Waiting for the NIM" in waiting["status_details"]["description"]
    )
    nim.down = False
    ready = (await client.get(path)).json()
    assert ready["status_details"]["status"] == "ready" and ready["deployed"] is True
    assert nim.models["meta/llama-3.2-1b-instruct"] == {
        "root": "meta/llama-3.2-1b-instruct",
        "parent": None,
        "lora": None,
    }
    patched = await client.patch(path, json={"description": "judge"})
    assert patched.json()["description"] == "judge"
    assert (await client.delete(path)).status_code == 200
    assert "meta/llama-3.2-1b-instruct" not in nim.models
    no_model = await client.post(
        "/v1/deployment/model-deployments", json={"name": "x", "config": {"nim_deployment": {}}}
    )
    assert no_model.status_code == 422
    config = await client.post("/v1/deployment/configs", json={"name": "cfg", "namespace": NS, "model": "meta/x"})
    assert config.status_code == 200
    by_ref = await client.post(
        "/v1/deployment/model-deployments", json={"name": "x", "namespace": NS, "config": f"{NS}/cfg"}
    )
    assert (
        by_ref.status_code == 200 and by_ref.json()["models"] == ["meta/x"] and by_ref.json()["config"] == f"{NS}/cfg"
    )
    assert (await client.post("/v1/deployment/model-deployments", json={"config": f"{NS}/nope"})).status_code == 404


async def test_evaluation_jobs_validate_echo_cancel_and_delete(
    sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim],
) -> None:
    client, _, nim = sim
    task = {
        "type": "chat-completion",
        "dataset": {"files_url": f"hf://datasets/{NS}/ds/eval.jsonl", "limit": 2},
        "params": {"template": {"messages": [{"role": "user", "content": "{{ item.question }}"}]}},
        "metrics": {
            "judge": {
                "type": "llm-judge",
                "params": {
                    "model": "judge/x",
                    "template": {"messages": []},
                    "scores": {"s": {"type": "int", "parser": {"type": "regex", "pattern": r"(\d+)"}}},
                },
            }
        },
    }
    config = {"type": "custom", "tasks": {"t": task}}
    target = {"type": "model", "model": "meta/llama-3.2-1b-instruct"}
    job = await client.post("/v1/evaluation/jobs", json={"config": config, "target": target, "namespace": NS})
    assert job.status_code == 200
    body = job.json()
    assert body["config"]["namespace"] == NS and body["config"]["name"] == body["config"]["id"]
    assert body["target"]["model"] == target["model"] and body["result"] is None and body["output_files_url"] is None
    stored = (await client.get(f"/v1/evaluation/configs/{NS}/{body['config']['name']}")).json()
    assert stored["tasks"]["t"]["dataset"]["id"] == body["config"]["tasks"]["t"]["dataset"]["id"]

    await _advance(client, 5)
    for _ in range(200):
        if (await client.get(f"/v1/evaluation/jobs/{body['id']}")).json()["status"] == "running" and nim.calls:
            break
        await asyncio.sleep(0.01)
    status = (await client.get(f"/v1/evaluation/jobs/{body['id']}/status")).json()
    assert status == {"message": None, "progress": 0.0, "samples_processed": 0, "task_status": {"t": "running"}}
    cancelled = await client.post(f"/v1/evaluation/jobs/{body['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    nim.block.set()
    await asyncio.sleep(0.05)
    assert (await client.get(f"/v1/evaluation/jobs/{body['id']}")).json()["status"] == "cancelled"
    assert (await client.get(f"/v1/evaluation/jobs/{body['id']}/download-results")).status_code == 404
    assert (await client.delete(f"/v1/evaluation/jobs/{body['id']}")).json()["id"] == body["id"]

    judge_without_model = {
        **task,
        "metrics": {"j": {"type": "llm-judge", "params": {"template": {"messages": []}, "scores": {"s": {}}}}},
    }
    refused = await client.post(
        "/v1/evaluation/jobs",
        json={"config": {"type": "custom", "tasks": {"t": judge_without_model}}, "target": target},
    )
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][-1] == "model"
    for parser, field in (
        (None, "parser"),
        ({"type": "json", "json_path": "s"}, "parser"),
        ({"type": "regex", "pattern": "(unclosed"}, "pattern"),
        ({"type": "regex", "pattern": r"(\d)", "method": "fullmatch"}, "method"),
    ):
        params = {"model": "judge/x", "template": {"messages": []}, "scores": {"s": {"type": "int", "parser": parser}}}
        unreadable = {**task, "metrics": {"j": {"type": "llm-judge", "params": params}}}
        bad_parser = await client.post(
            "/v1/evaluation/jobs", json={"config": {"type": "custom", "tasks": {"t": unreadable}}, "target": target}
        )
        assert bad_parser.status_code == 422 and bad_parser.json()["detail"][0]["loc"][-1] == field, parser
    rows_target = await client.post(
        "/v1/evaluation/jobs", json={"config": config, "target": {"type": "rows", "rows": []}}
    )
    assert rows_target.status_code == 422
    assert (
        await client.post("/v1/evaluation/jobs", json={"config": f"{NS}/nope", "target": target})
    ).status_code == 404
    listed = (await client.get("/v1/evaluation/jobs", params={"filter[status]": "cancelled"})).json()
    assert listed["data"] == []


async def test_admin_endpoints(sim: tuple[httpx.AsyncClient, FakeDatastore, FakeNim]) -> None:
    client, _, _ = sim
    assert (await client.post("/admin/clock", json={})).status_code == 422
    assert (await client.post("/admin/clock", json={"speed": 0})).status_code == 422
    clock = (await client.post("/admin/clock", json={"speed": 2.0, "advance_s": 10})).json()
    assert clock["speed"] == 2.0 and clock["now_s"] >= 10
    faults = (await client.post("/admin/faults", json={"latency_s": {"/v1": 0.01}, "deployment_failed": True})).json()
    assert faults["latency_s"] == {"/v1": 0.01} and faults["deployment_failed"] is True
    assert (await client.get("/admin/faults")).json() == faults
    assert (await client.post("/admin/faults", json={"no_such_fault": 1})).status_code == 422
    assert (await client.delete("/admin/faults")).json()["deployment_failed"] is False
    health = await client.get("/health")
    assert health.status_code == 200 and health.headers["x-flywheel-simulated"] == "true"


def test_bad_settings_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nemo: customization\.created_seconds"):
        create_app(_cfg(tmp_path, customization={"created_seconds": 1}))


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    app, _, _ = _app(cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nemo") as client:
        await _dataset(client)
        job = (await client.post("/v1/customization/jobs", json=_job())).json()
        await _advance(client, 3)
        assert (await client.get(f"/v1/customization/jobs/{job['id']}")).json()["status"] == "pending"
    assert (tmp_path / "nemo" / "state.json").exists()
    again, _, _ = _app(cfg)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url="http://nemo") as client:
        assert (await client.get(f"/v1/customization/jobs/{job['id']}")).json()["status"] == "pending"
        assert (await client.get("/v1/datasets")).json()["pagination"]["total_results"] == 1
        assert len((await client.get("/v1/customization/targets")).json()["data"]) == 3, "seeds are not duplicated"
    memory_only = create_app(_cfg(tmp_path / "other", persist=False))
    assert memory_only.state.sim.store.snapshot_path is None
