"""The reaper as shipped in prefect.yaml (that its parameters fit the flow: test_operations.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from flows.reaper import reaper
from tasks.reaping import PROJECT_FLOWS

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def test_the_reaper_deployment_stops_things_and_gives_live_runs_several_missed_heartbeats() -> None:
    (deployment,) = [d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if "reaper" in d["entrypoint"]]
    module, function = deployment["entrypoint"].split(":")
    assert (module, function) == ("flows/reaper.py", "reaper") and reaper.name == "reaper"
    assert deployment["parameters"]["dry_run"] is False  # it stops things unless told otherwise
    # its zombie limit leaves a live run several missed heartbeats
    heartbeat_s = float(deployment["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert deployment["parameters"]["zombie_after_minutes"] * 60 >= 5 * heartbeat_s
    assert "reaper" in PROJECT_FLOWS  # a reaper run that died is itself judged by the next one
