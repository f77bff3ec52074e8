"""Operations for real: a Prefect server, a process worker and the deployments of ``prefect.yaml`` on loopback.

One scenario, in the order a user meets it: ``flywheel server up``, ``flywheel deploy --worker``, demo
traffic through the agent into the log server, one ``traffic-watch`` run through its deployment, and
the trigger creating a ``flywheel`` run with the event's ``workload_id`` and ``client_id``, which the
worker runs to completion; the same event again, which must not create a second run (the trigger's
window ignores it, while another client's event queues for the deployment's slot); the watch again,
which finds nothing new past the watermark the run moved; ``prefect deployment run 'flywheel/nightly'``
to completion; a schedule changed and an automation paused in the UI, both kept by ``flywheel deploy``; each run's parent run in MLflow, tagged with its
flow run id; the promotion event starting ``rollout-check/on-promotion``; then ``flywheel server down``.

The flywheel and the traffic watch are the real flows (``flows/flywheel.py``, ``flows/traffic_watch.py``),
run by the worker in subprocesses against the whole local stack, which this test serves in-process on
free loopback ports (the ``local`` blocks ``flywheel deploy --local-config`` saves point the subprocesses at it).
The flywheel deployments get a small config written here (one candidate, 40 eval samples) as their
``config_path``. The scaling and rollout-check deployments point at stand-ins (``ops_stub_flows.py``):
their load tests take minutes and have their own tests.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from simulators.agent.traffic import run_traffic
from simulators.settings import PARTS, LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STUBS = "tests/prefect/ops_stub_flows.py"
WORKLOAD, CLIENT = "customer-support", "demo"  # what the demo agent logs (and flywheel/nightly's defaults)
NAMESPACE = "ops-test"
SMALL = "meta/llama-3.2-1b-instruct"
TEACHER = "meta/llama-3.3-70b-instruct"
REQUESTS = 300  # agent conversations; each logs one or more LLM calls
THRESHOLD = 200
WATCH_PARAMS = (f"threshold={THRESHOLD}", f'workload_ids=["{WORKLOAD}"]')
FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
STATE_PREFIX = "ops"  # FLYWHEEL_STATE_PREFIX of the scenario's installation
T = TypeVar("T")


@dataclass
class Ops:
    env: dict[str, str]
    api: str
    home: Path
    server_config: Path
    local_config: Path
    prefect_file: Path
    flywheel_config: Path
    stack: LocalStackConfig
    mlflow_url: str
    phases: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def phase(self, name: str) -> None:
        """Note how long the scenario has run when ``name`` is done (printed at the end)."""
        self.phases.append((name, round(time.monotonic() - self.started, 1)))


# --------------------------------------------------------------------------------------------------
# Set-up: the local stack in-process, a small flywheel config, prefect.yaml pointed at both
# --------------------------------------------------------------------------------------------------


def _stack_config(state_dir: Path) -> LocalStackConfig:
    """Free ports and fast clocks; a fine-tune on a few hundred records scores perfectly (a sure promotion)."""
    return LocalStackConfig(
        ports=Ports(**{part: free_port() for part in PARTS}),
        clock_speed=1000,
        state_dir=str(state_dir),
        nim={"latency": {"time_scale": 0}, "quality": {"lora_ceiling": 1.0, "lora_records_scale": 5}},
        agent={"tool_latency_scale": 0, "log_flush_interval_s": 0.2},
    )


def _start_stack(cfg: LocalStackConfig, stack: ExitStack) -> None:
    """Every part of the local stack as a real HTTP server in a thread of this process."""
    for part in PARTS:
        module = importlib.import_module(f"simulators.{part}.server")
        stack.enter_context(ThreadedServer(module.create_app(cfg), cfg.host, getattr(cfg.ports, part)))


def _small_flywheel_config(target: Path) -> Path:
    """One LoRA candidate against the teacher on 40 eval samples: a real run in well under a minute."""
    data = yaml.safe_load((ROOT / "configs" / "flywheel.yaml").read_text())
    data["namespace"] = NAMESPACE
    data["nims"] = [nim for nim in data["nims"] if nim["model_name"] == SMALL]
    data["data_split_config"].update({"eval_size": 40, "min_total_records": 50, "limit": 1000})
    data["evaluation_config"].update({"poll_interval_s": 0.2, "timeout_s": 120})
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def _test_prefect_file(target: Path, flywheel_config: Path) -> Path:
    """prefect.yaml with the flywheel deployments on the small config and the scaling flows on stand-ins."""
    data = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in data["deployments"]:
        function = deployment["entrypoint"].split(":")[1]
        if function == "flywheel":
            deployment["parameters"]["config_path"] = str(flywheel_config)
        elif function not in ("traffic_watch", "reaper", "flywheel_cleanup"):
            deployment["entrypoint"] = f"{STUBS}:{function}"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    home = tmp_path / "home"
    prefect_port, mlflow_port = free_port(), free_port()
    server_config = tmp_path / "server.yaml"
    server_config.write_text(
        yaml.safe_dump(
            {
                "prefect": {"port": prefect_port, "ui": False, "scheduler": False},  # no surprise scheduled runs
                "mlflow": {"enabled": True, "port": mlflow_port},
                "worker": {"query_seconds": 1, "limit": 4},
                "concurrency_limits": {"gpu": 3},
            }
        )
    )
    stack_cfg = _stack_config(tmp_path / "stack")
    local_config = tmp_path / "local.yaml"
    local_config.write_text(yaml.safe_dump(stack_cfg.model_dump(mode="json")))
    flywheel_config = _small_flywheel_config(tmp_path / "flywheel-small.yaml")
    env = {
        **os.environ,
        "FLYWHEEL_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "FLYWHEEL_STATE_PREFIX": STATE_PREFIX,  # one installation, on a server of its own
        # The MLflow UI's job runner (seven more Python processes) serves nothing the flywheel uses.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    with ExitStack() as stack:
        _start_stack(stack_cfg, stack)
        ops = Ops(
            env=env,
            api=env["PREFECT_API_URL"],
            home=home,
            server_config=server_config,
            local_config=local_config,
            prefect_file=_test_prefect_file(tmp_path / "prefect.yaml", flywheel_config),
            flywheel_config=flywheel_config,
            stack=stack_cfg,
            mlflow_url=f"http://127.0.0.1:{mlflow_port}",
        )
        try:
            yield ops
        finally:
            _cancel_unfinished_runs(ops.api)
            down = _cli(ops, "server", "down")
            print("phases (s since start):", ops.phases)
            assert down.returncode == 0, down.stdout + down.stderr


# --------------------------------------------------------------------------------------------------
# Helpers: the CLIs as a user runs them, the Prefect and MLflow REST APIs
# --------------------------------------------------------------------------------------------------


def _cli_start(ops: Ops, *args: str) -> subprocess.Popen[str]:
    """The operations CLI as a user runs it (``flywheel server|deploy|worker``), in the background."""
    argv = [sys.executable, "-m", "cli.operations", *args]
    if args[0] in ("server", "worker"):
        argv += ["--server-config", str(ops.server_config)]
    return subprocess.Popen(argv, cwd=ROOT, env=ops.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _cli(ops: Ops, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return _finish(_cli_start(ops, *args), timeout)


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 180.0, every_s: float = 0.25) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _retry_busy(request: Callable[[], httpx.Response], attempts: int = 5) -> httpx.Response:
    """A write to the Prefect API, again after a 503 (its SQLite database was busy with the flow runs' writes)."""
    response = request()
    for _ in range(attempts - 1):
        if response.status_code != 503:
            break
        time.sleep(1.0)
        response = request()
    return response


def _deployment(api: str, flow: str, name: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/deployments/name/{flow}/{name}", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _state_document(ops: Ops, kind: str, *parts: str) -> Any:
    """A run state document of the installation, as the worker's flows stored it: a Prefect variable of the
    scenario's server (a large one points at the worker's result storage, its home's ``results``)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from agent_flywheel.state import STATE_PREFIX_ENV, FileBlobStore, state_name
    from tasks.state_store import VariableStateStore

    with pytest.MonkeyPatch.context() as patch, temporary_settings(updates={PREFECT_API_URL: ops.api}):
        patch.setenv(STATE_PREFIX_ENV, STATE_PREFIX)
        name = state_name(kind, *parts)
        document = VariableStateStore(FileBlobStore(ops.home / "results")).get(name)
    assert document is not None, f"no state document {name}"
    return document


def _runs_of(api: str, deployment_id: str) -> list[dict[str, Any]]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json())


def _flow_run(api: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api}/flow_runs/{run_id}", timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _state(run: dict[str, Any]) -> tuple[str, str]:
    state = run.get("state") or {}
    return str(state.get("type")), str(state.get("name"))


def _finished(api: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    """Wait until the flow run is in a final state; returns it."""
    return _wait_for(
        f"flow run {run_id} to finish",
        lambda: run if _state(run := _flow_run(api, run_id))[0] in FINISHED else None,
        timeout_s=timeout_s,
        every_s=0.5,
    )


def _run_logs(api: str, run_id: str) -> str:
    """The end of a flow run's log, for assertion messages."""
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}
    try:
        logs = httpx.post(f"{api}/logs/filter", json=body, timeout=60).json()
    except httpx.HTTPError as exc:
        return f"(no logs: {exc})"
    return "\n".join(str(line.get("message")) for line in logs)[-4000:]


def _cancel(api: str, run_id: str) -> None:
    """Cancel a flow run: at once while it waits to start, through the worker (which kills it) once started."""
    waiting = _state(_flow_run(api, run_id))[0] == "SCHEDULED"
    state = {"state": {"type": "CANCELLED" if waiting else "CANCELLING"}, "force": True}
    response = _retry_busy(lambda: httpx.post(f"{api}/flow_runs/{run_id}/set_state", json=state, timeout=60))
    assert response.status_code in (200, 201), response.text


def _unfinished_runs(api: str) -> list[dict[str, Any]]:
    """Flow runs running, starting or due now (not the ones a schedule has for later)."""
    due = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    body = {
        "flow_runs": {
            "state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING"]}},
            "expected_start_time": {"before_": due},
        }
    }
    response = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json())


