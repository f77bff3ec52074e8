"""The flywheel end to end on the local stack: traffic → datasets → three-mode evals → gate → MLflow.

One flow run is shared by the assertions below (a flywheel run is the expensive part).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from agent_flywheel.config import FlywheelConfig, parse_config
from agent_flywheel.tracking import CHAMPION_ALIAS
from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig

if TYPE_CHECKING:
    from flows.flywheel import FlywheelOutcome

pytestmark = pytest.mark.integration

WORKLOAD, CLIENT = "customer-support", "demo"
TEACHER = "meta/llama-3.3-70b-instruct"
SMALL, MEDIUM = "meta/llama-3.2-1b-instruct", "meta/llama-3.2-3b-instruct"


def _config() -> FlywheelConfig:
    return parse_config(
        {
            "nims": [
                {
                    "model_name": SMALL,
                    "customization_enabled": True,
                    "customizer_configs": {"target": f"{SMALL}@2.0", "max_seq_length": 8192},
                },
                {"model_name": MEDIUM},
            ],
            "data_split_config": {"eval_size": 200, "min_total_records": 50, "limit": 1000},
            "evaluation_config": {"poll_interval_s": 0.2, "timeout_s": 120},
        },
        FlywheelConfig,
        "test",
    )


@pytest.fixture(scope="module")
def flywheel_run(
    local_stack: LocalStackConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FlywheelOutcome, str, LocalStackConfig]]:
    home = tmp_path_factory.mktemp("flywheel")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    try:
        # 1,100 conversations, 200 held out: the fine-tune (~0.995 after ~800 training records) clears the
        # teacher's non-inferiority margin by about four standard errors. With 500 and 100 it is ~0.97 and the
        # decision goes either way (tried: one run promoted, the next did not).
        report = run_traffic(local_stack.url("agent"), requests=1100, concurrency=16, seed=3)
        assert report.failed == 0
        assert httpx.post(f"{local_stack.url('agent')}/admin/flush", timeout=60).status_code == 200

        from flows.flywheel import flywheel

        result = asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=_config()))
        yield result, tracking_uri, local_stack
    finally:
        monkeypatch.undo()


def _runs(tracking_uri: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


def test_the_fine_tuned_small_model_is_promoted(flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig]) -> None:
    result, _, _ = flywheel_run
    assert result.outcome == "promoted", result.markdown
    assert result.promoted == f"{SMALL} (customized-eval)"
    assert str(result.served_model).startswith(f"dfwbp/customized-{SMALL.replace('/', '-')}@cust-")


def test_mlflow_has_one_parent_and_a_child_per_candidate_and_mode(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig],
) -> None:
    _, tracking_uri, _ = flywheel_run
    parent, children = _runs(tracking_uri)
    assert parent.data.tags["workload_id"] == WORKLOAD
    assert parent.data.tags["simulated"] == "true"
    assert parent.data.tags["gate.outcome"] == "promoted"
    assert parent.data.params["data_split_config.eval_size"] == "200"
    pairs = {(r.data.tags["candidate"], r.data.tags["eval_mode"]) for r in children}
    assert pairs == {
        (TEACHER, "base-eval"),
        (SMALL, "base-eval"),
        (SMALL, "icl-eval"),
        (SMALL, "customized-eval"),
        (MEDIUM, "base-eval"),
        (MEDIUM, "icl-eval"),
    }
    for run in children:
        metrics = run.data.metrics
        assert {"function_name_accuracy", "function_name_and_args_accuracy", "tool_calling_correctness"} <= set(metrics)
        assert metrics["function_name_and_args_accuracy_ci_low"] <= metrics["function_name_and_args_accuracy"]
        assert metrics["samples"] == 200
        assert run.data.tags["prefect.flow_run_id"] == parent.data.tags["prefect.flow_run_id"]
    tuned = next(r for r in children if r.data.tags["eval_mode"] == "customized-eval")
    loss = MlflowClient(tracking_uri).get_metric_history(tuned.info.run_id, "train_loss")
    assert len(loss) > 1
    assert loss[-1].value < loss[0].value


def test_champion_alias_points_at_the_promoted_adapter(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig],
) -> None:
    result, tracking_uri, _ = flywheel_run
    version = MlflowClient(tracking_uri).get_model_version_by_alias(f"flywheel-{WORKLOAD}", CHAMPION_ALIAS)
    assert version.tags["served_model"] == result.served_model
    assert version.tags["eval_mode"] == "customized-eval"


def test_no_deployment_or_job_is_left_running(flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig]) -> None:
    _, _, stack = flywheel_run
    nemo = stack.url("nemo")
    deployments = httpx.get(f"{nemo}/v1/deployment/model-deployments", params={"page_size": 100}).json()["data"]
    assert deployments == []
    jobs = httpx.get(f"{nemo}/v1/customization/jobs", params={"page_size": 100}).json()["data"]
    assert jobs and all(job["status"] == "completed" for job in jobs)


def test_dataset_files_follow_the_nemo_layout(flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig]) -> None:
    _, _, stack = flywheel_run
    datasets = httpx.get(f"{stack.url('nemo')}/v1/datasets", params={"page_size": 100}).json()["data"]
    names = {d["name"].split("-")[1] for d in datasets}
    assert {"eval", "train", "icl"} <= names
    train = next(d for d in datasets if d["name"].startswith("flywheel-train-"))
    ns, name = train["files_url"].removeprefix("hf://datasets/").split("/")
    tree = httpx.get(f"{stack.url('datastore')}/v1/hf/api/datasets/{ns}/{name}/tree/main", params={"recursive": "true"})
    paths = {item["path"] for item in tree.json()}
    assert {"training/train_data.jsonl", "validation/val_data.jsonl"} <= paths
