"""Secrets stay secret (issue #6): API keys and passwords reach their own service's auth header and nowhere else.

A flywheel run is made with canary secrets in its blocks: the NeMo API key, a separate Data Store token
and the Elasticsearch password. Every request each part of the local stack receives is recorded (method,
path, headers, body). The canaries must show up in the ``Authorization`` header of their own service (so
this test can fail: it sees them) and must not appear in any log line (DEBUG included), any Prefect log,
artifact or flow-run parameter, any MLflow param, tag, metric name or artifact, any file the run wrote,
any file the simulators persisted, any request body, or any header sent to another service.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mlflow.tracking import MlflowClient
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig
from tests.support.flywheel_configs import small_flywheel_config

pytestmark = pytest.mark.integration

WORKLOAD, CLIENT = "customer-support", "demo"
NEMO_KEY = f"sk-canary-{uuid.uuid4().hex}"
DATASTORE_TOKEN = f"hf-canary-{uuid.uuid4().hex}"
ES_USER = "flywheel-reader"
ES_PASSWORD = f"es-canary-{uuid.uuid4().hex}"
CANARIES = {"nemo_api_key": NEMO_KEY, "datastore_token": DATASTORE_TOKEN, "es_password": ES_PASSWORD}
#: Where each secret may go (in an Authorization header, nowhere else). The NeMo key is the platform's: the
#: NeMo services, NIM, and the Data Store's own ``/v1/datastore`` API; its Hugging Face API gets the token.
OWN_PARTS = {
    "nemo_api_key": {"nemo", "nim", "datastore"},
    "datastore_token": {"datastore"},
    "es_password": {"logserver"},
}


@dataclass
class Recorded:
    part: str
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def authorization(self) -> str:
        return next((value for name, value in self.headers if name == "authorization"), "")


class Recorder:
    """ASGI middleware: keeps every request a part receives, headers and body."""

    def __init__(self, app: ASGIApp, part: str, sink: list[Recorded]) -> None:
        self.app = app
        self.part = part
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        try:
            await self.app(scope, recording_receive, send)
        finally:
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
            self.sink.append(Recorded(self.part, scope["method"], scope["path"], headers, b"".join(chunks)))


class Everything(logging.Handler):
    """Keeps the formatted text of every log record (and its exception) of the run."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _occurrences(text: str) -> list[str]:
    return [name for name, secret in CANARIES.items() if secret in text]


