"""Pydantic models of the NeMo v1 responses we read.

Only the fields the flywheel uses are declared; everything else is kept (``extra="allow"``), so a newer
server's additions never break parsing. Statuses stay plain strings (see ``status.classify``) and
timestamps stay strings, because services format them differently (``T`` or space, with or without zone).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_flywheel.nemo.status import Phase, classify


class NemoModel(BaseModel):
    """Base of every response model: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- Entity Store ----------------------------------------------------------------------------------


class Namespace(NemoModel):
    """An Entity Store namespace (``GET /v1/namespaces/{id}``)."""

    id: str
    description: str | None = None
    created_at: str | None = None


class Dataset(NemoModel):
    """A dataset registration: where its files are (``files_url``) and what it is."""

    files_url: str
    id: str | None = None
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    format: str | None = None
    limit: int | None = None
    split: str | None = None
    hf_endpoint: str | None = None
    custom_fields: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None


class ModelEntity(NemoModel):
    """An Entity Store model (Customizer outputs are ``{ns}/{name}@{job_id}``)."""

    name: str
    namespace: str | None = None
    id: str | None = None
    description: str | None = None
    base_model: str | dict[str, Any] | None = None
    peft: dict[str, Any] | None = None
    artifact: dict[str, Any] | None = None
    custom_fields: dict[str, Any] | None = None
    created_at: str | None = None

    @property
    def full_name(self) -> str:
        """``namespace/name`` as used in NIM and evaluation targets."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


# --- Customizer ------------------------------------------------------------------------------------


class StatusLog(NemoModel):
    """One entry of a customization job's ``status_logs`` (the failure reason is in ``detail``)."""

    updated_at: str | None = None
    message: str | None = None
    detail: str | None = None


class CustomizationStatus(NemoModel):
    """``GET /v1/customization/jobs/{id}/status`` (also embedded as the job's ``status_details``)."""

    status: str = "unknown"
    percentage_done: float | None = None
    epochs_completed: int | None = None
    steps_completed: int | None = None
    steps_per_epoch: int | None = None
    best_epoch: int | None = None
    elapsed_time: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    metrics: dict[str, Any] | None = None
    status_logs: list[StatusLog] = Field(default_factory=list)

    @property
    def phase(self) -> Phase:
        """Waiting, running, succeeded or failed (unknown statuses wait)."""
        return classify(self.status)

    def last_log(self) -> StatusLog | None:
        """The newest status log entry (the failure reason lives in its ``detail``)."""
        return self.status_logs[-1] if self.status_logs else None

    def failure_reason(self) -> str:
        """Why the job failed, from the last log that says anything."""
        for log in reversed(self.status_logs):
            if log.detail or log.message:
                return log.detail or log.message or ""
        return "no reason given in status_logs"


class CustomizationJob(NemoModel):
    """``POST``/``GET /v1/customization/jobs[/{id}]``: ``output_model`` is ``ns/name@<job id>``."""

    id: str
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    config: str | dict[str, Any] | None = None
    dataset: str | dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    output_model: str | None = None
    status: str = "unknown"
    status_details: CustomizationStatus | None = None
    custom_fields: dict[str, Any] | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def phase(self) -> Phase:
        """Waiting, running, succeeded or failed (unknown statuses wait)."""
        return classify(self.status)


# --- Evaluator -------------------------------------------------------------------------------------


class EvaluationStatus(NemoModel):
    """``GET /v1/evaluation/jobs/{id}/status`` (also embedded as the job's ``status_details``)."""

    status: str | None = None
    message: str | None = None
    progress: float | None = None
    samples_processed: int | None = None
    task_status: dict[str, Any] | None = None


class EvaluationJob(NemoModel):
    """``POST``/``GET /v1/evaluation/jobs[/{id}]``."""

    id: str
    namespace: str | None = None
    description: str | None = None
    status: str = "unknown"
    status_details: EvaluationStatus | None = None
    config: str | dict[str, Any] | None = None
    target: str | dict[str, Any] | None = None
    custom_fields: dict[str, Any] | None = None
    result: str | None = None
    output_files_url: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def phase(self) -> Phase:
        """Waiting, running, succeeded or failed (unknown statuses wait)."""
        return classify(self.status)

    @property
    def progress(self) -> float | None:
        """Percent done (0-100) from ``status_details.progress``; None before the Evaluator reports any."""
        return self.status_details.progress if self.status_details else None


