"""MLflow naming and logging: one parent run per flywheel run, a child run per candidate and eval mode.

Everything goes through an explicit ``MlflowClient`` and explicit run ids, never the fluent
"active run", because ``mlflow.active_run()`` is per thread and Prefect runs tasks in threads:
child runs started there would otherwise come out top-level.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from agent_flywheel.evaluation.gate import GateDecision
from agent_flywheel.paths import flywheel_home
from agent_flywheel.tracking_artifacts import artifact_root as experiment_artifact_root
from agent_flywheel.tracking_artifacts import check_artifact_location
from agent_flywheel.tracking_credentials import MlflowCredentials, credentialed_client

MAX_PARAM_LENGTH = 6000
CHAMPION_ALIAS = "champion"
#: The experiment tag MLflow 3's UI reads to choose an experiment's first page: "Machine learning"
#: experiments open on the runs table, GenAI ones (and untagged ones it guesses are) on traces.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
RUNS_TABLE_KIND = "custom_model_development"
#: The child-run tag with the gate's verdict on that candidate, for sorting and filtering in the compare view.
VERDICT_TAG = "gate.verdict"


def flywheel_experiment(workload_id: str) -> str:
    return f"flywheel/{workload_id}"


def sizing_experiment(app: str) -> str:
    return f"sizing/{app}"


def rollout_experiment(app: str) -> str:
    return f"rollout/{app}"


def gate_verdicts(decision: GateDecision) -> dict[tuple[str, str], str]:
    """The ``gate.verdict`` of each candidate (model, eval mode), in the gate's words made filterable
    (``non-inferiority not shown`` → ``non-inferiority-not-shown``): ``promoted`` for the winner, and a
    non-inferior candidate that lost says why (``non-inferior-not-cheaper``: not cheaper than the teacher,
    ``non-inferior-not-cheapest``: another candidate was cheaper)."""
    verdicts: dict[tuple[str, str], str] = {}
    for assessment in decision.assessments:
        candidate = assessment.candidate
        if decision.promoted == candidate:
            verdict = "promoted"
        elif assessment.verdict == "non-inferior":
            verdict = "non-inferior-not-cheapest" if assessment.cheaper else "non-inferior-not-cheaper"
        else:
            verdict = assessment.verdict.replace(" ", "-")
        verdicts[(candidate.model_name, candidate.eval_mode)] = verdict
    return verdicts


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as dotted MLflow params (``data_split_config.eval_size``); lists as JSON."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


class Tracker:
    """MLflow operations of the project, bound to one tracking URI."""

    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        *,
        credentials: MlflowCredentials | None = None,
        artifact_root: str | None = None,
    ) -> None:
        """``credentials`` go with every call (see :mod:`~agent_flywheel.tracking_credentials`); ``artifact_root``
        is where new experiments keep their artifacts (see :mod:`~agent_flywheel.tracking_artifacts`: a database
        URI without one is refused here, with :class:`~agent_flywheel.tracking_artifacts.ArtifactLocationError`)."""
        self.tracking_uri = tracking_uri
        self.configured_artifact_root = artifact_root
        self.artifact_root = experiment_artifact_root(
            tracking_uri, artifact_root, lambda: flywheel_home() / "mlartifacts"
        )
        self.client = credentialed_client(tracking_uri, registry_uri or tracking_uri, credentials)
        self._checked_experiments: set[str] = set()

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created on first use as a "Machine learning" experiment, so the
        MLflow UI opens it on the runs table (an experiment made before that is tagged the first time)."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if EXPERIMENT_KIND_TAG not in experiment.tags:
                self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, RUNS_TABLE_KIND)
            return str(experiment.experiment_id)
        try:
            return str(
                self.client.create_experiment(
                    name,
                    artifact_location=self._artifact_location(name),
                    tags={EXPERIMENT_KIND_TAG: RUNS_TABLE_KIND},
                )
            )
        except MlflowException:  # created concurrently by another run
            experiment = self.client.get_experiment_by_name(name)
            assert experiment is not None
            return str(experiment.experiment_id)

    def _artifact_location(self, experiment: str) -> str | None:
        """Under the artifact root (for a local store, the flywheel home, not ``./mlruns`` of the cwd); None
        when a tracking server decides where its artifacts live."""
        if self.artifact_root is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
        return f"{self.artifact_root}/{safe}"

    def _check_artifacts(self, experiment: str, experiment_id: str) -> None:
        """Refuse, before a run is made, an experiment whose artifacts would be lost with this worker."""
        if experiment_id in self._checked_experiments:
            return
        location = self.client.get_experiment(experiment_id).artifact_location
        check_artifact_location(experiment, location, self.tracking_uri, self.configured_artifact_root)
        self._checked_experiments.add(experiment_id)

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """Create a run (nested under ``parent_run_id`` when given) and return its id."""
        all_tags = {MLFLOW_RUN_NAME: run_name, **(tags or {})}
        if parent_run_id:
            all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        experiment_id = self.experiment_id(experiment)
        self._check_artifacts(experiment, experiment_id)
        run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return str(run.info.run_id)

    def log(
        self,
        run_id: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        step: int = 0,
    ) -> None:
        """Params, metrics and tags in one batch call."""
        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_series(self, run_id: str, key: str, points: list[tuple[int, float]]) -> None:
        """A metric history (``step``, value), e.g. a training loss curve."""
        now = int(time.time() * 1000)
        for start in range(0, len(points), 1000):
            chunk = points[start : start + 1000]
            self.client.log_batch(run_id, metrics=[Metric(key, float(v), now, int(s)) for s, v in chunk])

    def log_json(self, run_id: str, name: str, payload: Any) -> None:
        """A JSON artifact (manifest, decision, counts)."""
        self.client.log_dict(run_id, payload, name)

    def log_file(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)

    def run_url(self, ui_url: str | None, run_id: str) -> str:
        """A link to the run in the MLflow UI (or the run's URI when no UI is configured)."""
        run = self.client.get_run(run_id)
        if not ui_url:
            return f"runs:/{run_id}"
        return f"{ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"

    def champion(self, registered_model: str) -> tuple[int, dict[str, str]] | None:
        """The version the ``champion`` alias points at and its tags, or None (no model or no alias yet)."""
        try:
            version = self.client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
        except MlflowException:
            return None
        return int(version.version), dict(version.tags or {})

    def set_champion(self, registered_model: str, run_id: str, description: Mapping[str, Any]) -> int:
        """Register the promoted candidate as a new model version and point the ``champion`` alias at it."""
        try:
            self.client.create_registered_model(registered_model)
        except MlflowException:
            pass  # it already exists
        with tempfile.TemporaryDirectory() as tmp:
            card = Path(tmp) / "candidate.json"
            card.write_text(json.dumps(description, indent=2, default=str))
            self.client.log_artifact(run_id, str(card), "candidate")
        source = f"runs:/{run_id}/candidate"
        tags = {k: str(v) for k, v in description.items() if isinstance(v, str | int | float)}
        version = self.client.create_model_version(registered_model, source, run_id=run_id, tags=tags)
        self.client.set_registered_model_alias(registered_model, CHAMPION_ALIAS, version.version)
        return int(version.version)
