"""Operations for real: a Prefect server, a process worker and the deployments of ``prefect.yaml`` on loopback.

One scenario, in the order a user meets it: ``flywheel server up``, ``flywheel deploy --worker``, new
traffic in the log store, one ``traffic-watch`` run through its deployment, and the trigger creating a
``flywheel`` run with the event's ``workload_id`` and ``client_id``; then the same event again, which
must not create a second run (the watch's cooldown, then the trigger's window); then ``prefect
deployment run 'flywheel/nightly'`` to completion; then ``flywheel server down``.

The traffic watch is the real flow. The flywheel, scaling and rollout-check deployments point at
stand-ins with the same names and signatures (``ops_stub_flows.py``): what is tested here is the
deployment, the worker, the trigger and the concurrency settings, not what the flywheel computes,
which needs the whole simulated stack and has its own tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from elasticsearch import Elasticsearch

from agent_flywheel.local.logserver.server import create_app
from agent_flywheel.local.settings import LocalStackConfig, Ports
from agent_flywheel.local.threaded import ThreadedServer, free_port
from agent_flywheel.logstore import bulk_index, ensure_index
from agent_flywheel.records import LogRecord, validate_record

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STUBS = "tests/integration/ops_stub_flows.py"
WORKLOAD, CLIENT = "ops-test", "ci"
THRESHOLD = 25
T = TypeVar("T")


@dataclass
class Ops:
    env: dict[str, str]
    api: str
    home: Path
    server_config: Path
    local_config: Path
    prefect_file: Path
    es_url: str


def _stub_prefect_file(target: Path) -> Path:
    """prefect.yaml with every flow but the traffic watch pointed at its stand-in."""
    data = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in data["deployments"]:
        function = deployment["entrypoint"].split(":")[1]
        if function != "traffic_watch":
            deployment["entrypoint"] = f"{STUBS}:{function}"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    home = tmp_path / "home"
    prefect_port = free_port()
    server_config = tmp_path / "server.yaml"
    server_config.write_text(
        yaml.safe_dump(
            {
                "prefect": {"port": prefect_port, "ui": False, "scheduler": False},  # no surprise scheduled runs
                "mlflow": {"enabled": True, "port": free_port()},
                "worker": {"query_seconds": 1, "limit": 4},
                "concurrency_limits": {"gpu": 3},
            }
        )
    )
    stack = LocalStackConfig(ports=Ports(logserver=free_port()), state_dir=str(tmp_path / "stack"))
    local_config = tmp_path / "local.yaml"
    local_config.write_text(yaml.safe_dump(stack.model_dump(mode="json")))
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    with ThreadedServer(create_app(stack), port=stack.ports.logserver) as logserver:
        ops = Ops(
            env=env,
            api=env["PREFECT_API_URL"],
            home=home,
            server_config=server_config,
            local_config=local_config,
            prefect_file=_stub_prefect_file(tmp_path / "prefect.yaml"),
            es_url=logserver.url,
        )
        try:
            yield ops
        finally:
            _cancel_unfinished_runs(ops.api)
            down = _cli(ops, "server", "down")
            assert down.returncode == 0, down.stdout + down.stderr


def _cli(ops: Ops, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The operations CLI as a user runs it (``flywheel server|deploy|worker``)."""
    argv = [sys.executable, "-m", "deployments.cli", *args]
    if args[0] in ("server", "worker"):
        argv += ["--server-config", str(ops.server_config)]
    return subprocess.run(argv, cwd=ROOT, env=ops.env, capture_output=True, text=True, timeout=timeout)


def _prefect(ops: Ops, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=ops.env, capture_output=True, text=True, timeout=timeout
    )


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 30.0, every_s: float = 0.25) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _deployment(api: str, flow: str, name: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _runs_of(api: str, deployment_id: str) -> list[dict[str, Any]]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json())


def _cancel_unfinished_runs(api: str) -> None:
    """Cancel whatever still runs, so that no flow-run process outlives the test."""
    try:
        body = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}}}
        runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=5).json()
        for run in runs:
            state = {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}
            httpx.post(f"{api}/flow_runs/{run['id']}/set_state", json=state, timeout=5)
        if runs:
            time.sleep(3)  # the worker's cancellation observer kills the processes
    except httpx.HTTPError:
        pass


def _write_records(es_url: str, n: int) -> None:
    now = datetime.now(UTC).timestamp()
    records = []
    for i in range(n):
        raw = {
            "timestamp": now - n + i,
            "workload_id": WORKLOAD,
            "client_id": CLIENT,
            "request": {"model": "teacher", "messages": [{"role": "user", "content": f"Where is order {i}?"}]},
            "response": {"choices": [{"message": {"role": "assistant", "content": f"Order {i} ships today."}}]},
        }
        record = validate_record(raw, source=f"ops-test:{i}")
        assert isinstance(record, LogRecord), record
        records.append(record)
    es = Elasticsearch(es_url)
    try:
        ensure_index(es, "flywheel")
        report = bulk_index(es, "flywheel", records)
        assert report.indexed == n, report
        es.indices.refresh(index="flywheel")
    finally:
        es.close()


