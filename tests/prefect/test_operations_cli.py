"""`flywheel server up` at ports of one's own, the commands that follow it, one-line errors and Ctrl-C.

One Prefect server and MLflow UI for the module, started the way a user does (``flywheel server up
--prefect-port P --mlflow-port M``, in a state directory of its own), and a local stack in this process
whose clock runs slowly enough for a flywheel run to be interrupted in the middle. Every ``flywheel``
command runs as a subprocess without ``PREFECT_API_URL``: it must find the server from what ``server up``
remembered.
"""

from __future__ import annotations

import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agent_flywheel.processes import pid_alive
from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig
from simulators.threaded import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD, CLIENT = "customer-support", "demo"
OPEN_STATES = {"SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"}


@dataclass
class Servers:
    env: dict[str, str]
    home: Path
    prefect_port: int
    mlflow_port: int
    local_config: Path
    flywheel_config: Path
    stack: LocalStackConfig

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"


def _flywheel(servers: Servers, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
    """``flywheel ARGS`` as a user runs it, in the module's state directory."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**servers.env, **extra},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _small_flywheel_config(target: Path) -> Path:
    """One candidate, 40 eval samples: a short run (made long enough to interrupt by the stack's slow clock)."""
    data = yaml.safe_load((ROOT / "configs" / "flywheel.yaml").read_text())
    data["namespace"] = "ops-cli-test"
    data["nims"] = data["nims"][:1]
    data["data_split_config"].update({"eval_size": 40, "min_total_records": 50, "limit": 1000, "min_train_records": 20})
    data["evaluation_config"].update({"poll_interval_s": 0.2, "timeout_s": 300})
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def _interruptible_config(servers: Servers) -> Path:
    """The small config with a long fine-tune (40 epochs: minutes at the stack's clock speed), so a run is surely
    still inside its candidate subflow when the test presses Ctrl-C, however slowly a busy machine observes it."""
    data = yaml.safe_load(servers.flywheel_config.read_text())
    data["training_config"]["epochs"] = 40
    target = servers.flywheel_config.with_name("flywheel-interruptible.yaml")
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, start_stack: Callable[..., LocalStackConfig]
) -> Iterator[Servers]:
    home = tmp_path_factory.mktemp("ops-cli") / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "FLYWHEEL_"))},
        "FLYWHEEL_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        # The MLflow UI's job runner (seven more Python processes) serves nothing the flywheel uses.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    stack = start_stack(overrides={"clock_speed": 20})  # a NIM deployment takes seconds: time to interrupt
    local_config = home.parent / "local.yaml"
    local_config.write_text(yaml.safe_dump(stack.model_dump(mode="json")))
    servers = Servers(
        env=env,
        home=home,
        prefect_port=free_port(),
        mlflow_port=free_port(),
        local_config=local_config,
        flywheel_config=_small_flywheel_config(home.parent / "flywheel-small.yaml"),
        stack=stack,
    )
    up = _flywheel(
        servers, "server", "up", "--prefect-port", str(servers.prefect_port), "--mlflow-port", str(servers.mlflow_port)
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield servers
    finally:
        _cancel_open_runs(servers.api)
        down = _flywheel(servers, "server", "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not list((home / "run").glob("*.pid")), "a process `flywheel server down` should have stopped"


def _api(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One call to the Prefect API, retried as Prefect's own client does while its server answers 429, 502 or
    503 (a busy server's database: "Service Unavailable")."""
    deadline = time.monotonic() + 180
    while True:
        response = httpx.request(method, url, timeout=60, **kwargs)
        if response.status_code not in (429, 502, 503) or time.monotonic() > deadline:
            return response
        time.sleep(1)


def _flow_runs(api: str) -> list[dict[str, Any]]:
    response = _api("POST", f"{api}/flow_runs/filter", json={"limit": 200})
    assert response.status_code == 200, response.text
    return list(response.json())


def _cancel_open_runs(api: str) -> None:
    try:
        for run in _flow_runs(api):
            if run["state_type"] in OPEN_STATES:
                body = {"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True}
                httpx.post(f"{api}/flow_runs/{run['id']}/set_state", json=body, timeout=5)
    except (httpx.HTTPError, AssertionError):
        pass


def _block(servers: Servers, slug: str, name: str) -> dict[str, Any]:
    response = _api("GET", f"{servers.api}/block_types/slug/{slug}/block_documents/name/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-4000:]


def _error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's error: its last line on stderr that starts with ``error:`` (a report's lines follow it,
    indented)."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return lines[-1]


# --------------------------------------------------------------------------------------------------
# Any port: the UI, status, env.sh, the worker, the MLflow links
# --------------------------------------------------------------------------------------------------


def test_the_ui_calls_the_api_of_its_own_port(servers: Servers) -> None:
    settings = httpx.get(f"http://127.0.0.1:{servers.prefect_port}/ui-settings", timeout=10)
    assert settings.status_code == 200, settings.text
    assert settings.json()["api_url"] == servers.api
    page = httpx.get(f"http://127.0.0.1:{servers.prefect_port}/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_status_follows_the_ports_server_up_used(servers: Servers) -> None:
    status = _flywheel(servers, "server", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert f"127.0.0.1:{servers.prefect_port}" in rows["prefect-server"] and "healthy" in rows["prefect-server"]
    assert f"127.0.0.1:{servers.mlflow_port}" in rows["mlflow-server"] and "healthy" in rows["mlflow-server"]
    assert "stopped" in rows["prefect-worker"]


def test_env_file_puts_prefect_and_flywheel_on_the_path_and_points_at_the_servers(servers: Servers) -> None:
    env_file = servers.home / "run" / "env.sh"
    script = f'source "{env_file}"; command -v prefect flywheel; echo "$PREFECT_API_URL"; prefect config view'
    bare = {"PATH": "/usr/bin:/bin", "HOME": servers.env.get("HOME", "/tmp")}
    shell = subprocess.run(["bash", "-c", script], env=bare, capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0, shell.stdout + shell.stderr
    prefect, flywheel, api, *config = shell.stdout.splitlines()
    venv_bin = Path(sys.executable).parent
    assert (Path(prefect), Path(flywheel)) == (venv_bin / "prefect", venv_bin / "flywheel")
    assert api == servers.api
    assert any(servers.api in line for line in config), config


def test_the_worker_follows_the_server(servers: Servers) -> None:
    up = _flywheel(servers, "worker", "up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = _flywheel(servers, "worker", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "online in pool flywheel-local" in status.stdout
        server = _flywheel(servers, "server", "status")
        assert "online in pool flywheel-local" in server.stdout, server.stdout
        # PREFECT_API_URL, when set, is the server the clients ask (as for `prefect` itself)
        elsewhere = f"http://127.0.0.1:{free_port()}/api"
        asked = _flywheel(servers, "worker", "status", PREFECT_API_URL=elsewhere)
        assert asked.returncode == 1 and f"no answer from {elsewhere}" in asked.stdout, asked.stdout
    finally:
        down = _flywheel(servers, "worker", "down")
    assert down.returncode == 0 and "prefect-worker" in down.stdout, down.stdout + down.stderr
    pid_file = servers.home / "run" / "prefect-worker.pid"
    assert not pid_file.exists()


def test_mlflow_links_follow_the_mlflow_port(servers: Servers) -> None:
    registered = _flywheel(servers, "blocks", "register", "--local-config", str(servers.local_config))
    assert registered.returncode == 0, registered.stdout + registered.stderr
    block = _block(servers, "mlflow-tracking", "local")
    assert block["data"]["ui_url"] == servers.mlflow_url

    # a block saved with another UI (the old default) follows `server up` again
    changed = {"data": {**block["data"], "ui_url": "http://127.0.0.1:5000"}, "merge_existing_data": False}
    assert _api("PATCH", f"{servers.api}/block_documents/{block['id']}", json=changed).status_code == 204
    again = _flywheel(
        servers, "server", "up", "--prefect-port", str(servers.prefect_port), "--mlflow-port", str(servers.mlflow_port)
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"links to {servers.mlflow_url}" in again.stdout
    assert _block(servers, "mlflow-tracking", "local")["data"]["ui_url"] == servers.mlflow_url


# --------------------------------------------------------------------------------------------------
# One-line errors, and Ctrl-C
# --------------------------------------------------------------------------------------------------


def _traffic(servers: Servers) -> None:
    agent = servers.stack.url("agent")
    report = run_traffic(agent, requests=80, concurrency=8, seed=5)
    assert report.failed == 0, report.errors
    assert httpx.post(f"{agent}/admin/flush", timeout=60).status_code == 200


def _run(servers: Servers, *args: str, workload: str = WORKLOAD, config: Path | None = None) -> list[str]:
    return [
        "run",
        "--workload-id",
        workload,
        "--client-id",
        CLIENT,
        "--config",
        str(config or servers.flywheel_config),
        "--full-rebuild",
        *args,
    ]


def test_errors_a_user_can_fix_are_one_line_with_exit_code_2(servers: Servers) -> None:
    _flywheel(servers, "blocks", "register", "--local-config", str(servers.local_config))
    _traffic(servers)
    log = servers.home / "logs" / "cli.log"

    # no records at all is no error: nothing new to learn from, said in the decision (on the servers started
    # by `flywheel server up`, found without flags, not on a temporary server of the command's own)
    empty = _flywheel(servers, *_run(servers, workload="nobody-logs-this"))
    assert empty.returncode == 0, empty.stdout[-3000:] + empty.stderr
    assert "decision: no-new-data: " in empty.stdout and "temporary server" not in empty.stdout + empty.stderr
    assert "MLflow run:" not in empty.stdout  # no run was started, so no empty link

    # too few records for the split the config asks for: the flow fails at the dataset build, in one line
    data = yaml.safe_load(servers.flywheel_config.read_text())
    data["data_split_config"].update({"min_total_records": 100_000, "limit": 100_000})
    greedy = servers.home.parent / "flywheel-greedy.yaml"
    greedy.write_text(yaml.safe_dump(data, sort_keys=False))
    short = _flywheel(servers, *_run(servers, config=greedy))
    assert short.returncode == 2, short.stdout[-3000:] + short.stderr
    _no_traceback(short)
    line = _error_line(short)
    assert "usable records" in line and "min_total_records=100000" in line, line
    assert f"(traceback in {log})" in line, line
    assert "InsufficientRecordsError" in log.read_text()

    # an unknown block
    unknown = _flywheel(servers, *_run(servers, "--nemo-block", "never-saved"))
    assert unknown.returncode == 2, unknown.stderr
    assert _error_line(unknown).startswith("error: no nemo-platform block named 'never-saved'")

    # the log store unreachable (a block pointing at a port nobody listens on)
    records = servers.home.parent / "records.jsonl"
    records.write_text('{"timestamp": 1, "workload_id": "w", "client_id": "c", "request": {}, "response": {}}\n')
    dead = f"http://127.0.0.1:{free_port()}"
    save = (
        "from blocks.log_store import LogStore; "
        f"LogStore(url='{dead}', index='flywheel').save('unreachable', overwrite=True)"
    )
    saved = subprocess.run(
        [sys.executable, "-c", save],
        cwd=ROOT,
        env={**servers.env, "PREFECT_API_URL": servers.api},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert saved.returncode == 0, saved.stderr
    unreachable = _flywheel(servers, "logs", "import", str(records), "--block", "unreachable")
    assert unreachable.returncode == 2, unreachable.stdout + unreachable.stderr
    _no_traceback(unreachable)
    assert _error_line(unreachable).startswith("error: ") and "(traceback in" in _error_line(unreachable)

    # a wrong but live URL: the NIM where the Data Store should be answers 404 at once, and nothing retries it
    wrong = subprocess.run(
        [
            sys.executable,
            "-c",
            "from blocks.nemo_platform import NemoPlatform; "
            "b = NemoPlatform.load('local', _sync=True); "
            f"b.datastore_url = '{servers.stack.url('nim')}'; b.save('wrong-datastore', overwrite=True)",
        ],
        cwd=ROOT,
        env={**servers.env, "PREFECT_API_URL": servers.api},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 0, wrong.stderr
    answered = _flywheel(servers, *_run(servers, "--nemo-block", "wrong-datastore"))
    assert answered.returncode == 2, answered.stdout[-3000:] + answered.stderr
    _no_traceback(answered)
    line = _error_line(answered)
    assert line.startswith("error: preflight: 1 problem(s)"), line  # caught before any job, the problem below it
    assert f"{servers.stack.url('nim')} answered 404" in answered.stderr.split(line, 1)[1], answered.stderr
    assert "attempts" not in line and "SDK" not in line, line
    assert "Retry 1/" not in answered.stdout + answered.stderr  # the task's retries left the answer alone


def test_ctrl_c_ends_the_flow_run_and_its_subflow_runs(servers: Servers) -> None:
    _flywheel(servers, "blocks", "register", "--local-config", str(servers.local_config))
    _traffic(servers)
    before = {run["id"] for run in _flow_runs(servers.api)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *_run(servers, config=_interruptible_config(servers))],
        cwd=ROOT,
        env=servers.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ours = [run for run in _flow_runs(servers.api) if run["id"] not in before]
            if any(run["parent_task_run_id"] and run["state_type"] == "RUNNING" for run in ours):
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        else:
            pytest.fail("no subflow run started")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if pid_alive(process.pid):
            process.kill()
    assert process.returncode == 130, stdout[-3000:] + stderr
    assert "Traceback" not in stdout + stderr, (stdout + stderr)[-4000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted (Ctrl-C)"), last

    ours = [run for run in _flow_runs(servers.api) if run["id"] not in before]
    assert len(ours) >= 2 and any(run["parent_task_run_id"] for run in ours), ours
    states = {run["name"]: run["state_type"] for run in ours}
    assert not OPEN_STATES & set(states.values()), states
    assert set(states.values()) <= {"CRASHED", "CANCELLED"}, states


def _open_runs_in(database: Path) -> tuple[int, int]:
    """(subflow runs Running, runs in an open state) in a Prefect database, read directly (its server is gone)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as db:
        (running_subflows,) = db.execute(
            "SELECT count(*) FROM flow_run WHERE state_type = 'RUNNING' AND parent_task_run_id IS NOT NULL"
        ).fetchone()
        marks = ",".join("?" * len(OPEN_STATES))
        (open_runs,) = db.execute(
            f"SELECT count(*) FROM flow_run WHERE state_type IN ({marks})", sorted(OPEN_STATES)
        ).fetchone()
    return int(running_subflows), int(open_runs)


def _a_subflow_runs(database: Path) -> bool:
    try:
        return database.exists() and _open_runs_in(database)[0] > 0
    except sqlite3.OperationalError:  # its server is still creating the tables
        return False


def _kill_temporary_servers(home: Path) -> None:
    """Stop the temporary Prefect servers whose pid files a killed command left in ``home`` (their own groups)."""
    for pid_file in (home / "run").glob("prefect-temporary-*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                break
            except (ProcessLookupError, PermissionError):
                continue


def test_ctrl_c_at_a_terminal_without_a_server(servers: Servers, tmp_path: Path) -> None:
    """No ``PREFECT_API_URL``, no ``flywheel server up``: Ctrl-C at a terminal reaches the whole process group.

    Prefect's own temporary server would stop with the command and leave its runs ``Running``; at a terminal
    the command records them on a server of its own, which outlives the signal long enough to close them.
    """
    _traffic(servers)
    home = tmp_path / "home"
    env = {
        **servers.env,
        "FLYWHEEL_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
    }
    registered = subprocess.run(
        [sys.executable, "-m", "cli.main", "blocks", "register", "--local-config", str(servers.local_config)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert registered.returncode == 0, registered.stdout + registered.stderr
    database = home / "prefect" / "prefect.db"
    terminal, user_side = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", *_run(servers, config=_interruptible_config(servers))],
        cwd=ROOT,
        env=env,
        stdin=user_side,  # a terminal: what decides where the runs are recorded
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    os.close(user_side)
    try:
        deadline = time.monotonic() + 300
        while not _a_subflow_runs(database):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no subflow run started"
            time.sleep(0.25)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
        stdout, stderr = process.communicate(timeout=180)
    finally:
        os.close(terminal)
        if pid_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            _kill_temporary_servers(home)  # a command killed here cannot stop the server it started
    assert process.returncode == 130, stdout[-3000:] + stderr
    assert "Traceback" not in stdout + stderr, (stdout + stderr)[-4000:]
    assert [line for line in stderr.splitlines() if line.strip()][-1].startswith("interrupted (Ctrl-C)"), stderr
    assert _open_runs_in(database) == (0, 0)
    assert not list((home / "run").glob("prefect-temporary-*.pid")), "the temporary server was not stopped"
