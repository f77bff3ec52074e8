"""A real ``prefect server start`` with its scheduler on: schedules make runs, a worker runs them; real API limits.

The other operations tests start their server with the scheduler off, so nothing showed that the server's
scheduler service works with the locked packages (with SQLAlchemy 2.1 it failed on every loop, and no
scheduled deployment ever got a run). Here a process worker must complete a run that the scheduler made
for an interval schedule. The same server checks that the traffic watch's query for flywheel runs in
flight reads past the 200 runs a server serves per request (it asked for 500 at once, which a real
server refuses with 422).

Every process started here (the server, the worker and the flow runs the worker starts in sessions of
their own) carries this server's ``PREFECT_HOME`` in its environment; teardown kills their process
groups, then anything left that carries it, and fails if something survives.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from simulators.threaded import free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
PROBE_ENTRYPOINT = "schedule_probe_flow.py:schedule_probe"  # relative to HERE, the deployment's source
START_TIMEOUT_S = 180.0  # server start-up on a busy machine (migrations, services)
RUN_DEADLINE_S = 240.0  # from the deployment's creation to a completed scheduled run
INTERVAL_S = 5
T = TypeVar("T")


@dataclass
class RealServer:
    api: str
    home: Path
    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """``python -m prefect *args`` in its own session, output to ``logs/<name>.log``."""
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", *args],
                cwd=HERE,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def log(self, name: str, lines: int = 60) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no {name} log)"
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        return f"--- server log ---\n{self.log('server')}\n--- worker log ---\n{self.log('worker')}"


# --------------------------------------------------------------------------------------------------
# Processes: start, and make sure that nothing started here outlives the module
# --------------------------------------------------------------------------------------------------


def _marked_pids(marker: bytes) -> list[int]:
    """Processes (not this one) whose environment holds ``marker`` (Linux: read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _kill_group(process: subprocess.Popen[bytes], first: signal.Signals, grace_s: float) -> None:
    """Send ``first`` to the process group, wait up to ``grace_s``, then SIGKILL the group and reap."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, first)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _stop_everything(server: RealServer) -> list[int]:
    """Stop what was started here, workers first; returns the pids that could not be killed."""
    for process in reversed(server.processes):
        is_server = process is server.processes[0]
        _kill_group(process, signal.SIGTERM if is_server else signal.SIGKILL, 20.0 if is_server else 5.0)
    marker = f"PREFECT_HOME={server.home}".encode()
    if not Path("/proc").is_dir():
        return []
    deadline = time.monotonic() + 20
    while (left := _marked_pids(marker)) and time.monotonic() < deadline:
        for pid in left:  # flow runs the worker started in sessions of their own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    return _marked_pids(marker)


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, why: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(1.0)
    raise AssertionError(f"no {what} after {timeout_s:.0f} s\n{why()}")


def _healthy(api: str) -> bool | None:
    try:
        response = httpx.get(f"{api}/health", timeout=5)
    except httpx.HTTPError:
        return None
    return True if response.status_code == 200 else None


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """``prefect server start`` with the scheduler on and fast loops, on a free loopback port."""
    root = tmp_path_factory.mktemp("prefect-real-server")
    home, logs = root / "home", root / "logs"
    logs.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
        # The scheduler's main loop (every deployment short of runs) and its loop for deployments
        # changed just now: both every second instead of 60 s and 5 s.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
        # A few runs ahead (at least 2, at least 30 s, at most 5), not the default hour of runs.
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "5",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT30S",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "10",
    }
    server = RealServer(api=api, home=home, env=env, logs=logs)
    try:
        process = server.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui")
        _wait_for(
            "healthy Prefect server",
            lambda: _healthy(api) if process.poll() is None else False,
            START_TIMEOUT_S,
            server.diagnostics,
        )
        assert process.poll() is None, f"the server exited ({process.returncode})\n{server.diagnostics()}"
        yield server
    finally:
        survivors = _stop_everything(server)
        assert not survivors, f"processes left running: {survivors}"


def _api_settings(api: str) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api})


def _busy_retried(request: Callable[[], httpx.Response]) -> httpx.Response:
    """A request to the Prefect API, again while it answers 503 (its SQLite database is busy with the
    scheduler's, the worker's and the flow runs' writes), for up to a minute of tries."""
    response = request()
    for _ in range(60):
        if response.status_code != 503:
            break
        time.sleep(1.0)
        response = request()
    return response


def _send(api: str, method: str, path: str, body: dict[str, Any]) -> Any:
    response = _busy_retried(lambda: httpx.request(method, f"{api}{path}", json=body, timeout=30))
    assert response.status_code in (200, 201, 204), f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def _post(api: str, path: str, body: dict[str, Any]) -> Any:
    return _send(api, "POST", path, body)


# --------------------------------------------------------------------------------------------------
# The scheduler makes runs of an interval schedule; a process worker completes one
# --------------------------------------------------------------------------------------------------


def test_interval_schedule_runs_complete_on_a_process_worker(real_server: RealServer) -> None:
    from prefect import Flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from tests.prefect.schedule_probe_flow import schedule_probe

    api, pool = real_server.api, "schedule-probe-pool"
    with _api_settings(api):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        # from a local folder: the worker's flow run loads the entrypoint from there (no image, no push)
        probe = schedule_probe.from_source(source=str(HERE), entrypoint=PROBE_ENTRYPOINT)
        assert isinstance(probe, Flow)
        deployment_id = probe.deploy(
            name=f"every-{INTERVAL_S}s", work_pool_name=pool, interval=INTERVAL_S, print_next_steps=False
        )
    real_server.start("worker", "worker", "start", "--pool", pool, "--type", "process", "--name", "probe-worker")

    def scheduled_runs() -> list[dict[str, Any]]:
        body = {"deployments": {"id": {"any_": [str(deployment_id)]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return [run for run in _post(api, "/flow_runs/filter", body) if run["auto_scheduled"]]

    def completed_run() -> dict[str, Any] | None:
        done = [run for run in scheduled_runs() if (run.get("state") or {}).get("type") == "COMPLETED"]
        return done[0] if done else None

    def why() -> str:
        states = [(run["name"], (run.get("state") or {}).get("name")) for run in scheduled_runs()]
        return f"runs the scheduler made: {states or 'none'}\n{real_server.diagnostics()}"

    run = _wait_for("scheduled run completed by the worker", completed_run, RUN_DEADLINE_S, why)
    assert run["deployment_id"] == str(deployment_id)
    assert "auto-scheduled" in run["tags"]
    assert run["created_by"]["type"] == "SCHEDULE"
    assert run["work_queue_name"] == "default"
    assert "Can't evaluate bulk DML statement" not in real_server.log("server", lines=100_000)
    _send(api, "PATCH", f"/deployments/{deployment_id}", {"paused": True})  # no more runs for the next test


# --------------------------------------------------------------------------------------------------
# The traffic watch's query of flywheel runs in flight, past one page of the real API
# --------------------------------------------------------------------------------------------------


def test_traffic_watch_reads_more_flywheel_runs_in_flight_than_one_page(real_server: RealServer) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from agent_flywheel.traffic_watch import utc_now
    from flows.traffic_watch import (
        DUE_MARGIN,
        FLYWHEEL_FLOW_NAME,
        PAGE_SIZE,
        flywheel_runs_in_flight,
        read_flywheel_runs_in_flight,
    )

    api = real_server.api
    flywheel_id = _post(api, "/flows/", {"name": FLYWHEEL_FLOW_NAME})["id"]
    other_id = _post(api, "/flows/", {"name": "not-the-flywheel"})["id"]
    now = datetime.now(UTC)
    soon, later = (now + timedelta(seconds=60)).isoformat(), (now + timedelta(hours=3)).isoformat()
    in_flight: set[str] = set()
    expected_keys: set[tuple[str, str]] = set()
    with httpx.Client(base_url=api, timeout=30) as http:

        def create(flow_id: str, workload: str, state: dict[str, Any]) -> str:
            body = {
                "flow_id": flow_id,
                "name": f"run-{uuid.uuid4().hex[:12]}",
                "parameters": {"workload_id": workload, "client_id": "c"},
                "state": state,
            }
            response = _busy_retried(lambda: http.post("/flow_runs/", json=body))
            assert response.status_code in (200, 201), response.text
            return str(response.json()["id"])

        for i in range(PAGE_SIZE + 30):  # more than one page of running and pending runs
            in_flight.add(create(flywheel_id, f"w{i}", {"type": "RUNNING" if i % 2 else "PENDING"}))
            expected_keys.add((f"w{i}", "c"))
        for i in range(3):  # scheduled and due within the margin: in flight
            in_flight.add(
                create(flywheel_id, f"due{i}", {"type": "SCHEDULED", "state_details": {"scheduled_time": soon}})
            )
            expected_keys.add((f"due{i}", "c"))
        # not in flight: scheduled for later, finished, or another flow
        create(flywheel_id, "later", {"type": "SCHEDULED", "state_details": {"scheduled_time": later}})
        create(flywheel_id, "done", {"type": "COMPLETED"})
        create(other_id, "other", {"type": "RUNNING"})

    with _api_settings(api), get_client(sync_client=True) as client:
        flows = FlowFilter(name=FlowFilterName(any_=[FLYWHEEL_FLOW_NAME]))
        with pytest.raises(httpx.HTTPStatusError) as refused:  # what the watch used to ask for
            client.read_flow_runs(flow_filter=flows, limit=500)
        assert refused.value.response.status_code == 422

        runs = read_flywheel_runs_in_flight(client, due=utc_now() + DUE_MARGIN)
        assert len(runs) == len(in_flight) > PAGE_SIZE
        assert {str(run.id) for run in runs} == in_flight
        assert flywheel_runs_in_flight.fn() == expected_keys
