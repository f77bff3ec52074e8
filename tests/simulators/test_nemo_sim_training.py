"""The simulated fine-tune as a function of the clock: phases, progress, losses, faults, cancellation."""

from __future__ import annotations

import math

from simulators.nemo.ids import parse_iso
from simulators.nemo.training import TrainingPlan, running_seconds, training_view

CREATED = "2025-06-20T04:20:21.387984"


def _plan(**overrides: object) -> TrainingPlan:
    values: dict[str, object] = {
        "t0": 100.0,
        "created_s": 2.0,
        "pending_s": 5.0,
        "running_s": running_seconds(40, 2, 0.75, 20.0),
        "train_records": 40,
        "epochs": 2,
        "batch_size": 4,
        "log_every": 1,
        "seed": 7,
    }
    values.update(overrides)
    return TrainingPlan(**values)  # type: ignore[arg-type]


def test_running_time_grows_with_records_and_epochs() -> None:
    assert running_seconds(40, 2, 0.75, 20.0) == 60.0
    assert running_seconds(4, 1, 0.75, 20.0) == 20.0
    assert running_seconds(None, 3, 0.75, 20.0) == 20.0


def test_phases_follow_the_clock() -> None:
    plan = _plan()
    assert training_view(plan, 100.0, CREATED).status == "created"
    assert training_view(plan, 103.0, CREATED).status == "pending"
    assert training_view(plan, 107.5, CREATED).status == "running"
    done = training_view(plan, 500.0, CREATED)
    assert done.status == "completed" and done.ended_at == 167.0
    details = done.details
    assert details["percentage_done"] == 100.0 and details["epochs_completed"] == 2
    assert details["steps_per_epoch"] == 10 and details["steps_completed"] == 20
    assert details["elapsed_time"] == 67.0
    assert [log["message"] for log in details["status_logs"]] == [
        "created",
        "pending",
        "running",
        "Epoch 1/2 completed",
        "Epoch 2/2 completed",
        "completed",
    ]
    # Timestamps are simulated wall time: the job ran 67 simulated seconds after it was created.
    assert (parse_iso(details["updated_at"]) - parse_iso(CREATED)).total_seconds() == 67.0


def test_progress_and_decreasing_losses_while_running() -> None:
    plan = _plan()
    half = training_view(plan, 107.0 + 30.0, CREATED).details
    assert half["percentage_done"] == 50.0 and half["steps_completed"] == 10 and half["epochs_completed"] == 1
    train = half["metrics"]["metrics"]["train_loss"]
    assert [p["step"] for p in train] == list(range(10))
    assert train[-1]["value"] < train[0]["value"] and half["train_loss"] == train[-1]["value"]
    assert half["best_epoch"] == 1 and half["val_loss"] == half["metrics"]["metrics"]["val_loss"][0]["value"]
    final = training_view(plan, 1000.0, CREATED).details["metrics"]["metrics"]
    assert final["val_loss"][1]["value"] < final["val_loss"][0]["value"]
    # Same plan, same curve: reading twice never changes history.
    assert training_view(plan, 1000.0, CREATED).details == training_view(plan, 1000.0, CREATED).details


def test_more_data_trains_to_a_lower_loss() -> None:
    small = training_view(_plan(train_records=40), 10_000.0, CREATED).details["val_loss"]
    large = training_view(_plan(train_records=4000, running_s=6000.0), 10_000.0, CREATED).details["val_loss"]
    assert large < small


def test_automatic_and_capped_loss_logging() -> None:
    auto = training_view(_plan(log_every=0, train_records=4000, batch_size=1, running_s=100.0), 10_000.0, CREATED)
    points = auto.details["metrics"]["metrics"]["train_loss"]
    assert 40 <= len(points) <= 60
    dense = training_view(_plan(log_every=1, train_records=4000, batch_size=1, running_s=100.0), 10_000.0, CREATED)
    assert len(dense.details["metrics"]["metrics"]["train_loss"]) <= 500


def test_cancel_freezes_progress() -> None:
    plan = _plan(cancelled_at=137.0)
    view = training_view(plan, 5000.0, CREATED)
    assert view.status == "cancelled" and view.ended_at == 137.0
    assert view.details["percentage_done"] == 50.0
    assert view.details["status_logs"][-1] == {
        "updated_at": view.details["updated_at"],
        "message": "cancelled",
        "detail": "Job cancelled by user",
    }
    early = training_view(_plan(cancelled_at=101.0), 5000.0, CREATED)
    assert [log["message"] for log in early.details["status_logs"]] == ["created", "cancelled"]


def test_not_enough_resources_pends_forever_or_fails_when_told() -> None:
    stuck = training_view(_plan(not_enough_resources=True), 1e9, CREATED)
    assert stuck.status == "pending" and stuck.ended_at is None
    assert stuck.details["status_logs"][-1]["message"] == "NotEnoughResources"
    failed = training_view(_plan(not_enough_resources=True, not_enough_resources_fail_after_s=600.0), 1e9, CREATED)
    assert failed.status == "failed" and failed.ended_at == 702.0
    assert "NotEnoughResources" in failed.details["status_logs"][-1]["detail"]
    assert training_view(_plan(stall_pending=True), 1e9, CREATED).status == "pending"


def test_failures_carry_a_detail() -> None:
    crashed = training_view(_plan(fail_mid_training=True), 1e9, CREATED)
    assert crashed.status == "failed" and math.isclose(crashed.details["percentage_done"], 50.0)
    assert "simulated fault" in crashed.details["status_logs"][-1]["detail"]
    no_data = training_view(_plan(train_records=0, data_error="no records under training/"), 1e9, CREATED)
    assert no_data.status == "failed" and no_data.details["status_logs"][-1]["detail"] == "no records under training/"


def test_plan_round_trips_through_json() -> None:
    plan = _plan(cancelled_at=120.0)
    assert TrainingPlan.from_json({**plan.to_json(), "from_a_newer_version": 1}) == plan
