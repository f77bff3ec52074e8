"""A real ``mlflow server`` for tests: its own process group, its own artifact destination, any backend store.

It runs from a directory of its own (neither the test's nor a client's current directory), so an artifact that
lands anywhere but the destination is found out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from simulators.threaded import free_port

START_TIMEOUT_S = 180.0  # about 8 s on an idle machine (a PostgreSQL store: its migrations, about 15 s)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def running_mlflow_server(root: Path, backend_store_uri: str) -> Iterator[MlflowServer]:
    """``mlflow server`` on ``backend_store_uri`` with proxied artifacts under ``root/artifacts``."""
    (root / "cwd").mkdir()
    artifacts = root / "artifacts"
    port = free_port()
    log = root / "server.log"
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", backend_store_uri),
        *("--artifacts-destination", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # a job runner process the tests do not use
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
        stop_process_group(process)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process_group(process: subprocess.Popen[bytes], first: signal.Signals = signal.SIGTERM) -> None:
    """Stop a server's process group (a parent and its workers): ``first``, then SIGKILL."""
    for sig in (first, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
            os.killpg(process.pid, signal.SIGKILL)  # anything of the group still left
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
