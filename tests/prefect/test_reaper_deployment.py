"""The reaper as shipped: its deployment in prefect.yaml fits the flow it runs."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from flows.reaper import reaper
from tasks.reaping import PROJECT_FLOWS

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def test_the_reaper_deployment_runs_the_reaper_flow_with_parameters_it_has() -> None:
    (deployment,) = [d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if "reaper" in d["entrypoint"]]
    module, function = deployment["entrypoint"].split(":")
    assert (module, function) == ("flows/reaper.py", "reaper") and reaper.name == "reaper"
    assert set(deployment["parameters"]) <= set(inspect.signature(reaper.fn).parameters)
    assert deployment["parameters"]["dry_run"] is False  # it stops things unless told otherwise
    # its zombie limit leaves a live run several missed heartbeats
    heartbeat_s = float(deployment["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert deployment["parameters"]["zombie_after_minutes"] * 60 >= 5 * heartbeat_s
    assert "reaper" in PROJECT_FLOWS  # a reaper run that died is itself judged by the next one
