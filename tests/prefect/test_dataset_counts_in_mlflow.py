"""Extraction counts keyed by model id (``ns/name@cust-…``) must still log as MLflow metrics."""

from __future__ import annotations

from pathlib import Path

from agent_flywheel.tracking import Tracker
from tasks.tracking import _flat_numbers


def test_model_ids_become_legal_metric_names(tmp_path: Path) -> None:
    counts = {"extraction": {"other_models": {"dfwbp/customized-meta-llama-3.2-1b-instruct@cust-6nbI6": 3}}}
    metrics = _flat_numbers(counts)
    assert metrics == {"extraction.other_models.dfwbp/customized-meta-llama-3.2-1b-instruct_cust-6nbI6": 3.0}
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = tracker.start_run("flywheel/w", "parent")
    tracker.log(run_id, metrics=metrics)  # MLflow rejects '@' in metric names
    assert tracker.client.get_run(run_id).data.metrics == metrics