def _cancel_unfinished_runs(api: str) -> None:
    """Cancel whatever still runs, so that no flow-run process outlives the test."""
    try:
        body = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}}}}
        runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=60).json()
        for run in runs:
            state = {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}
            httpx.post(f"{api}/flow_runs/{run['id']}/set_state", json=state, timeout=60)
        if runs:
            time.sleep(3)  # the worker's cancellation observer kills the processes
    except httpx.HTTPError:
        pass


def _send_traffic(ops: Ops) -> int:
    """Demo conversations through the agent, flushed to the log server; returns the records logged.

    The agent logs two workloads: ``customer-support`` (one tool-selection call per conversation) and
    ``customer-support-reply`` (the reply, after a tool call).
    """
    agent = ops.stack.url("agent")
    report = run_traffic(agent, requests=REQUESTS, concurrency=16, seed=3)
    assert report.failed == 0, report.errors
    assert httpx.post(f"{agent}/admin/flush", timeout=60).status_code == 200
    count = httpx.get(f"{ops.stack.url('logserver')}/flywheel/_count", timeout=60).json()["count"]
    assert count == report.llm_calls, (count, report.llm_calls)
    return int(count)


def _start_deployment(ops: Ops, name: str, *params: str, watch_s: int = 600) -> subprocess.Popen[str]:
    """``prefect deployment run NAME --watch`` in the background."""
    argv = [sys.executable, "-m", "prefect", "deployment", "run", name, "--watch", "--watch-timeout", str(watch_s)]
    for param in params:
        argv += ["--param", param]
    return subprocess.Popen(argv, cwd=ROOT, env=ops.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _completed(process: subprocess.Popen[str], timeout_s: float = 600) -> str:
    """Wait for a ``--watch`` started by :func:`_start_deployment`; asserts the run completed."""
    output, _ = process.communicate(timeout=timeout_s)
    assert process.returncode == 0, output
    assert "Completed" in output, output
    return output


def _latest_watch_table(api: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"key": {"any_": ["traffic-watch"]}}, "sort": "CREATED_DESC", "limit": 1}
    (artifact,) = httpx.post(f"{api}/artifacts/filter", json=body, timeout=60).json()
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
    response = _retry_busy(lambda: httpx.post(f"{api}/events", json=[event], timeout=60))
    assert response.status_code == 204, response.text
    return event_id


