"""Issue #17, "Done when", in a light form: two workers with different homes behave as one machine.

Worker A is a ``flywheel run`` subprocess with ``FLYWHEEL_HOME=A``; worker B is this test process with
``FLYWHEEL_HOME=B``. They share only what a platform team's pods would share: one Prefect server (the session's),
one MLflow store, the result storage (a ``RemoteFileSystem`` block on an fsspec "bucket", a directory outside
both homes, named by ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK``) and the installation's state prefix. Nothing of
A's home is read by B: it is deleted before B starts, as a fresh pod would have none.

1. A flywheel run on A promotes; then, on B, the traffic watch sees 0 new records and a second run stops
   with ``no-new-data`` (no job, no MLflow run, no new model version).
2. A run on A is killed with SIGKILL while its fine-tune trains; the ``reaper`` flow run on B marks it
   crashed (its heartbeats stopped) and stops its jobs and deployments, found by their labels on NeMo.

One small config (one candidate, 40 eval samples) on the local stack's simulators; about a minute.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient

from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig
from tests.support.flywheel_configs import small_flywheel_config

pytestmark = pytest.mark.integration

WORKLOAD, CLIENT = "customer-support", "demo"
REPO = Path(__file__).resolve().parents[2]
LIVE = {"created", "pending", "running"}
FIRST, KILLED = "two-homes", "two-homes-killed"  # the NeMo namespaces of the two scenarios


def _nemo(stack: LocalStackConfig, path: str, namespace: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.url('nemo')}{path}", params={"page_size": 100, "filter[namespace]": namespace}, timeout=30
    )
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _live(stack: LocalStackConfig, namespace: str) -> dict[str, list[str]]:
    """The jobs that still hold (or wait for) GPUs and the deployments in ``namespace``."""
    return {
        "customization_jobs": [
            j["id"] for j in _nemo(stack, "/v1/customization/jobs", namespace) if j["status"] in LIVE
        ],
        "evaluation_jobs": [j["id"] for j in _nemo(stack, "/v1/evaluation/jobs", namespace) if j["status"] in LIVE],
        "deployments": [d["name"] for d in _nemo(stack, "/v1/deployment/model-deployments", namespace)],
    }


def _set_clock(stack: LocalStackConfig, speed: float) -> None:
    httpx.post(f"{stack.url('nemo')}/admin/clock", json={"speed": speed}, timeout=10).raise_for_status()


def _wait(
    condition: Callable[[], Any], timeout_s: float, what: str, process: subprocess.Popen[bytes], log: Path
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"worker A exited ({process.returncode}) before {what}: {log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _heartbeat_seen(flow_run_id: str) -> bool:
    """The Prefect server has stored a heartbeat of the run (what tells the reaper it ran and stopped)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from agent_flywheel.zombies import HEARTBEAT_EVENT

    async def read() -> bool:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[HEARTBEAT_EVENT]),
                    resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
                ),
                limit=1,
            )
        return bool(page.events)

    return asyncio.run(read())


def _flow_run_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(uuid.UUID(flow_run_id))
        return run.state.type.value if run.state else ""

    return asyncio.run(read())


def _versions(tracking_uri: str) -> list[int]:
    versions = MlflowClient(tracking_uri).search_model_versions(f"name = 'flywheel-{WORKLOAD}'")
    return sorted(int(v.version) for v in versions)


def _parent_runs(tracking_uri: str) -> set[str]:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None
    return {
        r.info.run_id for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags
    }


