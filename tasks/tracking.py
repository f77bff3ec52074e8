"""Tasks that record a flywheel run in MLflow: the parent run, a child run per candidate and mode, the decision.

Each is handed the run's :class:`Tracker` (made once by the flow from its ``MlflowTracking`` block) and is
never cached, so the tracker is no part of any cache key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.evaluation.bootstrap import Interval, bootstrap_mean_interval
from agent_flywheel.evaluation.gate import GateDecision
from agent_flywheel.evaluation.results import scores_by_sample
from agent_flywheel.tracking import VERDICT_TAG, Tracker, flatten_params, flywheel_experiment, gate_verdicts
from tasks.nemo_jobs import EvalOutcome


def run_tags(workload_id: str, client_id: str, flow_run_id: str, simulated: bool) -> dict[str, str]:
    """The tags every MLflow run of a flywheel run carries (DESIGN.md section 4)."""
    return {
        "workload_id": workload_id,
        "client_id": client_id,
        "prefect.flow_run_id": flow_run_id,
        "simulated": str(simulated).lower(),
    }


@task(name="mlflow-start-run", cache_policy=NO_CACHE)
def start_parent_run(
    mlflow: Tracker,
    ui_url: str | None,
    cfg: FlywheelConfig,
    tags: dict[str, str],
    run_name: str,
    prefect_url: str | None,
) -> tuple[str, str]:
    """The parent run of this flywheel run, with the whole config as params; returns (run id, UI link)."""
    all_tags = dict(tags)
    if prefect_url:
        all_tags["prefect.flow_run_url"] = prefect_url
    run_id = mlflow.start_run(flywheel_experiment(tags["workload_id"]), run_name, tags=all_tags)
    mlflow.log(run_id, params=flatten_params(cfg.model_dump(mode="json")))
    return run_id, mlflow.run_url(ui_url, run_id)


@task(name="mlflow-log-datasets", cache_policy=NO_CACHE)
def log_datasets(
    mlflow: Tracker, run_id: str, manifest_path: str, quarantine_file: str | None, counts: dict[str, Any]
) -> None:
    """Dataset manifest, quarantined records and the counts behind them, on the parent run."""
    mlflow.log_file(run_id, Path(manifest_path), "datasets")
    if quarantine_file and Path(quarantine_file).exists():
        mlflow.log_file(run_id, Path(quarantine_file), "quarantine")
    mlflow.log_json(run_id, "datasets/counts.json", counts)
    numeric = {k: float(v) for k, v in _flat_numbers(counts).items()}
    mlflow.log(run_id, metrics=numeric)


_NOT_IN_METRIC_NAMES = re.compile(r"[^\w\-. :/]")


def _flat_numbers(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested counts as dotted metric names; keys such as model ids (``ns/name@cust-…``) are made legal."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{_NOT_IN_METRIC_NAMES.sub('_', str(key))}"
        if isinstance(value, dict):
            out.update(_flat_numbers(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def metric_intervals(outcome: EvalOutcome, confidence: float) -> dict[str, Interval]:
    """Each metric's mean with its bootstrap interval over the evaluation's samples (metrics without
    per-sample scores are left out)."""
    intervals = {}
    for name in outcome.metrics:
        interval = bootstrap_mean_interval(scores_by_sample(outcome.samples, name).values(), confidence=confidence)
        if interval.n:
            intervals[name] = interval
    return intervals


@task(name="mlflow-log-eval", cache_policy=NO_CACHE)
def log_eval_run(
    mlflow: Tracker,
    parent_run_id: str,
    outcome: EvalOutcome,
    role: str,
    tags: dict[str, str],
    confidence: float,
) -> str:
    """A child run for one candidate x eval mode: metrics with intervals, sample counts, loss curve.

    The teacher's run gets ``gate.verdict`` ``teacher`` and a failed evaluation ``failed`` at once; the
    candidates get theirs from :func:`tag_verdicts` once the gate has decided.
    """
    child_tags = {**tags, "candidate": outcome.model, "eval_mode": outcome.eval_mode, "role": role}
    if outcome.error is not None:
        child_tags[VERDICT_TAG] = "failed"
    elif role == "teacher":
        child_tags[VERDICT_TAG] = "teacher"
    run_id = mlflow.start_run(
        flywheel_experiment(tags["workload_id"]),
        f"{outcome.model} · {outcome.eval_mode}",
        tags=child_tags,
        parent_run_id=parent_run_id,
    )
    params: dict[str, Any] = {
        "model": outcome.model,
        "eval_mode": outcome.eval_mode,
        "evaluation_job_id": outcome.job_id,
    }
    metrics: dict[str, float] = {}
    metrics.update(outcome.metrics)
    for name, interval in metric_intervals(outcome, confidence).items():
        metrics[f"{name}_ci_low"] = round(interval.low, 6)
        metrics[f"{name}_ci_high"] = round(interval.high, 6)
        metrics[f"{name}_n"] = float(interval.n)
    metrics["samples"] = float(len(outcome.samples))
    metrics["eval_seconds"] = outcome.seconds
    if outcome.customization is not None:
        params["customization_job_id"] = outcome.customization.job_id
        params["output_model"] = outcome.customization.output_model
        metrics["customization_seconds"] = outcome.customization.seconds
    mlflow.log(run_id, params=params, metrics=metrics)
    if outcome.customization is not None:
        mlflow.log_series(run_id, "train_loss", outcome.customization.train_loss)
        mlflow.log_series(run_id, "val_loss", outcome.customization.val_loss)
    mlflow.end_run(run_id, "FINISHED" if outcome.error is None else "FAILED")
    return run_id


@task(name="mlflow-tag-verdicts", cache_policy=NO_CACHE)
def tag_verdicts(mlflow: Tracker, child_runs: dict[str, str], decision: GateDecision) -> dict[str, str]:
    """``gate.verdict`` on each candidate's child run (keys of ``child_runs``: ``model|eval_mode``)."""
    tagged = {}
    for (model, mode), verdict in gate_verdicts(decision).items():
        run_id = child_runs.get(f"{model}|{mode}")
        if run_id is not None:
            mlflow.log(run_id, tags={VERDICT_TAG: verdict})
            tagged[f"{model}|{mode}"] = verdict
    return tagged