class ScoreStats(NemoModel):
    """Aggregate statistics of one score over the samples."""

    count: int | None = None
    sum: float | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    stddev: float | None = None
    stderr: float | None = None
    nan_count: int | None = None


class Score(NemoModel):
    """One score: its aggregate ``value`` (the mean over samples) and stats."""

    value: float | None = None
    stats: ScoreStats | None = None


class MetricResult(NemoModel):
    """The scores one metric produced."""

    scores: dict[str, Score] = Field(default_factory=dict)


class TaskResult(NemoModel):
    """The metrics of one evaluation task."""

    metrics: dict[str, MetricResult] = Field(default_factory=dict)


class EvaluationResult(NemoModel):
    """``GET /v1/evaluation/jobs/{id}/results``: ``tasks.<task>.metrics.<metric>.scores.<score>.value``."""

    job: str | None = None
    id: str | None = None
    tasks: dict[str, TaskResult] = Field(default_factory=dict)
    groups: dict[str, Any] | None = None
    files_url: str | None = None

    def score(self, task: str, metric: str, score: str) -> float | None:
        """One aggregate value, or None when the task, metric or score is absent."""
        task_result = self.tasks.get(task)
        metric_result = task_result.metrics.get(metric) if task_result else None
        found = metric_result.scores.get(score) if metric_result else None
        return found.value if found else None

    def flat_scores(self) -> dict[str, float]:
        """Every aggregate as ``{"task/metric/score": value}`` (for logging all of them at once)."""
        out: dict[str, float] = {}
        for task, task_result in self.tasks.items():
            for metric, metric_result in task_result.metrics.items():
                for name, found in metric_result.scores.items():
                    if found.value is not None:
                        out[f"{task}/{metric}/{name}"] = found.value
        return out


class SampleResult(NemoModel):
    """One row of the per-sample ``results.json`` inside ``download-results``."""

    item: dict[str, Any] = Field(default_factory=dict)
    sample: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, MetricResult] = Field(default_factory=dict)

    def score(self, metric: str, score: str) -> float | None:
        """This sample's value of one score, or None when the Evaluator could not score it."""
        metric_result = self.metrics.get(metric)
        found = metric_result.scores.get(score) if metric_result else None
        return found.value if found else None


# --- Deployment Management -------------------------------------------------------------------------


class DeploymentStatusDetails(NemoModel):
    """DMS ``status_details``: the status and a human-readable description."""

    status: str = "unknown"
    description: str | None = None


class ModelDeployment(NemoModel):
    """``GET /v1/deployment/model-deployments/{ns}/{name}``."""

    name: str | None = None
    namespace: str | None = None
    url: str | None = None
    deployed: bool | None = None
    status_details: DeploymentStatusDetails = Field(default_factory=DeploymentStatusDetails)
    models: list[str] | None = None
    config: str | dict[str, Any] | None = None
    description: str | None = None
    custom_fields: dict[str, Any] | None = None
    created_at: str | None = None

    @property
    def status(self) -> str:
        """``status_details.status``, the field DMS reports its state in."""
        return self.status_details.status

    @property
    def ready(self) -> bool:
        """Up and serving: status ``ready`` or ``deployed: true`` (blueprint bug 8 compared to ``deployed``)."""
        return self.status_details.status.strip().lower() == "ready" or self.deployed is True

    @property
    def failed(self) -> bool:
        """Will never become ready by waiting (``failed``/``cancelled``)."""
        return not self.ready and classify(self.status_details.status) is Phase.FAILED


# --- NIM -------------------------------------------------------------------------------------------


class NimModel(NemoModel):
    """One entry of NIM's ``/v1/models`` (LoRA adapters have their base as ``parent``)."""

    id: str
    object: str | None = "model"
    created: int | None = None
    owned_by: str | None = None
    root: str | None = None
    parent: str | None = None


class NimModelList(NemoModel):
    """NIM's ``/v1/models`` answer."""

    object: str | None = "list"
    data: list[NimModel] = Field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        """The served model ids, for membership checks."""
        return [model.id for model in self.data]