# --------------------------------------------------------------------------------------------------
# The installation both workers belong to
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(start_local_stack: Callable[..., LocalStackConfig]) -> LocalStackConfig:
    """The simulators, with demo traffic in the log server (a fine-tune scores perfectly: a sure promotion)."""
    cfg = start_local_stack({"nim": {"quality": {"lora_ceiling": 1.0, "lora_records_scale": 5}}})
    report = run_traffic(cfg.url("agent"), requests=300, concurrency=16, seed=3)
    assert report.failed == 0
    assert httpx.post(f"{cfg.url('agent')}/admin/flush", timeout=60).status_code == 200
    return cfg


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """What every worker of the installation is given: the Prefect server, the MLflow store, the result
    storage block and the state prefix. This process (worker B) takes them too."""
    from prefect.filesystems import RemoteFileSystem
    from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, temporary_settings

    suffix = uuid.uuid4().hex[:8]
    block = f"two-homes-{suffix}"
    # a bucket as fsspec sees one (Prefect keeps file:// URLs to LocalFileSystem): a directory outside both homes
    bucket = RemoteFileSystem(
        basepath="dir://bucket/flywheel", settings={"path": str(tmp_path), "target_protocol": "file"}
    )
    bucket.save(block, overwrite=True)
    values = {
        "PREFECT_API_URL": os.environ["PREFECT_API_URL"],  # the session's server (tests/conftest.py)
        "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": f"remote-file-system/{block}",
        "FLYWHEEL_STATE_PREFIX": f"two-homes-{suffix}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for key in ("FLYWHEEL_STATE_PREFIX", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(key, values[key])
    with temporary_settings(
        updates={PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: values["PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"]}
    ):
        yield values


def _worker_a(home: Path, shared: dict[str, str], config_file: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``flywheel run`` on worker A: its own home, the installation's shared settings; its output in ``log``."""
    env = {**os.environ, **shared, "FLYWHEEL_HOME": str(home), "PREFECT_LOGGING_LEVEL": "INFO"}
    command = [sys.executable, "-m", "cli.main", "run", "--workload-id", WORKLOAD, "--client-id", CLIENT]
    command += ["--config", str(config_file), *extra]
    with log.open("wb") as out:  # a file, not a pipe: nobody reads a pipe while the run works
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _config_file(tmp_path: Path, namespace: str) -> Path:
    path = tmp_path / f"{namespace}.yaml"
    path.write_text(yaml.safe_dump(small_flywheel_config(namespace).model_dump(mode="json", exclude_defaults=True)))
    return path


# --------------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------------


def test_done_when_two_worker_homes_behave_as_one_machine_and_the_reaper_on_b_stops_what_a_killed_run_left(
    stack: LocalStackConfig, shared: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home_a, home_b = tmp_path / "worker-a", tmp_path / "worker-b"
    tracking_uri = shared["MLFLOW_TRACKING_URI"]

    # 1. a run on A promotes ...
    first_log = tmp_path / "first.log"
    first = _worker_a(home_a, shared, _config_file(tmp_path, FIRST), first_log)
    try:
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    output = first_log.read_text()
    assert first.returncode == 0 and "decision: promoted" in output, output[-3000:]
    versions, parents = _versions(tracking_uri), _parent_runs(tracking_uri)
    assert versions == [1] and len(parents) == 1
    jobs_before = {path: len(_nemo(stack, path, FIRST)) for path in ("/v1/customization/jobs", "/v1/evaluation/jobs")}
    assert any((tmp_path / "bucket" / "flywheel" / "records").rglob("*.jsonl"))  # the record cache: in the bucket
    shutil.rmtree(home_a)  # worker A's disk is gone: whatever B knows, it knows from the shared services

    # ... and B, a fresh worker, sees no new record and re-trains nothing
    monkeypatch.setenv("FLYWHEEL_HOME", str(home_b))
    from flows.flywheel import flywheel
    from flows.traffic_watch import traffic_watch

    watch = traffic_watch(threshold=1, workload_ids=[WORKLOAD])
    (decision,) = [d for d in watch.decisions if (d.workload_id, d.client_id) == (WORKLOAD, CLIENT)]
    assert (decision.new_records, decision.action) == (0, "below-threshold"), decision
    second = asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=small_flywheel_config(FIRST)))
    assert second.outcome == "no-new-data", second.reason
    assert {path: len(_nemo(stack, path, FIRST)) for path in jobs_before} == jobs_before
    assert (_versions(tracking_uri), _parent_runs(tracking_uri)) == (versions, parents)

    # 2. a run on A (reading everything again, in a namespace of its own) is killed while it fine-tunes
    _set_clock(stack, 20)  # training takes ~20 s: time to kill it
    killed_log = tmp_path / "killed.log"
    killed = _worker_a(home_a, shared, _config_file(tmp_path, KILLED), killed_log, "--full-rebuild")
    try:
        job = _wait(
            lambda: next((j for j in _nemo(stack, "/v1/customization/jobs", KILLED) if j["status"] == "running"), None),
            180,
            "the fine-tune to run",
            killed,
            killed_log,
        )
        dead_run = job["custom_fields"]["flywheel_run_id"]  # the label on NeMo says whose it is
        _wait(lambda: _live(stack, KILLED)["deployments"], 60, "a NIM deployment", killed, killed_log)
        _wait(lambda: _heartbeat_seen(dead_run), 60, "a heartbeat of the run on the Prefect server", killed, killed_log)
        _set_clock(stack, 0.001)  # frozen: nothing it started finishes on its own
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    left = _live(stack, KILLED)
    assert left["customization_jobs"] == [job["id"]] and left["deployments"], left
    assert _flow_run_state(dead_run) == "RUNNING"  # nothing told Prefect: its hooks never ran

    # the reaper, on B: the run's heartbeats stopped, so it is crashed, and what it left is stopped
    from flows.reaper import reaper

    try:
        outcome = asyncio.run(reaper(namespaces=[KILLED], zombie_after_minutes=0, flow_names=["flywheel"]))
    finally:
        _set_clock(stack, 1000)
    assert dead_run in [zombie.flow_run_id for zombie in outcome.zombies], outcome.summary()
    assert _flow_run_state(dead_run) == "CRASHED"
    assert _live(stack, KILLED) == {"customization_jobs": [], "evaluation_jobs": [], "deployments": []}
    stopped = {line.ref for line in outcome.resources if line.done.startswith("stopped")}
    assert job["id"] in stopped and all(dead_run in line.owners for line in outcome.resources), outcome.resources
    assert not (home_b / "runs" / dead_run).exists()  # B knew the run only from NeMo's labels and Prefect
