"""The one place the scaling lifecycle records to MLflow: runs in ``sizing/<app>`` and ``rollout/<app>``.

Every task takes the resolved :class:`~agent_flywheel.tracking.Tracker` (``MlflowTracking.get_tracker()``),
never a block name. :class:`SizingRun` is the run a scaling flow logs to: its parent's when it has one,
else one it opens and closes itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from mlflow.exceptions import MlflowException
from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run as current_run

from agent_flywheel.config import ScalingConfig
from agent_flywheel.scaling.outcomes import ProfileOutcome, RolloutOutcome, SizingOutcome, SweepOutcome
from agent_flywheel.scaling.reports import run_link
from agent_flywheel.tracking import CHAMPION_ALIAS, Tracker, flatten_params, sizing_experiment
from tasks.links import flow_run_ui_url
from tasks.retries import retry_if_transient

P = ParamSpec("P")
R = TypeVar("R")

DECISION_CODES = {"promote": 1.0, "hold": 0.0, "rollback": -1.0}
LEVEL_METRICS = (
    "workflow_p50_s",
    "workflow_p95_s",
    "workflow_p99_s",
    "llm_p50_s",
    "llm_p95_s",
    "llm_p99_s",
    "throughput_rps",
    "error_rate",
    "late_share",
    "requests",
)


def _mlflow_task(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Every MLflow call here is one task: retried twice (2 s, then 10 s) when the error may pass, never cached."""
    return task(
        name=name,
        retries=2,
        retry_delay_seconds=[2, 10],
        retry_condition_fn=retry_if_transient,
        cache_policy=NO_CACHE,
    )


@_mlflow_task("mlflow-start-run")
def start_tracking_run(
    tracker: Tracker,
    ui_url: str | None,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any],
) -> tuple[str, str]:
    """A run in ``experiment`` with its tags and params; returns (run id, link to it)."""
    run_id = tracker.start_run(experiment, run_name, tags=dict(tags))
    if params:
        tracker.log(run_id, params=params)
    return run_id, tracker.run_url(ui_url, run_id)


@_mlflow_task("mlflow-end-run")
def end_tracking_run(tracker: Tracker, run_id: str, status: str) -> None:
    """FINISHED, FAILED or KILLED."""
    tracker.end_run(run_id, status)


def flow_run_id() -> str:
    """The Prefect flow run this code runs in (``local`` outside one): the ``prefect.flow_run_id`` tag."""
    return str(current_run.id or "local")


def sizing_tags(
    cfg: ScalingConfig, agent_url: str, simulated: bool, candidate_model: str | None, stage: str
) -> dict[str, str]:
    """The tags of every run in ``sizing/<app>`` (DESIGN.md section 4, plus what was measured)."""
    tags = {
        "app": cfg.app,
        "prefect.flow_run_id": flow_run_id(),
        "simulated": str(simulated).lower(),
        "agent_url": agent_url,
        "scaling.stage": stage,
    }
    if candidate_model:
        tags["candidate_model"] = candidate_model
    if prefect_url := flow_run_ui_url():
        tags["prefect.flow_run_url"] = prefect_url
    return tags


def sizing_params(cfg: ScalingConfig, *sections: str) -> dict[str, Any]:
    """The config sections a run measured with, as dotted params, and the app."""
    data = cfg.model_dump(mode="json")
    return flatten_params({k: data[k] for k in sections}) | {"app": cfg.app}


class SizingRun:
    """The MLflow run a scaling flow logs to: the parent's when given, else one it opens (and closes) itself.

    Used as a context manager: leaving the block closes a run opened here, FINISHED or (on an exception) FAILED.

    ``tags`` is called only when the run is opened here, so a subflow under ``scaling`` reads nothing for them.
    """

    def __init__(
        self,
        tracker: Tracker,
        ui_url: str | None,
        run_id: str | None,
        cfg: ScalingConfig,
        stage: str,
        tags: Mapping[str, str] | None,
        sections: tuple[str, ...],
    ) -> None:
        self.tracker = tracker
        self.ui_url = ui_url
        self.owned = run_id is None
        if run_id is None:
            name = f"{stage} {current_run.name or flow_run_id()}"
            run_id, _ = start_tracking_run(
                tracker, ui_url, sizing_experiment(cfg.app), name, dict(tags or {}), sizing_params(cfg, *sections)
            )
        self.run_id = run_id
        self.url = tracker.run_url(ui_url, run_id)

    def link(self) -> str:
        """Markdown link to the run."""
        return run_link(self.run_id, self.url)

    def close(self, ok: bool) -> None:
        """End the run when this flow opened it."""
        if self.owned:
            end_tracking_run(self.tracker, self.run_id, "FINISHED" if ok else "FAILED")

    def __enter__(self) -> SizingRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """FINISHED when the block returned, FAILED when it raised."""
        self.close(exc_type is None)


