"""Stand-ins for the scaling flows, with the real flows' names and signatures, for ``test_operations.py``.

That test runs the real flywheel and the real traffic watch through their deployments. The scaling
lifecycle (``scaling``: profile, load sweep, sizing; ``rollout-check``: a staged canary) takes minutes
of load testing and has its own tests (``test_scaling_flows.py``), so its deployments point here. A
stand-in records its parameters and Prefect flow run id in ``$FLYWHEEL_HOME/stub-runs.jsonl``, which
shows that the worker ran it with the parameters the deployment or the trigger gave it (for
``rollout-check/on-promotion``: the promoted model from the flywheel's ``flywheel.candidate.promoted`` event).
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


@flow(name="scaling")
def scaling(
    config_path: str = "configs/scaling.yaml",
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
) -> dict[str, Any]:
    """Stand-in for ``flows/scaling.py:scaling``."""
    if not Path(config_path).is_file():  # the deployment's working directory is the project root
        raise FileNotFoundError(config_path)
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
