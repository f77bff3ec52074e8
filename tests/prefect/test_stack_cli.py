"""`flywheel stack up/status/down` start real processes on loopback, and the parts answer like the real services."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from simulators.threaded import free_port

pytestmark = pytest.mark.integration


def _flywheel(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], dict[str, int], Path]]:
    ports = {part: free_port() for part in ("logserver", "datastore", "nim", "nemo", "agent")}
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({"ports": ports, "clock_speed": 100}))
    env = {**os.environ, "FLYWHEEL_HOME": str(tmp_path / "home")}
    yield env, ports, config
    if any((tmp_path / "home" / "run").glob("*.pid")):  # the test failed before its own `stack down`
        _flywheel("stack", "down", "--local-config", str(config), env=env)


def test_stack_up_status_down(stack_env: tuple[dict[str, str], dict[str, int], Path]) -> None:
    env, ports, config = stack_env
    up = _flywheel("stack", "up", "--local-config", str(config), env=env)
    assert up.returncode == 0, up.stderr + up.stdout

    status = _flywheel("stack", "status", "--local-config", str(config), env=env)
    assert status.returncode == 0, status.stdout
    lines = status.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["logserver", "datastore", "nim", "nemo", "agent"]
    assert all("healthy (simulated)" in line for line in lines)

    models = httpx.get(f"http://127.0.0.1:{ports['nim']}/v1/models", timeout=60)
    assert models.status_code == 200
    body = models.json()
    assert body["object"] == "list"
    assert "meta/llama-3.3-70b-instruct" in {m["id"] for m in body["data"]}
    assert models.headers["X-Flywheel-Simulated"] == "true"

    es = f"http://127.0.0.1:{ports['logserver']}"
    assert httpx.put(f"{es}/flywheel", json={}, timeout=60).status_code == 200
    count = httpx.get(f"{es}/flywheel/_count", timeout=60)
    assert count.headers["X-Elastic-Product"] == "Elasticsearch"
    assert count.json()["count"] == 0
    assert "_shards" in count.json()

    logs = Path(env["FLYWHEEL_HOME"]) / "logs"
    assert {p.name for p in logs.glob("*.log")} == {f"{p}.log" for p in ports}

    down = _flywheel("stack", "down", "--local-config", str(config), env=env)
    assert down.returncode == 0
    assert "nemo" in down.stdout
    after = _flywheel("stack", "status", "--local-config", str(config), env=env)
    assert after.returncode == 1
    assert all("stopped" in line for line in after.stdout.strip().splitlines())
