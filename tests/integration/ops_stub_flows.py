"""Stand-ins with the real flows' names and signatures, for ``test_operations.py``.

That test is about operations (deploying ``prefect.yaml``, the worker, schedules, the trigger and the
concurrency limit), not about what the flows compute: the flywheel itself needs the whole simulated
stack and has its own tests. A stand-in records its parameters and Prefect flow run id in
``$FLYWHEEL_HOME/stub-runs.jsonl``, which shows that the worker ran it with the parameters the
deployment or the trigger gave it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run


def _record(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    line = {"flow": name, "flow_run_id": str(flow_run.get_id()), "parameters": parameters}
    home = Path(os.environ.get("FLYWHEEL_HOME") or ".flywheel")
    home.mkdir(parents=True, exist_ok=True)
    with (home / "stub-runs.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
    return line


@flow(name="flywheel")
def flywheel(
    workload_id: str,
    client_id: str,
    config_path: str = "configs/flywheel.yaml",
    nemo_block: str = "local",
    log_store_block: str = "local",
    mlflow_block: str = "local",
    full_rebuild: bool = False,
) -> dict[str, Any]:
    """Stand-in for ``flows/flywheel.py:flywheel``."""
    if not Path(config_path).is_file():  # the deployment's working directory is the project root
        raise FileNotFoundError(config_path)
    return _record("flywheel", {"workload_id": workload_id, "client_id": client_id, "config_path": config_path})


@flow(name="scaling")
def scaling(
    config_path: str = "configs/scaling.yaml",
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
) -> dict[str, Any]:
    """Stand-in for ``flows/scaling.py:scaling``."""
    return _record("scaling", {"config_path": config_path, "candidate_model": candidate_model})


@flow(name="rollout-check")
def rollout_check(
    config_path: str = "configs/scaling.yaml",
    agent_block: str = "local",
    mlflow_block: str = "local",
    canary_model: str | None = None,
) -> dict[str, Any]:
    """Stand-in for ``flows/rollout_check.py:rollout_check``."""
    return _record("rollout-check", {"config_path": config_path, "canary_model": canary_model})
