"""The flywheel on a platform that serves nothing it did not deploy, as a real NeMo cluster may be (issue #16).

One local stack whose NIM preloads no model (``nim.preloaded: []``: the teacher, the judge and the embedding
model are served only once deployed), whose Data Store asks for large-file (LFS) uploads and whose Evaluator
writes per-task results files. In order:

1. the preflight catches an undeployed teacher, a remote judge that does not answer and a missing customization
   target, all at once, before anything exists on the platform (no dataset, job or deployment), from the flow
   and from ``flywheel preflight``;
2. with the target back and the teacher, judge and embedding model set to ``local``, the flywheel deploys them
   through Deployment Management, reaches a decision, and removes those deployments again;
3. ``flywheel cleanup --run`` lists what that run created, then removes it (the champion's adapter stays), and a
   deployment a dead run left behind is deleted.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from mlflow.tracking import MlflowClient
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from typer.testing import CliRunner

from agent_flywheel.config import FlywheelConfig, parse_config
from agent_flywheel.preflight import PreflightError
from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig

pytestmark = pytest.mark.integration

WORKLOAD, CLIENT, NS = "customer-support", "demo", "cluster"
TEACHER = "meta/llama-3.3-70b-instruct"
EMBEDDER = "nvidia/llama-3.2-nv-embedqa-1b-v2"
SMALL = "meta/llama-3.2-1b-instruct"
TARGET = f"{SMALL}@2.0"
JUDGE_KEY = f"sk-judge-{uuid.uuid4().hex}"


@dataclass
class Seen:
    part: str
    method: str
    path: str
    authorization: str
    body: bytes


class Recorder:
    """ASGI middleware keeping every request a part of the stack receives."""

    def __init__(self, app: ASGIApp, part: str, sink: list[Seen]) -> None:
        self.app, self.part, self.sink = app, part, sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def keep(message: Message | None = None) -> Message:
            got = await receive()
            if got["type"] == "http.request":
                chunks.append(got.get("body", b""))
            return got

        try:
            await self.app(scope, keep, send)
        finally:
            headers = dict((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"])
            self.sink.append(
                Seen(self.part, scope["method"], scope["path"], headers.get("authorization", ""), b"".join(chunks))
            )


@dataclass
class Cluster:
    stack: LocalStackConfig
    seen: list[Seen]
    home: Path
    tracking_uri: str

    def nemo(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.stack.url('nemo')}{path}", params={"page_size": 100, **params}, timeout=30)
        response.raise_for_status()
        return response.json()

    def served(self) -> set[str]:
        return {m["id"] for m in httpx.get(f"{self.stack.url('nim')}/v1/models", timeout=30).json()["data"]}


def _config(**changes: Any) -> FlywheelConfig:
    data: dict[str, Any] = {
        "namespace": NS,
        "nims": [
            {
                "model_name": SMALL,
                "customization_enabled": True,
                "customizer_configs": {"target": TARGET, "max_seq_length": 8192},
            }
        ],
        "data_split_config": {"eval_size": 60, "min_total_records": 50, "limit": 1000},
        "evaluation_config": {"poll_interval_s": 0.2, "timeout_s": 120},
        **changes,
    }
    return parse_config(data, FlywheelConfig, "test")


@pytest.fixture(scope="module")
def cluster(
    start_local_stack: Callable[..., LocalStackConfig], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    seen: list[Seen] = []

    def record(part: str, app: FastAPI) -> None:
        app.add_middleware(Recorder, part=part, sink=seen)

    stack = start_local_stack(
        overrides={
            "nim": {"preloaded": []},
            "datastore": {"upload_mode": "lfs"},
            "nemo": {"evaluation": {"results_layout": "per-task"}, "deployment": {"ready_after_s": 5}},
        },
        prepare=record,
    )
    home = tmp_path_factory.mktemp("cluster")
    monkeypatch = pytest.MonkeyPatch()
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home / "flywheel"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    from blocks.nemo_platform import NemoPlatform
    from blocks.resolve import load_block

    platform = load_block(NemoPlatform, "local")  # the remote judge's key is the block's secret
    platform.judge_api_key = SecretStr(JUDGE_KEY)
    platform.save("local", overwrite=True)
    try:
        # The demo agent needs its teacher to make traffic: served for that only, then gone again.
        nim = stack.url("nim")
        assert httpx.post(f"{nim}/admin/models", json={"id": TEACHER}, timeout=30).status_code in (200, 201)
        assert run_traffic(stack.url("agent"), requests=250, concurrency=16, seed=11).failed == 0
        assert httpx.post(f"{stack.url('agent')}/admin/flush", timeout=60).status_code == 200
        assert httpx.delete(f"{nim}/admin/models/{TEACHER}", timeout=30).status_code == 200
        seen.clear()
        yield Cluster(stack, seen, home, tracking_uri)
    finally:
        monkeypatch.undo()


def _nothing_exists(cluster: Cluster) -> None:
    assert cluster.nemo("/v1/evaluation/jobs")["data"] == []
    assert cluster.nemo("/v1/customization/jobs")["data"] == []
    assert cluster.nemo("/v1/deployment/model-deployments")["data"] == []
    assert cluster.nemo("/v1/datasets", **{"filter[namespace]": NS})["data"] == []


def test_the_preflight_lists_every_problem_before_anything_exists(cluster: Cluster, tmp_path: Path) -> None:
    nemo = cluster.stack.url("nemo")
    target = httpx.get(f"{nemo}/v1/customization/targets/{TARGET}", timeout=30).json()
    assert httpx.delete(f"{nemo}/v1/customization/targets/{TARGET}", timeout=30).status_code == 200
    remote_judge = {
        "deployment_type": "remote",
        "model_name": "judge/not-served",
        "url": f"{cluster.stack.url('nim')}/v1/chat/completions",
    }
    cfg = _config(llm_judge_config=remote_judge)
    try:
        from flows.flywheel import flywheel

        with pytest.raises(PreflightError) as caught:
            asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=cfg))
        message = str(caught.value)
        assert message.startswith("preflight: 3 problem(s), so nothing was started")
        assert f"- teacher {TEACHER}: not served by the NIM proxy" in message
        assert "set `teacher.deployment_type: local`" in message
        assert "- remote judge judge/not-served:" in message and "answered 404" in message
        assert f"- customization target {TARGET} ({SMALL}): not registered" in message
        _nothing_exists(cluster)
        # The preflight asked the remote judge with its key (the block's secret), and nothing else got it.
        judge_calls = [s for s in cluster.seen if s.part == "nim" and s.path == "/v1/chat/completions"]
        assert any(s.authorization == f"Bearer {JUDGE_KEY}" and b"judge/not-served" in s.body for s in judge_calls)
        assert not [
            s
            for s in cluster.seen
            if JUDGE_KEY.encode() in s.body or (s.part != "nim" and JUDGE_KEY in s.authorization)
        ]
        # The Data Store probe went up by LFS and was deleted again.
        assert any(s.part == "datastore" and s.path.endswith("/info/lfs/objects/batch") for s in cluster.seen)

        config_file = tmp_path / "flywheel.yaml"
        config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
        from cli.main import app

        result = CliRunner().invoke(app, ["preflight", "--config", str(config_file)])
        assert result.exit_code == 2, result.output
        problems = [line for line in result.output.splitlines() if line.startswith("PROBLEM")]
        assert len(problems) == 3, result.output
        assert any(line.startswith("ok       Data Store: accepts uploads") for line in result.output.splitlines())
        assert any(line.startswith("ok       log index:") for line in result.output.splitlines())
        _nothing_exists(cluster)
    finally:
        restored = {k: target[k] for k in ("name", "namespace", "base_model", "enabled", "num_parameters", "precision")}
        assert httpx.post(f"{nemo}/v1/customization/targets", json=restored, timeout=30).status_code in (200, 201)


LOCAL_MODELS = {
    "teacher": {"model_name": TEACHER, "context_length": 32768, "gpus": 4, "deployment_type": "local"},
    "icl_config": {
        "example_selection": "semantic_similarity",
        "max_examples": 2,
        "similarity_config": {"embedding_nim_config": {"deployment_type": "local", "model_name": EMBEDDER}},
    },
}


@pytest.fixture(scope="module")
def deployed_run(cluster: Cluster) -> dict[str, Any]:
    """A run whose teacher, judge (the teacher's model, by default local) and embedding model it deploys itself."""
    assert TEACHER not in cluster.served() and EMBEDDER not in cluster.served()
    cluster.seen.clear()
    from flows.flywheel import flywheel

    result = asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=_config(**LOCAL_MODELS)))
    parent = MlflowClient(cluster.tracking_uri).get_run(result.mlflow_run_id)
    return {"result": result, "flow_run_id": parent.data.tags["prefect.flow_run_id"], "seen": list(cluster.seen)}


