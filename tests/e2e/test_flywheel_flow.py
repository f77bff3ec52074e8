"""The flywheel end to end on the local stack: traffic → datasets → three-mode evals → gate → MLflow.

One flow run is shared by the assertions below (a flywheel run is the expensive part).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

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
        assert report.failed == 0, report.errors
        assert httpx.post(f"{local_stack.url('agent')}/admin/flush", timeout=60).status_code == 200

        from flows.flywheel import flywheel

        result = asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=_config()))
        yield result, tracking_uri, local_stack
    finally:
        monkeypatch.undo()


def _runs(tracking_uri: str, parent_run_id: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.info.run_id == parent_run_id]
    assert len(parents) == 1 and "mlflow.parentRunId" not in parents[0].data.tags
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_run_id]


def test_the_fine_tuned_small_model_is_promoted(flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig]) -> None:
    result, _, _ = flywheel_run
    assert result.outcome == "promoted", result.markdown
    assert result.promoted == f"{SMALL} (customized-eval)"
    assert str(result.served_model).startswith(f"dfwbp/customized-{SMALL.replace('/', '-')}@cust-")


def test_mlflow_has_one_parent_and_a_child_per_candidate_and_mode(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig],
) -> None:
    result, tracking_uri, _ = flywheel_run
    parent, children = _runs(tracking_uri, result.mlflow_run_id)
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


def test_each_child_run_carries_the_gates_verdict_and_the_experiment_opens_on_its_runs(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig],
) -> None:
    result, tracking_uri, _ = flywheel_run
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None and experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    _, children = _runs(tracking_uri, result.mlflow_run_id)
    verdicts = {(r.data.tags["candidate"], r.data.tags["eval_mode"]): r.data.tags["gate.verdict"] for r in children}
    assert verdicts[(TEACHER, "base-eval")] == "teacher"
    assert verdicts[(SMALL, "customized-eval")] == "promoted"
    gate_words = {"non-inferior-not-cheapest", "non-inferior-not-cheaper", "non-inferiority-not-shown", "inferior"}
    assert set(verdicts.values()) - {"teacher", "promoted"} <= gate_words
    promoted = client.search_runs([experiment.experiment_id], "tags.`gate.verdict` = 'promoted'")
    assert [r.info.run_id for r in promoted] == [
        r.info.run_id for r in children if r.data.tags["eval_mode"] == "customized-eval"
    ]


def test_the_scores_artifact_shows_each_metric_with_its_interval(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig],
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    result, tracking_uri, _ = flywheel_run
    parent, _ = _runs(tracking_uri, result.mlflow_run_id)
    flow_run_id = parent.data.tags["prefect.flow_run_id"]

    async def of_this_run() -> Any:  # the session's Prefect server keeps other tests' runs too
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["flywheel-scores"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
                )
            )
        assert len(found) == 1, found
        return found[0]

    artifact = asyncio.run(of_this_run())
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert list(rows[0]) == ["model", "mode", "n", "fn name", "fn name+args", "tool calls", "verdict"]
    by_mode = {(row["model"], row["mode"]): row for row in rows}
    tuned = by_mode[(SMALL, "customized-eval")]
    assert tuned["verdict"] == "promoted" and tuned["n"] == 200
    widths = []
    for row in rows:
        shown = re.fullmatch(r"(\d\.\d{3}) \[(\d\.\d{3}), (\d\.\d{3})\]", row["fn name+args"])
        assert shown is not None, row
        mean, low, high = (float(x) for x in shown.groups())
        assert low <= mean <= high
        widths.append(high - low)
    assert max(widths) > 0  # not every candidate is perfect: some intervals have a width
    assert "95% bootstrap interval" in str(artifact.description)


def test_champion_alias_points_at_the_promoted_adapter(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig],
) -> None:
    result, tracking_uri, _ = flywheel_run
    version = MlflowClient(tracking_uri).get_model_version_by_alias(f"flywheel-{WORKLOAD}", CHAMPION_ALIAS)
    assert version.tags["served_model"] == result.served_model
    assert version.tags["eval_mode"] == "customized-eval"


def test_no_deployment_or_job_is_left_running(flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig]) -> None:
    result, tracking_uri, stack = flywheel_run
    nemo = stack.url("nemo")
    deployments = httpx.get(f"{nemo}/v1/deployment/model-deployments", params={"page_size": 100}).json()["data"]
    assert deployments == []
    jobs = httpx.get(f"{nemo}/v1/customization/jobs", params={"page_size": 100}).json()["data"]
    assert jobs and all(job["status"] == "completed" for job in jobs)
    # every job is labelled with the flow run that created it (a reaper on any machine can ask Prefect)
    flow_run_id = MlflowClient(tracking_uri).get_run(result.mlflow_run_id).data.tags["prefect.flow_run_id"]
    evaluations = httpx.get(f"{nemo}/v1/evaluation/jobs", params={"page_size": 100}).json()["data"]
    assert {job["custom_fields"]["flywheel_run_id"] for job in [*jobs, *evaluations]} == {flow_run_id}


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


# Run again: with no new records, and then rebuilt from the same records (the same decision again). These
# come last: they add runs to the MLflow experiment and the model registry that the tests above read.


def test_a_run_without_new_records_stops_before_any_dataset_or_job(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, tracking_uri, stack = flywheel_run
    _first_runs_home(tracking_uri, monkeypatch)
    nemo = stack.url("nemo")
    watermark = _watermark_document()
    assert watermark is not None and watermark["workload_id"] == WORKLOAD
    jobs_before = _job_ids(nemo)
    parents_before = _parent_run_ids(tracking_uri)
    state = _run_again()
    outcome = state.result()
    assert outcome.outcome == "no-new-data" and outcome.mlflow_run_id == ""
    assert state.message.startswith(f"flywheel {WORKLOAD}/{CLIENT}: no-new-data: no new records since")
    assert _watermark_document() == watermark  # not even rewritten
    assert _job_ids(nemo) == jobs_before
    assert _parent_run_ids(tracking_uri) == parents_before
    assert _versions(tracking_uri) == [1]
    assert first.outcome == "promoted"


def test_a_run_whose_winner_already_is_the_champion_registers_nothing(
    flywheel_run: tuple[FlywheelOutcome, str, LocalStackConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebuilt from the same records: the same datasets, the same fine-tune (found, not run again), the same
    adapter wins: it is the champion already, so no new version and no promotion event."""
    first, tracking_uri, stack = flywheel_run
    _first_runs_home(tracking_uri, monkeypatch)
    customizations = _job_ids(stack.url("nemo"))["customization"]
    state = _run_again(full_rebuild=True)
    outcome = state.result()
    assert outcome.outcome == "unchanged", outcome.markdown
    assert outcome.promoted == first.promoted and outcome.served_model == first.served_model
    assert "already is the champion (version 1" in state.message
    assert _versions(tracking_uri) == [1]
    assert _job_ids(stack.url("nemo"))["customization"] == customizations
    parent = MlflowClient(tracking_uri).get_run(outcome.mlflow_run_id)
    assert parent.data.tags["gate.outcome"] == "promoted" and parent.data.tags["champion.unchanged"] == "1"


