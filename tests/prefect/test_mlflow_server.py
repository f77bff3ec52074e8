"""The MLflow block against a real ``mlflow server``: artifacts go through the server, credentials reach it.

The server runs with its own artifact destination (proxied artifacts, ``mlflow-artifacts:/``), in a directory
that is neither the test's nor the client's current directory; the client runs from a directory of its own, and
nothing may land there. In front of it an authenticating gateway (as a company's ingress) lets through only the
block's token or basic-auth login, so a run that completes proves the credentials went with every request,
artifact uploads included.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from agent_flywheel.tracking import flywheel_experiment
from agent_flywheel.tracking_artifacts import ArtifactLocationError
from agent_flywheel.tracking_credentials import PASSWORD_VARIABLE, TOKEN_VARIABLE, USERNAME_VARIABLE
from blocks.mlflow_tracking import MlflowTracking
from simulators.threaded import free_port
from tests.support.auth_gateway import AuthGateway

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 180.0  # about 8 s on an idle machine
TOKEN = "mlflow-token-7f3a"
USER, PASSWORD = "flywheel", "pw-basic-91"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@dataclass
class MlflowServer:
    url: str
    artifacts: Path
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` with a SQLite store and its own artifact destination, in its own process group."""
    root = tmp_path_factory.mktemp("mlflow-server")
    (root / "cwd").mkdir()
    artifacts = root / "artifacts"
    port = free_port()
    log = root / "server.log"
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
        *("--artifacts-destination", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=root / "cwd", env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = MlflowServer(f"http://127.0.0.1:{port}", artifacts, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(server.url):
            assert process.poll() is None, f"mlflow server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server not healthy:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield server
    finally:
        _stop(process)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group (it runs as a parent and a worker process)."""
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            os.killpg(process.pid, signal.SIGKILL)  # anything of the group still left
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def client_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's own working directory, where MLflow's default would have put ``./mlruns``."""
    cwd = tmp_path / "worker"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name in (TOKEN_VARIABLE, USERNAME_VARIABLE, PASSWORD_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    return cwd


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_artifacts_go_through_the_server_with_the_token(
    mlflow_server: MlflowServer, client_cwd: Path, tmp_path: Path
) -> None:
    with AuthGateway(mlflow_server.url, {f"Bearer {TOKEN}"}) as gateway:
        block = MlflowTracking(tracking_uri=gateway.url, token=SecretStr(TOKEN))
        tracker = block.get_tracker()
        run_id = tracker.start_run(flywheel_experiment("secured"), "parent", tags={"workload_id": "secured"})
        tracker.log(run_id, params={"teacher": "meta/llama"}, metrics={"score": 0.5})
        tracker.log_json(run_id, "manifest.json", {"records": 3})
        card = tmp_path / "card.txt"
        card.write_text("candidate card")
        tracker.log_file(run_id, card, "candidate")
        tracker.end_run(run_id)
        run = tracker.client.get_run(run_id)

    assert gateway.seen and all(header == f"Bearer {TOKEN}" for header in gateway.seen)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    landed = _files(mlflow_server.artifacts)
    assert {p.name for p in landed} >= {"manifest.json", "card.txt"}
    assert all(run_id in p.parts for p in landed if p.name in ("manifest.json", "card.txt"))
    assert _files(client_cwd) == [] and not (client_cwd / "mlruns").exists()
    assert TOKEN_VARIABLE not in os.environ  # set only while the calls ran
    assert TOKEN not in str(run.data.params) + str(run.data.tags) + repr(tracker.client)


def test_basic_auth_credentials_reach_the_server(mlflow_server: MlflowServer, client_cwd: Path) -> None:
    with AuthGateway(mlflow_server.url, {BASIC}) as gateway:
        tracker = MlflowTracking(tracking_uri=gateway.url, username=USER, password=SecretStr(PASSWORD)).get_tracker()
        run_id = tracker.start_run(flywheel_experiment("basic"), "parent")
        tracker.log_text(run_id, "hello", "notes.txt")
    assert gateway.seen and set(gateway.seen) == {BASIC}
    assert any(p.name == "notes.txt" and run_id in p.parts for p in _files(mlflow_server.artifacts))
    assert USERNAME_VARIABLE not in os.environ and PASSWORD_VARIABLE not in os.environ


def test_without_the_token_the_gateway_refuses_and_no_run_is_made(
    mlflow_server: MlflowServer, client_cwd: Path
) -> None:
    with AuthGateway(mlflow_server.url, {f"Bearer {TOKEN}"}) as gateway:
        tracker = MlflowTracking(tracking_uri=gateway.url).get_tracker()
        with pytest.raises(MlflowException) as refused:
            tracker.start_run(flywheel_experiment("refused"), "parent")
    assert "401" in str(refused.value)
    assert gateway.seen and all(header is None for header in gateway.seen)


def test_an_experiment_with_artifacts_on_the_workers_disk_is_refused_before_a_run(
    mlflow_server: MlflowServer, client_cwd: Path, tmp_path: Path
) -> None:
    tracker = MlflowTracking(tracking_uri=mlflow_server.url).get_tracker()
    local = tmp_path / "on-the-worker"
    tracker.client.create_experiment("flywheel/local-artifacts", artifact_location=local.as_uri())
    with pytest.raises(ArtifactLocationError) as refused:
        tracker.start_run("flywheel/local-artifacts", "parent")
    message = str(refused.value)
    assert "\n" not in message and "flywheel/local-artifacts" in message and "--artifacts-destination" in message
    experiment = tracker.client.get_experiment_by_name("flywheel/local-artifacts")
    assert experiment is not None and tracker.client.search_runs([experiment.experiment_id]) == []