@task(name="mlflow-current-champion", cache_policy=NO_CACHE)
def current_champion(mlflow: Tracker, registered_model: str) -> tuple[int, dict[str, str]] | None:
    """The version the ``champion`` alias points at, with its tags (``served_model``, ``image``), or None."""
    return mlflow.champion(registered_model)


@task(name="mlflow-record-decision", cache_policy=NO_CACHE)
def record_decision(
    mlflow: Tracker,
    parent_run_id: str,
    decision: GateDecision,
    child_runs: dict[str, str],
    registered_model: str,
    champion_card: dict[str, str] | None,
    unchanged_version: int | None = None,
) -> int | None:
    """The decision as tags and an artifact on the parent run; the promoted candidate becomes ``champion``.

    ``champion_card`` describes the promoted candidate (``served_model``, ``image``). With
    ``unchanged_version`` the promoted candidate already is that champion version: no new version is
    registered, the parent run says so (tag ``champion.unchanged``).
    """
    tags = {
        "gate.outcome": decision.outcome,
        "gate.promoted": decision.promoted.name if decision.promoted else "none",
        "gate.reason": decision.reasons[-1][:5000],
    }
    if unchanged_version is not None:
        tags["champion.unchanged"] = str(unchanged_version)
    mlflow.log(parent_run_id, tags=tags)
    mlflow.log_json(parent_run_id, "gate/decision.json", decision.to_dict())
    mlflow.log_text(parent_run_id, decision.to_markdown(), "gate/decision.md")
    if decision.promoted is None or unchanged_version is not None:
        return None
    child = child_runs.get(f"{decision.promoted.model_name}|{decision.promoted.eval_mode}", parent_run_id)
    card = {
        "candidate": decision.promoted.model_name,
        "eval_mode": decision.promoted.eval_mode,
        "metric": decision.metric,
        "parent_run_id": parent_run_id,
        **(champion_card or {}),
    }
    return mlflow.set_champion(registered_model, child, card)


@task(name="mlflow-end-run", cache_policy=NO_CACHE)
def end_parent_run(mlflow: Tracker, run_id: str, status: str) -> None:
    """Close the parent run: FINISHED, or FAILED when the run raised."""
    mlflow.end_run(run_id, status)