def test_the_flywheel_deploys_teacher_judge_and_embedder_and_removes_them(
    cluster: Cluster, deployed_run: dict[str, Any]
) -> None:
    result = deployed_run["result"]
    assert result.outcome in ("promoted", "no-candidate"), result.reason
    assert all(row["samples"] > 0 for row in result.scores), result.scores  # the per-task results files were read
    seen: list[Seen] = deployed_run["seen"]
    created = [
        json.loads(s.body)["config"]["model"]
        for s in seen
        if s.part == "nemo" and s.method == "POST" and s.path == "/v1/deployment/model-deployments"
    ]
    assert sorted(created) == sorted([EMBEDDER, TEACHER, SMALL])  # the judge shares the teacher's deployment
    deleted = [s.path for s in seen if s.part == "nemo" and s.method == "DELETE" and "model-deployments" in s.path]
    assert len(deleted) == 3
    assert cluster.nemo("/v1/deployment/model-deployments")["data"] == []
    assert not {TEACHER, EMBEDDER, SMALL} & cluster.served()
    # The embedder was deployed before the datasets were built and gone before the teacher came up.
    events = [
        ("create", json.loads(s.body)["config"]["model"])
        if s.method == "POST"
        else ("delete", s.path.rsplit("/", 1)[1])
        for s in seen
        if s.part == "nemo" and "model-deployments" in s.path and s.method in ("POST", "DELETE")
    ]
    embedder_gone = events.index(("delete", "nvidia-llama-3.2-nv-embedqa-1b-v2"))
    assert events.index(("create", EMBEDDER)) < embedder_gone < events.index(("create", TEACHER)), events
    # Every dataset went up by LFS (the Data Store asked for it): batch, then the content.
    assert any(s.part == "datastore" and s.method == "PUT" and "/lfs-objects/" in s.path for s in seen)
    assert not [s for s in seen if s.part == "datastore" and "xet" in s.path]