def _start_deployment(ops: Ops, name: str, *params: str) -> subprocess.Popen[str]:
    """``prefect deployment run NAME --watch`` in the background (two runs at once save a worker cycle)."""
    argv = [sys.executable, "-m", "prefect", "deployment", "run", name, "--watch", "--watch-timeout", "90"]
    for param in params:
        argv += ["--param", param]
    return subprocess.Popen(argv, cwd=ROOT, env=ops.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _completed(process: subprocess.Popen[str]) -> str:
    """Wait for a ``--watch`` started by :func:`_start_deployment`; asserts the run completed."""
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "Completed" in output, output
    return output


def _run_deployment(ops: Ops, name: str, *params: str) -> str:
    """``prefect deployment run NAME --watch``; returns its output, asserting the run completed."""
    return _completed(_start_deployment(ops, name, *params))


def _latest_watch_table(api: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"key": {"any_": ["traffic-watch"]}}, "sort": "CREATED_DESC", "limit": 1}
    (artifact,) = httpx.post(f"{api}/artifacts/filter", json=body, timeout=10).json()
    data = artifact["data"]
    return list(json.loads(data) if isinstance(data, str) else data)


def _emit(api: str, client_id: str = CLIENT) -> str:
    """Send one ``flywheel.traffic.accumulated`` event straight to the server, as a second watcher would."""
    payload = {"workload_id": WORKLOAD, "client_id": client_id, "new_records": THRESHOLD + 5}
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id,
        "occurred": datetime.now(UTC).isoformat(),
        "event": "flywheel.traffic.accumulated",
        "resource": {
            "prefect.resource.id": f"flywheel.workload.{WORKLOAD}",
            "flywheel.workload_id": WORKLOAD,
            "flywheel.client_id": client_id,
        },
        "payload": payload,
    }
    response = httpx.post(f"{api}/events", json=[event], timeout=10)
    assert response.status_code == 204, response.text
    return event_id


