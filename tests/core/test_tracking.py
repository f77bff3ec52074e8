"""MLflow helpers: child runs nest under the parent even when created from worker threads; champion alias."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent_flywheel.tracking import CHAMPION_ALIAS, Tracker, flatten_params, flywheel_experiment


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return Tracker(f"sqlite:///{db}")


def test_flatten_params_dotted_and_json() -> None:
    flat = flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": "x"})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "x"}


def test_children_created_in_threads_nest_under_parent(tracker: Tracker) -> None:
    parent = tracker.start_run(flywheel_experiment("wl"), "parent", tags={"workload_id": "wl"})

    def child(i: int) -> str:
        run_id = tracker.start_run(flywheel_experiment("wl"), f"child-{i}", parent_run_id=parent)
        tracker.log(run_id, metrics={"function_name_accuracy": i / 10}, tags={"eval_mode": "base-eval"})
        return run_id

    with ThreadPoolExecutor(4) as pool:
        children = list(pool.map(child, range(4)))
    for run_id in children:
        run = tracker.client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.tags["eval_mode"] == "base-eval"


def test_champion_alias_points_at_new_version(tracker: Tracker, tmp_path: Path) -> None:
    run_id = tracker.start_run(flywheel_experiment("wl2"), "cand")
    version = tracker.set_champion("flywheel-wl2", run_id, {"candidate": "m@cust-1", "eval_mode": "customized-eval"})
    mv = tracker.client.get_model_version_by_alias("flywheel-wl2", CHAMPION_ALIAS)
    assert int(mv.version) == version
    assert mv.tags["candidate"] == "m@cust-1"
    second = tracker.set_champion("flywheel-wl2", run_id, {"candidate": "m@cust-2"})
    assert (
        int(tracker.client.get_model_version_by_alias("flywheel-wl2", CHAMPION_ALIAS).version) == second == version + 1
    )
