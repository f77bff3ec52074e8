"""The simulated fine-tune: a customization job's state as a pure function of the simulated clock.

A job stores a :class:`TrainingPlan` when it is created (phase durations, record count, faults in
force); :func:`training_view` computes status, progress, loss curves and status logs for any instant.
Nothing has to tick: reading a job at time *t* shows exactly what a real Customizer would have shown at
*t*, and a test moves time with ``/admin/clock`` instead of sleeping.

Timeline: ``created`` for ``created_s``, ``pending`` for ``pending_s`` (forever when stalled or short of
GPUs), ``running`` for a time proportional to records x epochs, then ``completed`` -- or ``failed`` /
``cancelled`` at the moment that happened, with progress frozen there.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from simulators.nemo.ids import shifted_iso

MAX_LOSS_POINTS = 500
AUTO_LOSS_POINTS = 50  # without log_every_n_steps, log the training loss about this many times
TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass
class TrainingPlan:
    """Everything needed to replay a job's life; stored in the job record as ``_plan``."""

    t0: float
    created_s: float
    pending_s: float
    running_s: float
    train_records: int | None
    epochs: int
    batch_size: int
    log_every: int  # log_every_n_steps; 0: automatic
    seed: int
    data_error: str | None = None
    fail_mid_training: bool = False
    not_enough_resources: bool = False
    not_enough_resources_fail_after_s: float | None = None
    stall_pending: bool = False
    num_gpus: int = 1
    cancelled_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """As stored in the snapshot."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainingPlan:
        """Back from the snapshot (unknown keys from other versions are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def steps_per_epoch(self) -> int | None:
        if not self.train_records:
            return None
        return math.ceil(self.train_records / self.batch_size)


@dataclass
class TrainingView:
    """A job as seen at one instant."""

    status: str
    details: dict[str, Any]
    ended_at: float | None  # simulated time of completed/failed/cancelled, None while still going


def running_seconds(train_records: int | None, epochs: int, per_record_epoch_s: float, min_s: float) -> float:
    """Training time grows with records x epochs, never below ``min_s`` (startup, checkpointing)."""
    return max(min_s, per_record_epoch_s * (train_records or 0) * epochs)


def _phase_times(plan: TrainingPlan) -> tuple[float, float, float]:
    t_pending = plan.t0 + plan.created_s
    blocked = plan.stall_pending or plan.not_enough_resources
    t_running = math.inf if blocked else t_pending + plan.pending_s
    return t_pending, t_running, t_running + plan.running_s


def _ending(plan: TrainingPlan) -> tuple[float, str, str | None]:
    """When and how the job ends (``inf`` when it never does by itself)."""
    t_pending, t_running, t_done = _phase_times(plan)
    endings: list[tuple[float, str, str | None]] = [(t_done, "completed", None)]
    if plan.not_enough_resources and plan.not_enough_resources_fail_after_s is not None:
        endings.append(
            (
                t_pending + plan.not_enough_resources_fail_after_s,
                "failed",
                f"NotEnoughResources: no node could satisfy {plan.num_gpus} GPU(s) within "
                f"{plan.not_enough_resources_fail_after_s:g} s (simulated fault)",
            )
        )
    if plan.data_error:
        endings.append((t_running, "failed", plan.data_error))
    if plan.fail_mid_training:
        endings.append(
            (t_running + plan.running_s / 2, "failed", "Training failed: CUDA out of memory (simulated fault)")
        )
    if plan.cancelled_at is not None:
        endings.append((plan.cancelled_at, "cancelled", "Job cancelled by user"))
    return min(endings, key=lambda e: e[0])


def _noise(seed: int, index: int) -> float:
    return random.Random(seed * 1_000_003 + index).uniform(-1.0, 1.0)


def loss_floor(train_records: int | None) -> float:
    """More data, lower loss: the curve flattens at ~0.05 + 1/sqrt(records)."""
    return 0.05 + 1.0 / math.sqrt(max(train_records or 1, 1))


def train_loss(plan: TrainingPlan, step: int, total_steps: int) -> float:
    """A decreasing, slightly noisy training loss at ``step`` (0-based)."""
    floor = loss_floor(plan.train_records)
    decay = math.exp(-3.5 * (step + 1) / max(total_steps, 1))
    return round(max(0.001, floor + (2.2 - floor) * decay * (1 + 0.08 * _noise(plan.seed, step))), 4)


def val_loss(plan: TrainingPlan, epoch: int) -> float:
    """Validation loss after ``epoch`` (0-based): decreasing, a little above the training floor."""
    floor = loss_floor(plan.train_records) * 1.2
    decay = math.exp(-3.0 * (epoch + 1) / max(plan.epochs, 1))
    return round(max(0.001, floor + (2.0 - floor) * decay * (1 + 0.03 * _noise(plan.seed, -1 - epoch))), 4)


def training_view(plan: TrainingPlan, now: float, created_at: str) -> TrainingView:
    """The job's status details at simulated time ``now`` (the shape of ``GET .../jobs/{id}/status``)."""
    t_pending, t_running, _ = _phase_times(plan)
    end_time, end_status, end_detail = _ending(plan)
    ended = now >= end_time
    effective = min(now, end_time)

    def at(t: float) -> str:
        return shifted_iso(created_at, t - plan.t0)

    logs: list[dict[str, Any]] = [{"updated_at": at(plan.t0), "message": "created", "detail": None}]
    if effective >= t_pending:
        logs.append({"updated_at": at(t_pending), "message": "pending", "detail": None})
        if plan.not_enough_resources:
            logs.append(
                {
                    "updated_at": at(t_pending),
                    "message": "NotEnoughResources",
                    "detail": f"0/1 nodes are available: insufficient nvidia.com/gpu (requested {plan.num_gpus})",
                }
            )
    if effective >= t_running:
        logs.append({"updated_at": at(t_running), "message": "running", "detail": None})

    if ended:
        status = end_status
    elif now >= t_running:
        status = "running"
    elif now >= t_pending:
        status = "pending"
    else:
        status = "created"

    details: dict[str, Any] = {
        "created_at": created_at,
        "updated_at": at(plan.t0),
        "status": status,
        "elapsed_time": round(max(0.0, effective - plan.t0), 3),
        "steps_completed": 0,
        "epochs_completed": 0,
        "percentage_done": 0.0,
    }
    spe = plan.steps_per_epoch
    if effective >= t_running and spe:
        total_steps = spe * plan.epochs
        fraction = 1.0 if end_status == "completed" and ended else (effective - t_running) / plan.running_s
        fraction = min(max(fraction, 0.0), 1.0)
        steps = min(total_steps, math.floor(fraction * total_steps + 1e-9))
        epochs_done = min(plan.epochs, steps // spe)
        every = plan.log_every if plan.log_every > 0 else math.ceil(total_steps / AUTO_LOSS_POINTS)
        every = max(every, math.ceil(total_steps / MAX_LOSS_POINTS))

        def step_time(step: int) -> str:
            return at(t_running + (step + 1) / total_steps * plan.running_s)

        train_points = [
            {"step": s, "timestamp": step_time(s), "value": train_loss(plan, s, total_steps)}
            for s in range(every - 1, steps, every)
        ]
        val_values = [val_loss(plan, e) for e in range(epochs_done)]
        val_points = [
            {"step": spe * (e + 1) - 1, "timestamp": step_time(spe * (e + 1) - 1), "value": value}
            for e, value in enumerate(val_values)
        ]
        for e in range(epochs_done):
            logs.append(
                {
                    "updated_at": step_time(spe * (e + 1) - 1),
                    "message": f"Epoch {e + 1}/{plan.epochs} completed",
                    "detail": f"val_loss={val_values[e]}",
                }
            )
        best = val_values.index(min(val_values)) + 1 if val_values else None
        details.update(
            {
                "steps_completed": steps,
                "epochs_completed": epochs_done,
                "steps_per_epoch": spe,
                "percentage_done": round(100.0 * fraction, 2),
                "best_epoch": best,
                "train_loss": train_points[-1]["value"] if train_points else None,
                "val_loss": val_points[-1]["value"] if val_points else None,
                "metrics": {
                    "keys": ["train_loss", "val_loss"],
                    "metrics": {"train_loss": train_points, "val_loss": val_points},
                },
            }
        )
    if ended:
        logs.append({"updated_at": at(end_time), "message": end_status, "detail": end_detail})
    logs.sort(key=lambda log: log["updated_at"])
    details["status_logs"] = logs
    details["updated_at"] = logs[-1]["updated_at"]
    return TrainingView(status=status, details=details, ended_at=end_time if ended else None)
