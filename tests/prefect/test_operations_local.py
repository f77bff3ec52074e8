"""Local operations without a Prefect server: settings, background processes, the retargeted prefect file."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import yaml

from agent_flywheel.config import ConfigError
from agent_flywheel.processes import BackgroundProcess, ServiceError, http_health, pid_alive
from deployments.deploy import deployment_names, render_prefect_file
from deployments.server import LocalServers, write_env_file
from deployments.settings import (
    DEFAULT_SERVER_CONFIG,
    current_server_config,
    forget_running_servers,
    load_server_config,
    save_running_servers,
)
from simulators.threaded import free_port

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def test_shipped_server_config_and_port_overrides(tmp_path: Path) -> None:
    cfg = load_server_config(DEFAULT_SERVER_CONFIG)
    assert (cfg.prefect.port, cfg.mlflow.port, cfg.worker.pool) == (4200, 5000, "flywheel-local")
    assert cfg.concurrency_limits["gpu"] >= 1
    assert cfg.prefect_api_url == "http://127.0.0.1:4200/api"
    moved = load_server_config(DEFAULT_SERVER_CONFIG, prefect_port=4300, mlflow_port=5100)
    assert (moved.prefect_api_url, moved.mlflow_url) == ("http://127.0.0.1:4300/api", "http://127.0.0.1:5100")
    assert load_server_config(tmp_path / "missing.yaml").prefect.port == 4200  # defaults
    remote = load_server_config(DEFAULT_SERVER_CONFIG, api_url="https://prefect.internal/api/")
    assert (remote.prefect_api_url, remote.local_api_url) == (
        "https://prefect.internal/api",
        "http://127.0.0.1:4200/api",
    )

    bad = tmp_path / "server.yaml"
    bad.write_text("prefect: {prot: 4200}\n")
    with pytest.raises(ConfigError, match=r"prefect\.prot"):
        load_server_config(bad)


def test_env_file_quotes_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "with space"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("PREFECT_HOME", str(home / "prefect"))
    text = write_env_file(load_server_config(DEFAULT_SERVER_CONFIG, prefect_port=4242)).read_text()
    assert "export PREFECT_API_URL=http://127.0.0.1:4242/api" in text
    assert f"export PREFECT_HOME='{home / 'prefect'}'" in text
    assert f"export PATH={Path(sys.executable).parent}:" in text  # `prefect` and `flywheel` of this environment


def test_commands_follow_the_flags_then_prefect_api_url_then_the_running_servers_then_the_file() -> None:
    environ: dict[str, str] = {}
    assert current_server_config(environ=environ).prefect_api_url == "http://127.0.0.1:4200/api"
    save_running_servers(load_server_config(DEFAULT_SERVER_CONFIG, prefect_port=54200, mlflow_port=54201), mlflow=True)
    running = current_server_config(environ=environ)
    assert (running.prefect_api_url, running.mlflow_url) == ("http://127.0.0.1:54200/api", "http://127.0.0.1:54201")
    assert running.prefect_ui_url == "http://127.0.0.1:54200"
    environ["PREFECT_API_URL"] = "https://prefect.internal/api"
    remote = current_server_config(environ=environ)
    assert (remote.prefect_api_url, remote.prefect_ui_url) == (
        "https://prefect.internal/api",
        "https://prefect.internal",
    )
    assert remote.local_api_url == "http://127.0.0.1:54200/api"  # `server status|down` still mean the local one
    flags = current_server_config(prefect_port=54300, api_url="http://127.0.0.1:54300/api", environ=environ)
    assert flags.prefect_api_url == "http://127.0.0.1:54300/api"
    forget_running_servers()
    assert current_server_config(environ={}).mlflow_url == "http://127.0.0.1:5000"


def test_render_prefect_file_retargets_every_deployment() -> None:
    rendered = render_prefect_file(PREFECT_YAML, pool="flywheel-k8s", code_dir="/opt/agent-flywheel")
    data = yaml.safe_load(rendered.read_text())
    assert {d["work_pool"]["name"] for d in data["deployments"]} == {"flywheel-k8s"}
    assert data["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/agent-flywheel"}}]
    assert "definitions" not in data
    assert deployment_names(rendered) == deployment_names(PREFECT_YAML)
    # the anchors were expanded: each deployment still has its own concurrency settings
    assert all(d["concurrency_limit"]["limit"] == 1 for d in data["deployments"])


def test_background_process_starts_checks_health_and_stops() -> None:
    port = free_port()
    service = BackgroundProcess("test-http")
    health = http_health(f"http://127.0.0.1:{port}/")
    pid = service.start(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], env={}, health=health, timeout_s=20
    )
    try:
        assert service.pid() == pid and pid_alive(pid)
        assert health()[0]
    finally:
        assert service.stop(timeout_s=5)
    assert not pid_alive(pid)
    assert service.pid() is None and not service.pid_file.exists()
    assert not service.stop()  # nothing left to stop


def test_a_process_that_dies_reports_its_log() -> None:
    service = BackgroundProcess("test-crash")
    argv = [sys.executable, "-c", "import sys; print('bad settings'); sys.exit(3)"]
    with pytest.raises(ServiceError, match=r"(?s)exited with code 3.*bad settings"):
        service.start(argv, env={}, health=lambda: (False, "never"), timeout_s=20)
    assert service.pid() is None


def test_a_port_taken_by_another_program_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        servers = LocalServers(load_server_config(DEFAULT_SERVER_CONFIG, prefect_port=port))
        with pytest.raises(ServiceError, match=f"port {port}.*--prefect-port"):
            servers.up(mlflow=False, timeout_s=5)


def test_render_prefect_file_keeps_server_schedules_of_existing_deployments() -> None:
    existing = {("flows/flywheel.py:flywheel", "nightly")}
    data = yaml.safe_load(render_prefect_file(PREFECT_YAML, keep_schedules_of=existing).read_text())
    by_name = {(d["entrypoint"], d["name"]): d for d in data["deployments"]}
    assert "schedules" not in by_name[("flows/flywheel.py:flywheel", "nightly")]
    assert by_name[("flows/traffic_watch.py:traffic_watch", "every-15m")]["schedules"][0]["interval"] == 900
    assert by_name[("flows/flywheel.py:flywheel", "nightly")]["work_pool"]["name"] == "flywheel-local"
    assert "pull" not in data  # the local default: the directory `prefect deploy` runs in


def test_render_prefect_file_keeps_paused_automations_paused() -> None:
    paused = {("flows/flywheel.py:flywheel", "on-new-traffic", "flywheel-on-new-traffic")}
    data = yaml.safe_load(render_prefect_file(PREFECT_YAML, keep_paused=paused).read_text())
    triggers = {t["name"]: t for d in data["deployments"] for t in d.get("triggers") or []}
    assert triggers["flywheel-on-new-traffic"]["enabled"] is False
    assert triggers["scaling-on-promotion"]["enabled"] is True