def _scan_files(root: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            names = [name for name, secret in CANARIES.items() if secret.encode() in data]
            if names:
                found[str(path)] = names
    return found


@pytest.fixture(scope="module")
def recorded_run(
    start_stack: Callable[..., LocalStackConfig], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A flywheel run with canary secrets in its blocks, on a stack that records every request."""
    requests: list[Recorded] = []

    def record(part: str, app: FastAPI) -> None:
        app.add_middleware(Recorder, part=part, sink=requests)

    stack = start_stack(prepare=record)
    home = tmp_path_factory.mktemp("secrets")
    monkeypatch = pytest.MonkeyPatch()
    for key, value in {
        "FLYWHEEL_HOME": str(home / "flywheel"),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }.items():
        monkeypatch.setenv(key, value)

    from blocks.log_store import LogStore
    from blocks.nemo_platform import NemoPlatform
    from cli.local_blocks import local_blocks
    from deployments.blocks import save_blocks

    documents = local_blocks(stack)
    for document in documents:  # the `local` blocks of this stack, with the canaries as their secrets
        if isinstance(document, NemoPlatform):
            document.api_key = SecretStr(NEMO_KEY)
            document.datastore_token = SecretStr(DATASTORE_TOKEN)
        elif isinstance(document, LogStore):
            document.username, document.password = ES_USER, SecretStr(ES_PASSWORD)
    save_blocks(documents, "local")
    report = run_traffic(stack.url("agent"), requests=250, concurrency=16, seed=5)
    assert report.failed == 0
    assert httpx.post(f"{stack.url('agent')}/admin/flush", timeout=60).status_code == 200
    requests.clear()  # the traffic itself has nothing to do with the flywheel's secrets

    cfg = small_flywheel_config("secrets")
    logs = Everything()
    root = logging.getLogger()
    watched = [root, logging.getLogger("prefect"), logging.getLogger("agent_flywheel"), logging.getLogger("tasks")]
    levels = [(lg, lg.level) for lg in watched]
    for lg in watched:
        lg.addHandler(logs)
    for lg in watched[1:]:
        lg.setLevel(logging.DEBUG)
    try:
        from flows.flywheel import flywheel

        started = time.monotonic()
        result = asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=cfg))
        seconds = time.monotonic() - started
    finally:
        for lg, level in levels:
            lg.removeHandler(logs)
            lg.setLevel(level)
        monkeypatch.undo()
    yield {
        "result": result,
        "requests": list(requests),
        "logs": logs.lines,
        "home": home,
        "stack": stack,
        "tracking_uri": f"sqlite:///{home / 'mlflow.db'}",
        "seconds": seconds,
    }


def test_each_secret_reaches_its_own_service_auth_header(recorded_run: dict[str, Any]) -> None:
    """The positive control: without it, "the canary is nowhere" could mean "the canary was never used"."""
    requests: list[Recorded] = recorded_run["requests"]
    assert recorded_run["result"].outcome in ("promoted", "no-candidate")
    by_part = {part: [r.authorization() for r in requests if r.part == part] for part in ("nemo", "nim", "datastore")}
    assert f"Bearer {NEMO_KEY}" in by_part["nemo"]
    assert f"Bearer {NEMO_KEY}" in by_part["nim"]
    assert any(DATASTORE_TOKEN in value for value in by_part["datastore"])
    basic = "Basic " + base64.b64encode(f"{ES_USER}:{ES_PASSWORD}".encode()).decode()
    assert basic in [r.authorization() for r in requests if r.part == "logserver"]


def test_no_secret_in_any_request_body_or_in_headers_sent_to_another_service(recorded_run: dict[str, Any]) -> None:
    requests: list[Recorded] = recorded_run["requests"]
    assert len(requests) > 50
    for request in requests:
        body = request.body.decode("utf-8", "replace")
        assert not _occurrences(body), (request.part, request.method, request.path)
        headers = " ".join(f"{k}: {v}" for k, v in request.headers)
        decoded = headers
        auth = request.authorization()
        if auth.startswith("Basic "):
            decoded += " " + base64.b64decode(auth.removeprefix("Basic ")).decode("utf-8", "replace")
        for name in _occurrences(decoded):
            assert request.part in OWN_PARTS[name], (name, request.part, request.method, request.path)


def test_no_secret_in_any_log_line(recorded_run: dict[str, Any]) -> None:
    """Every record of the root, ``prefect``, ``agent_flywheel`` and ``tasks`` loggers at DEBUG (prints included)."""
    assert len(recorded_run["logs"]) > 20
    assert not [line for line in recorded_run["logs"] if _occurrences(line)]


def test_no_secret_in_mlflow_params_tags_metrics_or_artifacts(recorded_run: dict[str, Any], tmp_path: Path) -> None:
    client = MlflowClient(recorded_run["tracking_uri"])
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) >= 5  # the parent and a child per model x mode
    downloaded = 0
    for run in runs:
        text = repr(run.data.params) + repr(run.data.tags) + repr(sorted(run.data.metrics))
        assert not _occurrences(text), run.info.run_id
        target = tmp_path / run.info.run_id
        target.mkdir()
        client.download_artifacts(run.info.run_id, "", str(target))
        downloaded += sum(1 for p in target.rglob("*") if p.is_file())
    assert downloaded >= 3  # manifest, counts, decision at least
    assert _scan_files(tmp_path) == {}
    versions = client.search_model_versions(f"name='flywheel-{WORKLOAD}'")
    assert not _occurrences(repr([v.tags for v in versions]))


def test_no_secret_in_prefect_logs_artifacts_or_parameters(recorded_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    parent = MlflowClient(recorded_run["tracking_uri"]).get_run(recorded_run["result"].mlflow_run_id)
    flow_run_id = uuid.UUID(parent.data.tags["prefect.flow_run_id"])

    async def read() -> tuple[list[str], list[str], list[str]]:
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            ids = [flow_run_id, *(run.id for run in children)]
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            logs: list[str] = []
            offset = 0
            while True:
                page = await client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset
                )
                logs += [log.message for log in page]
                if len(page) < 200:
                    break
                offset += 200
            artifacts = await client.read_artifacts(limit=200)
        parameters = [repr(run.parameters) for run in runs]
        return logs, [repr(a.data) + repr(a.description) for a in artifacts], parameters

    logs, artifacts, parameters = asyncio.run(read())
    assert logs and artifacts and parameters
    assert not [line for line in logs if _occurrences(line)]
    assert not [a for a in artifacts if _occurrences(a)]
    assert not [p for p in parameters if _occurrences(p)]


def test_no_secret_in_files_written_by_the_run_or_the_simulators(recorded_run: dict[str, Any]) -> None:
    flywheel_home = recorded_run["home"] / "flywheel"
    assert (flywheel_home / "results").is_dir()  # the cached task results were written, and are scanned
    assert _scan_files(flywheel_home) == {}
    assert _scan_files(Path(recorded_run["stack"].state_dir)) == {}
