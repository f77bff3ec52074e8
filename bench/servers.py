"""Start simulator parts (and the zero-latency endpoint) as separate processes for a benchmark.

Why separate processes: the server must not share the measured process's interpreter, GIL or memory,
or its work would be counted as the client's time and its objects as the client's peak memory. Each
part gets its own state directory and a free loopback port, so a benchmark never touches a running
local stack or the project's ``.flywheel/``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from simulators.threaded import free_port

HEALTH = {"logserver": "/", "nim": "/v1/health/ready", "datastore": "/health", "nemo": "/health", "agent": "/health"}


def wait_healthy(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; raise with the process's output if it dies or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"server for {url} exited with {process.returncode}:\n{output[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become healthy within {timeout_s:.0f} s")


@contextlib.contextmanager
def simulator(part: str, state_dir: Path, section: dict[str, Any] | None = None, **config: Any) -> Iterator[str]:
    """Run ``python -m simulators.<part>`` on a free port; yields its base URL; stops it after."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings: dict[str, Any] = {"state_dir": str(state_dir), "ports": {part: port}, **config}
    if section is not None:
        settings[part] = section
    config_file = state_dir / f"{part}.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "FLYWHEEL_HOME": str(state_dir), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", f"simulators.{part}", "--config", str(config_file), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + HEALTH[part], process)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a process this module started (SIGTERM, then SIGKILL after 10 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def endpoint() -> Iterator[str]:
    """The zero-latency HTTP endpoint (:mod:`bench.endpoint`) in its own process; yields its base URL."""
    with _bench_server("bench.endpoint", "/") as url:
        yield url


@contextlib.contextmanager
def agent_stub() -> Iterator[str]:
    """The agent-shaped stub (:mod:`bench.agent_stub`: two LLM calls of 0.3–1 s per request) in its own process."""
    with _bench_server("bench.agent_stub", "/stats") as url:
        yield url


@contextlib.contextmanager
def _bench_server(module: str, health: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url + health, process)
        yield url
    finally:
        stop(process)