def _stats_metrics(prefix: str, stats: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("p50_s", "p95_s", "p99_s", "mean_s", "max_s", "count"):
        value = stats.get(key)
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[f"{prefix}_{key}"] = float(value)
    return out


@_mlflow_task("mlflow-log-profile")
def log_profile(tracker: Tracker, run_id: str, outcome: ProfileOutcome) -> None:
    """Profile metrics (``profile.*``) and files (``profile/``: JSON, markdown, Gantt PNG, the traces)."""
    metrics = {"profile.requests": float(outcome.requests), "profile.failed": float(outcome.failed)}
    metrics["profile.traces"] = float(outcome.traces)
    metrics.update(_stats_metrics("profile.workflow", outcome.summary.get("workflow") or {}))
    metrics.update(_stats_metrics("profile.llm", outcome.summary.get("llm") or {}))
    per_workflow = outcome.summary.get("llm_calls_per_workflow")
    if isinstance(per_workflow, int | float):
        metrics["profile.llm_calls_per_workflow"] = float(per_workflow)
    tracker.log(run_id, metrics=metrics, tags={"profile.source": outcome.source})
    for path in (outcome.report_json, outcome.report_md, outcome.gantt_png, outcome.traces_file):
        if path:
            tracker.log_file(run_id, Path(path), "profile")
    if outcome.traces == 0:
        tracker.log_text(run_id, outcome.markdown, "profile/profile.md")


@_mlflow_task("mlflow-log-sweep")
def log_sweep(tracker: Tracker, run_id: str, outcome: SweepOutcome) -> None:
    """Per-level metrics with ``step`` = concurrency (open-loop levels: ``open_loop.*`` with step = level index)
    and the three sweep tables under ``sweep/``."""
    for row in outcome.levels:
        closed = row.get("mode") == "closed"
        prefix = "" if closed else "open_loop."
        step = int(row["concurrency"]) if closed and row.get("concurrency") is not None else int(row.get("level", 0))
        metrics = {
            f"{prefix}{k}": float(row[k])
            for k in LEVEL_METRICS
            if isinstance(row.get(k), int | float) and math.isfinite(float(row[k]))
        }
        if not closed and isinstance(row.get("rate_rps"), int | float):
            metrics["open_loop.rate_rps"] = float(row["rate_rps"])
        tracker.log(run_id, metrics=metrics, step=step)
    tracker.log(
        run_id,
        metrics={"sweep.requests": float(outcome.requests), "sweep.errors": float(outcome.errors)},
        tags={"sweep.warnings": str(len(outcome.warnings))},
    )
    for path in (outcome.requests_csv, outcome.levels_csv, outcome.llm_calls_csv):
        tracker.log_file(run_id, Path(path), "sweep")
    if outcome.warnings:
        tracker.log_text(run_id, "\n".join(outcome.warnings) + "\n", "sweep/warnings.txt")


@_mlflow_task("mlflow-log-sizing")
def log_sizing(tracker: Tracker, run_id: str, outcome: SizingOutcome) -> None:
    """The answer as metrics, tags and params (the replica assumptions it used), ``sizing.json`` / ``sizing.md``
    and the two plots at the run's root; the confirmation as ``sizing.confirmed`` with its measured p95."""
    a = outcome.answer
    metrics: dict[str, float] = {"reachable": 1.0 if a.get("reachable") else 0.0}
    for key in (
        "slo_concurrency",
        "slo_concurrency_low",
        "slo_concurrency_high",
        "extrapolated_slo_concurrency",
        "slo_concurrency_per_replica",
        "load_per_replica",
        "replicas",
        "gpus",
        "gpus_low",
        "gpus_high",
        "throughput_at_slo_rps",
        "cost_per_1k_workflows",
    ):
        if isinstance(a.get(key), int | float):
            metrics[key] = float(a[key])
    fit = a.get("fit") or {}
    for key in ("d_s", "slope_s", "knee", "r_squared"):
        if isinstance(fit.get(key), int | float):
            metrics[f"fit.{key}"] = float(fit[key])
    tags = {
        "sizing.reachable": str(bool(a.get("reachable"))).lower(),
        "sizing.lower_bound": str(bool(a.get("slo_concurrency_is_lower_bound"))).lower(),
        "sizing.reason": str(a.get("reason", ""))[:5000],
        "sizing.interval": str(a.get("interval_kind", "")),
        "sizing.warnings": str(len(a.get("warnings") or [])),
    }
    assumptions = a.get("assumptions") or {}
    params = {f"sizing.replica.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in assumptions.items()}
    confirmation = a.get("confirmation")
    if confirmation:
        tags["sizing.confirmed"] = str(bool(confirmation["confirmed"])).lower()
        metrics["sizing.confirmed"] = 1.0 if confirmation["confirmed"] else 0.0
        metrics["sizing.confirmation_load"] = float(confirmation["load"])
        for key in ("workflow_p95_s", "llm_p95_s"):
            if isinstance(confirmation.get(key), int | float):
                metrics[f"sizing.confirmation_{key}"] = float(confirmation[key])
    tracker.log(run_id, metrics=metrics, tags=tags, params=params)
    for level in a.get("levels") or []:
        low, high = level.get("workflow_p95_low_s"), level.get("workflow_p95_high_s")
        step_metrics = {}
        if isinstance(low, int | float):
            step_metrics["workflow_p95_low_s"] = float(low)
        if isinstance(high, int | float):
            step_metrics["workflow_p95_high_s"] = float(high)
        step_metrics["meets_target"] = 1.0 if level.get("meets_target") else 0.0
        tracker.log(run_id, metrics=step_metrics, step=int(level["concurrency"]))
    for path in (outcome.json_path, outcome.markdown_path, outcome.latency_plot, outcome.sizing_plot):
        tracker.log_file(run_id, Path(path))
    if outcome.confirmation_csv:
        tracker.log_file(run_id, Path(outcome.confirmation_csv), "confirm")


@_mlflow_task("mlflow-log-rollout")
def log_rollout(tracker: Tracker, run_id: str, outcome: RolloutOutcome) -> None:
    """Decision per stage as tags (``stage.<name>.decision``) and metrics (step = stage index), report files."""
    tracker.log(
        run_id,
        metrics={
            "decision": DECISION_CODES.get(outcome.decision, 0.0),
            "requests": float(outcome.requests),
            "canary_requests": float(outcome.canary_requests),
        },
        tags={"rollout.decision": outcome.decision, "rollout.stopped_early": outcome.stopped_early or "no"},
    )
    for k, stage in enumerate(outcome.report.get("stages") or []):
        metrics = {"stage.decision": DECISION_CODES.get(stage["decision"], 0.0), "stage.weight": float(stage["weight"])}
        for variant in ("baseline", "canary"):
            slis = stage.get(variant) or {}
            for key in ("requests", "errors", "error_rate", "p95_latency_s", "slow_share", "quality_mean"):
                if isinstance(slis.get(key), int | float):
                    metrics[f"{variant}.{key}"] = float(slis[key])
        tags = {
            f"stage.{stage['stage']}.decision": stage["decision"],
            f"stage.{stage['stage']}.reason": "; ".join(stage.get("reasons") or [])[:5000],
        }
        tracker.log(run_id, metrics=metrics, tags=tags, step=k)
    for path in (outcome.json_path, outcome.markdown_path, outcome.observations_csv):
        tracker.log_file(run_id, Path(path))


@_mlflow_task("mlflow-champion")
def champion_served_model(tracker: Tracker, registered_model: str) -> str | None:
    """The model the registry's ``champion`` of ``registered_model`` is served as (tag ``served_model``), if any."""
    return served_champion(tracker, registered_model)[0]


def served_champion(tracker: Tracker, registered_model: str) -> tuple[str | None, str | None]:
    """(served model, candidate) of the registry's ``champion`` of ``registered_model``; (None, None) without one."""
    try:
        version = tracker.client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
    except MlflowException:
        return None, None
    tags = version.tags or {}
    served = tags.get("served_model") or tags.get("candidate")
    candidate = tags.get("candidate")
    return (str(served) if served else None), (str(candidate) if candidate else None)
