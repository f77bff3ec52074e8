"""After a restart the simulators agree: a fine-tune the NeMo simulator reports ``completed`` has its adapter
served by the NIM simulator, and a deployment it reports ``ready`` has its model served, whichever part lost
its state or came up first."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import HfApi

from simulators.datastore.server import create_app as datastore_app
from simulators.nemo.server import create_app as nemo_app
from simulators.nim.server import create_app as nim_app
from simulators.pytest_plugin import fast_stack_config
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer

pytestmark = pytest.mark.integration

NS = "dfwbp"
BASE = "meta/llama-3.2-1b-instruct"
TRAINING = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}\n' * 20


def _wait(probe: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _served(cfg: LocalStackConfig) -> set[str]:
    return {m["id"] for m in httpx.get(f"{cfg.url('nim')}/v1/models", timeout=10).json()["data"]}


class Parts:
    """The Data Store, NIM and NeMo simulators on fixed ports, each one stoppable and startable again."""

    def __init__(self, cfg: LocalStackConfig) -> None:
        self.cfg = cfg
        self.running: dict[str, ThreadedServer] = {}

    def start(self, part: str) -> None:
        factory = {"datastore": datastore_app, "nim": nim_app, "nemo": nemo_app}[part]
        self.running[part] = ThreadedServer(factory(self.cfg), self.cfg.host, getattr(self.cfg.ports, part)).start()

    def stop(self, part: str) -> None:
        self.running.pop(part).stop()

    def stop_all(self) -> None:
        for part in list(self.running):
            self.stop(part)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    base = fast_stack_config(tmp_path / "state")
    cfg = base.model_copy(update={"nemo": {"tick_interval_s": 0.02, "deployment": {"ready_after_s": 1}}})
    running = Parts(cfg)
    try:
        for part in ("datastore", "nim", "nemo"):
            running.start(part)
        yield running
    finally:
        running.stop_all()


def _finish_a_fine_tune_and_a_deployment(cfg: LocalStackConfig, nemo: httpx.Client) -> tuple[str, str]:
    """Run a LoRA job to ``completed`` and a deployment to ``ready``; returns (job id, adapter id)."""
    assert nemo.post("/v1/namespaces", json={"id": NS}).status_code == 200
    hf = HfApi(endpoint=f"{cfg.url('datastore')}/v1/hf", token="nothing")
    hf.create_repo(f"{NS}/train", repo_type="dataset")
    hf.upload_file(
        path_or_fileobj=TRAINING, path_in_repo="training/train.jsonl", repo_id=f"{NS}/train", repo_type="dataset"
    )
    dataset = {"name": "train", "namespace": NS, "files_url": f"hf://datasets/{NS}/train"}
    assert nemo.post("/v1/datasets", json=dataset).status_code == 200
    job = nemo.post(
        "/v1/customization/jobs",
        json={
            "config": f"{BASE}@v1.0.0+A100",
            "dataset": {"name": "train", "namespace": NS},
            "output_model": f"{NS}/customized-llama",
            "hyperparameters": {"training_type": "sft", "finetuning_type": "lora", "epochs": 1, "batch_size": 4},
        },
    )
    assert job.status_code == 200, job.text
    job_id, adapter = job.json()["id"], job.json()["output_model"]
    deployment = {
        "name": "llama-1b",
        "namespace": NS,
        "config": {"model": BASE, "nim_deployment": {"image_name": "nvcr.io/nim/meta/llama-3.2-1b-instruct"}},
    }
    assert nemo.post("/v1/deployment/model-deployments", json=deployment).status_code == 200
    _wait(lambda: nemo.get(f"/v1/customization/jobs/{job_id}").json()["status"] == "completed", "the fine-tune")
    _wait(lambda: {adapter, BASE} <= _served(cfg), "the NIM to serve the adapter and the deployment")
    return job_id, adapter


def _consistent(cfg: LocalStackConfig, nemo: httpx.Client, job_id: str, adapter: str) -> None:
    """What NeMo reports finished, the NIM serves, and a chat with the adapter is answered."""
    assert nemo.get(f"/v1/customization/jobs/{job_id}").json()["status"] == "completed"
    assert nemo.get(f"/v1/deployment/model-deployments/{NS}/llama-1b").json()["status_details"]["status"] == "ready"
    _wait(lambda: {adapter, BASE} <= _served(cfg), "the NIM to serve what NeMo reports finished")
    chat = httpx.post(
        f"{cfg.url('nim')}/v1/chat/completions",
        json={"model": adapter, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert chat.status_code == 200, chat.text


def test_finished_work_stays_servable_across_restarts(parts: Parts) -> None:
    cfg = parts.cfg
    with httpx.Client(base_url=cfg.url("nemo"), timeout=10) as nemo:
        job_id, adapter = _finish_a_fine_tune_and_a_deployment(cfg, nemo)

        # The whole stack restarts: the NIM serves what it served before as soon as it is up.
        parts.stop("nemo")
        parts.stop("nim")
        parts.start("nim")
        assert {adapter, BASE} <= _served(cfg), "the NIM keeps its registered models"
        parts.start("nemo")
        _consistent(cfg, nemo, job_id, adapter)

        # The NIM lost its state and comes up after NeMo: NeMo registers again what it reports finished.
        parts.stop("nemo")
        parts.stop("nim")
        (Path(cfg.state_path()) / "nim" / "models.json").unlink()
        parts.start("nemo")
        parts.start("nim")
        _consistent(cfg, nemo, job_id, adapter)

        # A NIM restart on its own changes nothing either.
        parts.stop("nim")
        parts.start("nim")
        assert {adapter, BASE} <= _served(cfg)


def test_a_removed_deployment_stays_removed_after_a_restart(parts: Parts) -> None:
    cfg = parts.cfg
    with httpx.Client(base_url=cfg.url("nemo"), timeout=10) as nemo:
        _finish_a_fine_tune_and_a_deployment(cfg, nemo)
        assert nemo.delete(f"/v1/deployment/model-deployments/{NS}/llama-1b").status_code == 200
        assert BASE not in _served(cfg)
        parts.stop("nim")
        parts.start("nim")
        assert BASE not in _served(cfg)