def _automations(api: str, name: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{api}/automations/filter", json={}, timeout=10)
    assert response.status_code == 200, response.text
    return [a for a in response.json() if a["name"] == name]


def _event_stored(api: str, event_id: str) -> bool:
    body = {"filter": {"id": {"id": [event_id]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 5}
    response = httpx.post(f"{api}/events/filter", json=body, timeout=60)
    return response.status_code == 200 and bool(response.json().get("events"))


def _mlflow_runs_of(mlflow_url: str, flow_run_id: str) -> list[dict[str, Any]]:
    """The MLflow runs tagged with a Prefect flow run's id, read through the MLflow server's REST API."""
    experiment = httpx.get(
        f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": f"flywheel/{WORKLOAD}"},
        timeout=60,
    )
    assert experiment.status_code == 200, experiment.text
    body = {
        "experiment_ids": [experiment.json()["experiment"]["experiment_id"]],
        "filter": f"tags.`prefect.flow_run_id` = '{flow_run_id}'",
        "max_results": 100,
    }
    response = httpx.post(f"{mlflow_url}/api/2.0/mlflow/runs/search", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return list(response.json().get("runs", []))


def _mlflow_parent_run(mlflow_url: str, flow_run_id: str) -> dict[str, Any]:
    """The flywheel's parent run for a Prefect flow run, with a child run per candidate and mode."""
    runs = _mlflow_runs_of(mlflow_url, flow_run_id)
    parents = [run for run in runs if "mlflow.parentRunId" not in _tags(run)]
    assert len(parents) == 1, [run["info"]["run_name"] for run in runs]
    modes = sorted((_tags(run)["candidate"], _tags(run)["eval_mode"]) for run in runs if run not in parents)
    assert modes == sorted(
        [(TEACHER, "base-eval"), (SMALL, "base-eval"), (SMALL, "icl-eval"), (SMALL, "customized-eval")]
    )
    return dict(parents[0])


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run.get("data", {}).get("tags", [])}


def _stub_runs(home: Path, flow: str) -> list[dict[str, Any]]:
    path = home / "stub-runs.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["flow"] == flow]


# --------------------------------------------------------------------------------------------------
# The scenario
# --------------------------------------------------------------------------------------------------


def test_deploy_trigger_and_run_on_a_local_server(ops: Ops) -> None:
    # flywheel server up: the Prefect server and the MLflow UI, both healthy, with an env file for shells;
    # meanwhile, demo traffic through the agent into the log server
    server_up = _cli_start(ops, "server", "up")
    ops.phase(f"traffic ({_send_traffic(ops)} records)")
    up = _finish(server_up)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "prefect-server" in up.stdout and "mlflow-server" in up.stdout
    assert (ops.home / "run" / "prefect-server.pid").is_file()
    assert f"PREFECT_API_URL={ops.api}" in (ops.home / "run" / "env.sh").read_text()
    assert httpx.get(f"{ops.mlflow_url}/health", timeout=60).status_code == 200
    ops.phase("server up")

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
        "rollout-check/on-promotion",
        "scaling/manual",
        "rollout-check/manual",
        "reaper/every-10m",
        "flywheel-cleanup/weekly",
        "flywheel-cleanup/manual",
    ):
        assert f"deployment   {name}" in deployed.stdout, deployed.stdout
    assert "gpu=3 (created)" in deployed.stdout
    assert "flywheel-log-store/local" in deployed.stdout
    assert "online" in deployed.stdout
    ops.phase("deploy --worker")

    triggered = _deployment(ops.api, "flywheel", "on-new-traffic")
    assert triggered["global_concurrency_limit"]["limit"] == 1
    assert triggered["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    assert triggered["entrypoint"] == "flows/flywheel.py:flywheel"  # the real flywheel
    nightly = _deployment(ops.api, "flywheel", "nightly")
    assert nightly["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"

    # one traffic-watch run through its deployment (for the tool-selection workload; the reply workload
    # would get a flywheel run of its own): it emits, and the trigger creates a flywheel run
    _completed(_start_deployment(ops, "traffic-watch/every-15m", *WATCH_PARAMS))
    (row,) = _latest_watch_table(ops.api)
    assert (row["workload_id"], row["client_id"], row["new_records"]) == (WORKLOAD, CLIENT, REQUESTS)
    assert row["action"] == "emit", row
    ops.phase("traffic-watch emitted")

    run = _wait_for("the trigger's flywheel run", lambda: _runs_of(ops.api, triggered["id"]))[0]
    assert run["parameters"]["workload_id"] == WORKLOAD
    assert run["parameters"]["client_id"] == CLIENT
    assert run["parameters"]["config_path"] == str(ops.flywheel_config)  # the deployment's defaults are kept

    # once the worker has started it (and so holds the deployment's one slot): the same event sent anyway
    # (as a second watcher would), and the event for another client as a control
    _wait_for(
        "the worker to start the triggered run",
        lambda: _state(_flow_run(ops.api, run["id"]))[0] in ("PENDING", "RUNNING", *FINISHED),
    )
    event_id = _emit(ops.api)
    _emit(ops.api, client_id="ci-2")  # another client of the workload is another bucket, so it does get a run ...
    control = _wait_for(
        "the control event's run",
        lambda: [r for r in _runs_of(ops.api, triggered["id"]) if r["parameters"]["client_id"] == "ci-2"],
    )[0]
    if _state(_flow_run(ops.api, run["id"]))[0] not in FINISHED:
        # ... which waits for the slot (ENQUEUE) while the first run is in flight
        _wait_for(
            "the control run to wait for the deployment's slot",
            lambda: (
                _state(_flow_run(ops.api, control["id"]))[1] == "AwaitingConcurrencySlot"
                or _state(_flow_run(ops.api, run["id"]))[0] in FINISHED
            ),
        )
    control_state = _state(_flow_run(ops.api, control["id"]))[1]
    _cancel(ops.api, control["id"])  # it has no traffic of its own; it has shown what it had to
    ops.phase(f"repeat sent (control run: {control_state})")

    # the worker ran the real flywheel for the event's workload to completion, and it moved the watermark
    finished = _finished(ops.api, run["id"], timeout_s=600)
    assert _state(finished)[0] == "COMPLETED", _run_logs(ops.api, run["id"])
    watermark = _state_document(ops, "watermark", WORKLOAD, CLIENT)  # a Prefect variable: any worker sees it
    assert watermark["workload_id"] == WORKLOAD and watermark["updated_at"], watermark
    ops.phase("triggered flywheel completed")

    # the event sent anyway fell in the trigger's window: still exactly one triggered run for (workload, client)
    _wait_for("the repeated event to be stored", lambda: _event_stored(ops.api, event_id))
    clients = [r["parameters"]["client_id"] for r in _runs_of(ops.api, triggered["id"])]
    assert sorted(clients) == sorted([CLIENT, "ci-2"]), clients

    # at once: the traffic watched again, which finds nothing new past the watermark; `prefect deployment run
    # 'flywheel/nightly'`, which completes (nightly defaults, small config); and a schedule changed in the UI,
    # which survives `flywheel deploy` (prefect.yaml's schedules only seed new deployments)
    second_watch = _start_deployment(ops, "traffic-watch/every-15m", *WATCH_PARAMS)
    nightly_run = _start_deployment(ops, "flywheel/nightly", watch_s=600)
    (schedule,) = nightly["schedules"]
    changed = {"schedule": {"cron": "30 3 * * *", "timezone": "UTC"}}
    patched = _retry_busy(
        lambda: httpx.patch(
            f"{ops.api}/deployments/{nightly['id']}/schedules/{schedule['id']}", json=changed, timeout=60
        )
    )
    assert patched.status_code == 204, patched.text
    (trigger,) = _automations(ops.api, "flywheel-on-new-traffic")  # paused in the UI ...
    paused = _retry_busy(lambda: httpx.patch(f"{ops.api}/automations/{trigger['id']}", json={"enabled": False}))
    assert paused.status_code == 204, paused.text
    redeployed = _cli(
        ops, "deploy", "--no-blocks", "--prefect-file", str(ops.prefect_file), "--server-config", str(ops.server_config)
    )
    assert redeployed.returncode == 0, redeployed.stdout + redeployed.stderr
    assert [s["schedule"]["cron"] for s in _deployment(ops.api, "flywheel", "nightly")["schedules"]] == ["30 3 * * *"]
    assert [a["enabled"] for a in _automations(ops.api, "flywheel-on-new-traffic")] == [False]  # ... stays paused
    assert "automation   flywheel-on-new-traffic: kept paused" in redeployed.stdout, redeployed.stdout
    _completed(second_watch)
    (again,) = _latest_watch_table(ops.api)
    assert (again["new_records"], again["action"]) == (0, "below-threshold"), again
    _completed(nightly_run)
    (nightly_flow_run,) = _runs_of(ops.api, nightly["id"])
    assert nightly_flow_run["parameters"]["workload_id"] == WORKLOAD
    assert nightly_flow_run["parameters"]["client_id"] == CLIENT
    ops.phase("watch held back, nightly completed")

    # MLflow (through the MLflow server that `flywheel server up` started): one parent run for the triggered
    # flow run, tagged with its id, with the gate's decision; the nightly run after it found no new records
    # and stopped before any dataset or job, saying so in its final state
    parent = _mlflow_parent_run(ops.mlflow_url, run["id"])
    tags = _tags(parent)
    assert (tags["workload_id"], tags["client_id"], tags["simulated"]) == (WORKLOAD, CLIENT, "true")
    assert parent["info"]["status"] == "FINISHED"
    assert tags["gate.outcome"] == "promoted", tags
    assert tags["gate.promoted"] == f"{SMALL} (customized-eval)"
    assert _flow_run(ops.api, run["id"])["state"]["message"].startswith(f"flywheel {WORKLOAD}/{CLIENT}: promoted: ")
    nightly_message = _flow_run(ops.api, nightly_flow_run["id"])["state"]["message"]
    assert nightly_message.startswith(f"flywheel {WORKLOAD}/{CLIENT}: no-new-data: "), nightly_message
    assert _mlflow_runs_of(ops.mlflow_url, nightly_flow_run["id"]) == []

    # the promotion event started rollout-check/on-promotion (a stand-in) with the served LoRA model as the canary
    served = _wait_for("rollout-check/on-promotion", lambda: _stub_runs(ops.home, "rollout-check"))
    assert served[0]["parameters"]["canary_model"].startswith(f"{NAMESPACE}/customized-"), served

    # flywheel server down (in the fixture) stops the worker first; here, the worker stops on its own command
    _wait_for("every flow run to finish", lambda: not _unfinished_runs(ops.api), every_s=0.5)
    assert len(_stub_runs(ops.home, "rollout-check")) == 1  # the nightly run promoted nothing: no second check
    worker_down = _cli(ops, "worker", "down")
    assert worker_down.returncode == 0 and "prefect-worker" in worker_down.stdout, worker_down.stdout
    ops.phase("worker down")


FLOW_NAMES = {
    "flywheel": "flywheel",
    "traffic_watch": "traffic-watch",
    "scaling": "scaling",
    "rollout_check": "rollout-check",
    "reaper": "reaper",
    "flywheel_cleanup": "flywheel-cleanup",
}


def test_prefect_yaml_fits_the_real_flows() -> None:
    """The real entrypoints load, and what prefect.yaml and its triggers pass is what the flows accept.

    The scenario above runs stand-ins for the scaling flows; this is what ties prefect.yaml to their real
    signatures (a renamed parameter would otherwise only show when a trigger's run is rejected on a server).
    Entrypoints whose file does not exist yet are reported as skipped.
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