def test_cleanup_by_run_lists_then_removes_what_the_run_created(cluster: Cluster, deployed_run: dict[str, Any]) -> None:
    from cli.main import app

    run_id = deployed_run["flow_run_id"]
    evaluations = [j["id"] for j in cluster.nemo("/v1/evaluation/jobs")["data"]]
    datasets = [d["name"] for d in cluster.nemo("/v1/datasets", **{"filter[namespace]": NS})["data"]]
    assert len(evaluations) >= 3 and len(datasets) >= 2
    tuned = cluster.nemo("/v1/customization/jobs")["data"]
    adapter = tuned[0]["output_model"]
    champion = deployed_run["result"].served_model
    # A deployment a dead run left behind (its only user is the finished run).
    leftover = {
        "name": "leftover",
        "namespace": NS,
        "config": {
            "model": SMALL,
            "nim_deployment": {"image_name": f"nvcr.io/nim/{SMALL}", "image_tag": "1.8.3", "gpu": 1},
        },
        "custom_fields": {"flywheel_managed": "true", "flywheel_run_id": run_id, "flywheel_users": run_id},
    }
    assert (
        httpx.post(
            f"{cluster.stack.url('nemo')}/v1/deployment/model-deployments", json=leftover, timeout=30
        ).status_code
        == 200
    )

    dry = CliRunner().invoke(app, ["cleanup", "--run", run_id, "--namespace", NS])
    assert dry.exit_code == 0, dry.output
    for job in evaluations:
        assert f"delete   evaluation job {job}: created by run {run_id}" in dry.output
    for name in datasets:
        assert f"dataset {NS}/{name}: read only by jobs being removed" in dry.output
    assert f"release  deployment {NS}/leftover: used by run {run_id} only" in dry.output
    if champion == adapter:
        assert f"keep     customized model {adapter}" in dry.output and "it is the champion" in dry.output
    else:
        assert f"delete   customized model {adapter}" in dry.output
    assert "dry run:" in dry.output
    assert sorted(j["id"] for j in cluster.nemo("/v1/evaluation/jobs")["data"]) == sorted(evaluations)  # untouched

    applied = CliRunner().invoke(app, ["cleanup", "--run", run_id, "--namespace", NS, "--apply"])
    assert applied.exit_code == 0, applied.output
    assert "could not" not in applied.output
    assert cluster.nemo("/v1/evaluation/jobs")["data"] == []
    assert cluster.nemo("/v1/datasets", **{"filter[namespace]": NS})["data"] == []
    for name in datasets:
        repo = httpx.get(f"{cluster.stack.url('datastore')}/v1/hf/api/datasets/{NS}/{name}", timeout=30)
        assert repo.status_code == 404
    assert cluster.nemo("/v1/deployment/model-deployments")["data"] == []
    namespace, model = adapter.split("/", 1)
    entity = httpx.get(f"{cluster.stack.url('nemo')}/v1/models/{namespace}/{model}", timeout=30)
    assert entity.status_code == (200 if champion == adapter else 404)
    again = CliRunner().invoke(app, ["cleanup", "--run", run_id, "--namespace", NS])
    assert again.exit_code == 0 and "delete " not in again.output