def _event_stored(api: str, event_id: str) -> bool:
    body = {"filter": {"id": {"id": [event_id]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 5}
    response = httpx.post(f"{api}/events/filter", json=body, timeout=10)
    return response.status_code == 200 and bool(response.json().get("events"))


def test_deploy_trigger_and_run_on_a_local_server(ops: Ops) -> None:
    started = time.monotonic()

    # flywheel server up: the Prefect server and the MLflow UI, both healthy, with an env file for shells
    up = _cli(ops, "server", "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "prefect-server" in up.stdout and "mlflow-server" in up.stdout
    assert (ops.home / "run" / "prefect-server.pid").is_file()
    assert f"PREFECT_API_URL={ops.api}" in (ops.home / "run" / "env.sh").read_text()
    mlflow_port = yaml.safe_load(ops.server_config.read_text())["mlflow"]["port"]
    assert httpx.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=5).status_code == 200

    # flywheel deploy --worker: blocks, pool, `gpu` limit, every deployment of prefect.yaml, a worker
    deployed = _cli(
        ops,
        "deploy",
        "--worker",
        "--prefect-file",
        str(ops.prefect_file),
        "--server-config",
        str(ops.server_config),
        "--local-config",
        str(ops.local_config),
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for name in (
        "flywheel/nightly",
        "flywheel/on-new-traffic",
        "traffic-watch/every-15m",
        "scaling/on-promotion",
        "scaling/manual",
        "rollout-check/manual",
    ):
        assert f"deployment   {name}" in deployed.stdout, deployed.stdout
    assert "gpu=3 (created)" in deployed.stdout
    assert "flywheel-log-store/local" in deployed.stdout
    assert "online" in deployed.stdout

    triggered = _deployment(ops.api, "flywheel", "on-new-traffic")
    assert triggered["global_concurrency_limit"]["limit"] == 1
    assert triggered["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    nightly = _deployment(ops.api, "flywheel", "nightly")
    assert nightly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"

    # new traffic, then one traffic-watch run through its deployment: it emits, the trigger creates a run
    _write_records(ops.es_url, THRESHOLD + 5)
    _run_deployment(ops, "traffic-watch/every-15m", f"threshold={THRESHOLD}")
    (row,) = _latest_watch_table(ops.api)
    assert (row["workload_id"], row["new_records"], row["action"]) == (WORKLOAD, THRESHOLD + 5, "emit")

    run = _wait_for("the trigger's flywheel run", lambda: _runs_of(ops.api, triggered["id"]), timeout_s=20)[0]
    assert run["parameters"]["workload_id"] == WORKLOAD
    assert run["parameters"]["client_id"] == CLIENT
    assert run["parameters"]["config_path"] == "configs/flywheel.yaml"  # the deployment's defaults are kept

    # the worker ran the triggered run with the event's parameters, in the project directory
    _wait_for("the triggered run to complete", lambda: _stub_runs(ops.home, "flywheel"), timeout_s=30)
    assert _stub_runs(ops.home, "flywheel")[0]["parameters"]["workload_id"] == WORKLOAD

    # at once: the same traffic watched again, the same event sent anyway (as a second watcher would),
    # and `prefect deployment run 'flywheel/nightly'`, which completes with the nightly parameters
    second_watch = _start_deployment(ops, "traffic-watch/every-15m", f"threshold={THRESHOLD}")
    nightly_run = _start_deployment(ops, "flywheel/nightly")
    event_id = _emit(ops.api)
    _emit(ops.api, client_id="ci-2")  # control: another client of the workload is another bucket, so it does run
    _completed(second_watch)
    (again,) = _latest_watch_table(ops.api)
    assert again["action"] == "cooldown", again  # the watch holds back: same watermark, within the cooldown
    _completed(nightly_run)
    nightly_params = {"workload_id": "customer-support", "client_id": "demo", "config_path": "configs/flywheel.yaml"}
    assert nightly_params in [r["parameters"] for r in _stub_runs(ops.home, "flywheel")]

    # the event sent anyway fell in the trigger's window: still exactly one triggered run for (workload, client)
    _wait_for("the repeated event to be stored", lambda: _event_stored(ops.api, event_id), timeout_s=15)
    time.sleep(1.0)  # the trigger acts within about 0.3 s of an event; the watch above took several seconds
    clients = [run["parameters"]["client_id"] for run in _runs_of(ops.api, triggered["id"])]
    assert sorted(clients) == [CLIENT, "ci-2"], clients

    # a schedule changed in the UI survives `flywheel deploy` (prefect.yaml's schedules only seed new deployments)
    (schedule,) = nightly["schedules"]
    changed = {"schedule": {"cron": "30 3 * * *", "timezone": "UTC"}}
    patched = httpx.patch(f"{ops.api}/deployments/{nightly['id']}/schedules/{schedule['id']}", json=changed, timeout=10)
    assert patched.status_code == 204, patched.text
    redeployed = _cli(
        ops, "deploy", "--no-blocks", "--prefect-file", str(ops.prefect_file), "--server-config", str(ops.server_config)
    )
    assert redeployed.returncode == 0, redeployed.stdout + redeployed.stderr
    assert [s["schedule"]["cron"] for s in _deployment(ops.api, "flywheel", "nightly")["schedules"]] == ["30 3 * * *"]

    # flywheel server down (in the fixture) stops the worker first; here, the worker stops on its own command
    worker_down = _cli(ops, "worker", "down")
    assert worker_down.returncode == 0 and "prefect-worker" in worker_down.stdout, worker_down.stdout
    assert time.monotonic() - started < 150


def _stub_runs(home: Path, flow: str) -> list[dict[str, Any]]:
    path = home / "stub-runs.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["flow"] == flow]


FLOW_NAMES = {
    "flywheel": "flywheel",
    "traffic_watch": "traffic-watch",
    "scaling": "scaling",
    "rollout_check": "rollout-check",
}


def test_prefect_yaml_fits_the_real_flows() -> None:
    """The real entrypoints load, and what prefect.yaml and its triggers pass is what the flows accept.

    The scenario above runs stand-ins; this is what ties prefect.yaml to the real signatures (a renamed
    parameter would otherwise only show when a trigger's run is rejected on a server). Entrypoints whose
    file does not exist yet are reported as skipped.
    """
    from prefect.flows import load_flow_from_entrypoint

    data = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    missing = []
    for deployment in data["deployments"]:
        path, function = deployment["entrypoint"].split(":")
        if not (ROOT / path).is_file():
            missing.append(deployment["entrypoint"])
            continue
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.name == FLOW_NAMES[function], deployment["entrypoint"]
        parameters = dict(deployment.get("parameters") or {})
        for trigger in deployment.get("triggers") or []:
            parameters.update({name: f"from-{name}" for name in trigger.get("parameters") or {}})
        accepted = flow.validate_parameters(parameters)  # raises on unknown names, wrong types, missing required
        assert set(parameters) <= set(accepted)
    if missing:
        pytest.skip(f"entrypoints not written yet: {', '.join(missing)}")
