"""The session's real ``prefect server start``, scheduler on: schedules make runs, a worker runs them; API limits.

Operations tests that need a server of their own start it with the scheduler off, so nothing there showed
that the server's scheduler service works with the locked packages (with SQLAlchemy 2.1 it failed on every
loop, and no scheduled deployment ever got a run). Here a process worker must complete a run that the
scheduler made for an interval schedule. The same server checks that the traffic watch's query for
flywheel runs in flight reads past the 200 runs a server serves per request (it asked for 500 at once,
which a real server refuses with 422).

The server is the test session's (``tests/support/prefect_server.py``: scheduler on, fast loops). Every
process started here (the worker and the flow runs it starts in sessions of their own) carries a marker
of this module in its environment; teardown kills the worker's process group, then anything left that
carries the marker, and fails if something survives.
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

from tests.support.prefect_server import SessionPrefectServer
from tools.leftovers import kill, wait_until_gone

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
PROBE_ENTRYPOINT = "schedule_probe_flow.py:schedule_probe"  # relative to HERE, the deployment's source
RUN_DEADLINE_S = 240.0  # from the deployment's creation to a completed scheduled run
# Hourly, anchored half a minute from now: the scheduler makes exactly one run that comes due during the test
# (the next is an hour later), so the worker starts one flow-run process, not one every few seconds. Half a
# minute: the server's loop for new deployments (every 5 s) only makes runs that are still ahead of it, and
# the worker starts meanwhile.
INTERVAL = timedelta(hours=1)
FIRST_RUN_IN = timedelta(seconds=30)
MARKER = "FLYWHEEL_SCHEDULE_PROBE"
T = TypeVar("T")


@dataclass
class RealServer:
    api: str
    server_log: Path
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
        path = self.server_log if name == "server" else self.logs / f"{name}.log"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"(no {name} log)"
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        return f"--- server log ---\n{self.log('server')}\n--- worker log ---\n{self.log('worker')}"


# --------------------------------------------------------------------------------------------------
# Processes: start, and make sure that nothing started here outlives the module
# --------------------------------------------------------------------------------------------------


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group and reap its leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _wait_for(what: str, probe: Callable[[], T | None], timeout_s: float, why: Callable[[], str]) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result is not None:
            return result
        time.sleep(1.0)
    raise AssertionError(f"no {what} after {timeout_s:.0f} s\n{why()}")


@pytest.fixture(scope="module")
def real_server(prefect_server: SessionPrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """The session's server, and a place for the processes this module starts (marked, and stopped after it)."""
    logs = tmp_path_factory.mktemp("schedule-probe-logs")
    marker = uuid.uuid4().hex
    server = RealServer(
        api=prefect_server.api, server_log=prefect_server.log, env={**prefect_server.env, MARKER: marker}, logs=logs
    )
    try:
        yield server
    finally:
        for process in reversed(server.processes):
            _kill_group(process)
        # flow runs the worker started in sessions of their own
        survivors = kill(wait_until_gone(marker, grace_s=0, variable=MARKER), marker, variable=MARKER)
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
    from prefect.schedules import Interval

    from tests.prefect.schedule_probe_flow import schedule_probe

    api, pool = real_server.api, "schedule-probe-pool"
    with _api_settings(api):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        # from a local folder: the worker's flow run loads the entrypoint from there (no image, no push)
        probe = schedule_probe.from_source(source=str(HERE), entrypoint=PROBE_ENTRYPOINT)
        assert isinstance(probe, Flow)
        hourly = Interval(INTERVAL, anchor_date=datetime.now(UTC) + FIRST_RUN_IN)
        deployment_id = probe.deploy(name="hourly", work_pool_name=pool, schedules=[hourly], print_next_steps=False)
    worker = real_server.start(
        "worker", "worker", "start", "--pool", pool, "--type", "process", "--name", "probe-worker", "--limit", "1"
    )

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
    _kill_group(worker)  # done: the next test needs no worker
    assert run["deployment_id"] == str(deployment_id)
    assert "auto-scheduled" in run["tags"]
    assert run["created_by"]["type"] == "SCHEDULE"
    assert run["work_queue_name"] == "default"
    assert "Can't evaluate bulk DML statement" not in real_server.log("server", lines=100_000)
    # no more runs in the session's server: the deployment goes, and its scheduled runs with it
    response = _busy_retried(lambda: httpx.delete(f"{api}/deployments/{deployment_id}", timeout=30))
    assert response.status_code in (200, 204), response.text


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
    with _api_settings(api), get_client(sync_client=True) as client:  # other tests' runs in the session's server
        before = {str(run.id) for run in read_flywheel_runs_in_flight(client, due=utc_now() + DUE_MARGIN)}
        keys_before = flywheel_runs_in_flight.fn()
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

        try:
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
                assert len(runs) == len(in_flight | before) > PAGE_SIZE
                assert {str(run.id) for run in runs} == in_flight | before
                assert flywheel_runs_in_flight.fn() == expected_keys | keys_before
        finally:  # no made-up runs in flight for the session's later tests: the flows go, and their runs with them
            for flow_id in (flywheel_id, other_id):
                _busy_retried(lambda flow_id=flow_id: http.delete(f"/flows/{flow_id}"))
    with _api_settings(api), get_client(sync_client=True) as client:
        assert not {str(run.id) for run in read_flywheel_runs_in_flight(client, due=utc_now() + DUE_MARGIN)} & in_flight