def _first_runs_home(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the first run's FLYWHEEL_HOME (its state prefix, so its watermark; its record cache and evaluation
    cache), next to its MLflow database."""
    home = Path(tracking_uri.removeprefix("sqlite:///")).parent
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    return home


def _watermark_document() -> Any:
    """The first run's watermark as stored (a Prefect variable), with its ``updated_at``."""
    from tasks.watermarks import watermark_store

    store = watermark_store()
    return store.state.get(store.name(WORKLOAD, CLIENT))


def _run_again(full_rebuild: bool = False) -> Any:
    """Another flywheel run on the module's stack; its final state."""
    from flows.flywheel import flywheel

    async def run() -> Any:
        return await flywheel(
            workload_id=WORKLOAD, client_id=CLIENT, config=_config(), full_rebuild=full_rebuild, return_state=True
        )

    return asyncio.run(run())


def _job_ids(nemo: str) -> dict[str, list[str]]:
    found = {}
    for kind, path in (("customization", "/v1/customization/jobs"), ("evaluation", "/v1/evaluation/jobs")):
        found[kind] = sorted(j["id"] for j in httpx.get(f"{nemo}{path}", params={"page_size": 100}).json()["data"])
    return found


def _parent_run_ids(tracking_uri: str) -> set[str]:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    return {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}


def _versions(tracking_uri: str) -> list[int]:
    versions = MlflowClient(tracking_uri).search_model_versions(f"name = 'flywheel-{WORKLOAD}'")
    return sorted(int(v.version) for v in versions)
