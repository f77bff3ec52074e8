"""MLflow helpers: child runs nest under the parent even when created from worker threads; champion alias."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent_flywheel.evaluation.gate import Candidate, CandidateAssessment, GateDecision
from agent_flywheel.tracking import (
    CHAMPION_ALIAS,
    EXPERIMENT_KIND_TAG,
    RUNS_TABLE_KIND,
    Tracker,
    flatten_params,
    flywheel_experiment,
    gate_verdicts,
    rollout_experiment,
    sizing_experiment,
)


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
    assert tracker.champion("flywheel-wl2") == (second, {"candidate": "m@cust-2"})
    assert tracker.champion("flywheel-never-registered") is None


def test_experiments_open_on_their_runs_table(tracker: Tracker) -> None:
    """MLflow 3's UI opens an experiment tagged as "Machine learning" on its runs, not on an empty traces page."""
    for name in (flywheel_experiment("wl3"), sizing_experiment("app"), rollout_experiment("app")):
        experiment = tracker.client.get_experiment(tracker.experiment_id(name))
        assert experiment.tags[EXPERIMENT_KIND_TAG] == RUNS_TABLE_KIND
    older = tracker.client.create_experiment("made-before-the-tag")  # an experiment from an earlier version
    assert EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(older).tags
    assert tracker.experiment_id("made-before-the-tag") == older
    assert tracker.client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == RUNS_TABLE_KIND


def _decision(verdicts: dict[str, tuple[str, bool]], promoted: str | None) -> GateDecision:
    """A decision whose candidate ``model`` (all ``base-eval``) got ``(verdict, cheaper)``."""
    assessments = [
        CandidateAssessment(Candidate(model, "base-eval"), verdict, 1.0, cheaper)  # type: ignore[arg-type]
        for model, (verdict, cheaper) in verdicts.items()
    ]
    winner = Candidate(promoted, "base-eval") if promoted else None
    return GateDecision(
        promoted=winner,
        outcome="promoted" if winner else "no-candidate",
        reasons=[],
        rows=[],
        metric="function_name_and_args_accuracy",
        margin=0.05,
        confidence=0.95,
        cost_basis="size",
        teacher="t",
        teacher_mean=0.9,
        assessments=assessments,
    )


def test_each_candidates_verdict_is_the_gates_word_and_says_why_a_good_one_lost() -> None:
    decision = _decision(
        {
            "won": ("non-inferior", True),
            "dearer": ("non-inferior", True),
            "costly": ("non-inferior", False),
            "unsure": ("non-inferiority not shown", True),
            "worse": ("inferior", True),
            "skipped": ("not evaluated", True),
        },
        promoted="won",
    )
    assert {model: verdict for (model, _), verdict in gate_verdicts(decision).items()} == {
        "won": "promoted",
        "dearer": "non-inferior-not-cheapest",
        "costly": "non-inferior-not-cheaper",
        "unsure": "non-inferiority-not-shown",
        "worse": "inferior",
        "skipped": "not-evaluated",
    }
