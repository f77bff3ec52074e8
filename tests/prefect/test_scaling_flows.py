"""The scaling lifecycle end to end: the flows against the local stack in-process.

- ``scaling`` (profile → load sweep → sizing) against the demo agent, the NIM simulator and the log server,
  each a real HTTP server on a free loopback port, with the NIM's latency model at a tenth of real time.
  Checked: the MLflow run in ``sizing/<app>`` (tags, params, per-level metrics at step = concurrency, the
  sweep tables, the plots, the profile files, ``sizing.json`` with a consistent interval) and the Prefect
  artifacts that link to it.
- ``rollout-check`` with synthetic traffic through the demo agent's router (configured explicitly): a canary
  nobody serves (the agent answers 502) is rolled back and the routing restored; a healthy canary is not rolled
  back; no canary and no champion is a skip; the event payload.
- A candidate is routed only by a router the config names: with the default ``none`` the scaling flow refuses
  before any run starts; with ``demo-agent`` every profiled request is served by the candidate.

The sizing's accuracy against the simulator's true capacity is checked on a simulated clock in
``tests/core/test_sizing_accuracy.py``; here only the plumbing, whatever the busy machine measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
import pytest

from agent_flywheel.config import LoadSweepConfig, ScalingConfig
from agent_flywheel.tracking import Tracker, rollout_experiment, sizing_experiment
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port
from tests.support.homes import isolated_home

if TYPE_CHECKING:
    from flows.scaling import ScalingOutcome

pytestmark = pytest.mark.integration

APP = "scaling-test"
TEACHER = "meta/llama-3.3-70b-instruct"
HEALTHY_CANARY = "meta/llama-3.2-1b-instruct"
LEVELS = [1, 2, 4, 8, 16]


# --------------------------------------------------------------------------------------------------
# Fixtures: Prefect and MLflow in temporary directories, the stack in threads
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prefect's home, MLflow's SQLite store and its artifacts (``./mlruns``) all in a temporary directory."""
    with isolated_home(tmp_path_factory.mktemp("scaling-flows")) as root:
        yield root


@pytest.fixture(scope="module")
def stack(home: Path, save_local_blocks: Callable[[LocalStackConfig], LocalStackConfig]) -> Iterator[LocalStackConfig]:
    """Log server, NIM simulator (latency at 1/10 of real time) and demo agent; the ``local`` blocks point here."""
    from simulators.agent.server import create_app as agent_app
    from simulators.logserver.server import create_app as logserver_app
    from simulators.nim.server import create_app as nim_app

    cfg = LocalStackConfig(
        ports=Ports(logserver=free_port(), datastore=free_port(), nim=free_port(), nemo=free_port(), agent=free_port()),
        state_dir=str(home / "stack"),
        nim={"latency": {"time_scale": 0.1}},
        agent={"tool_latency_scale": 0.1, "log_flush_interval_s": 0.2},
    )
    save_local_blocks(cfg)
    servers: list[ThreadedServer] = []
    try:
        for create, part in ((logserver_app, "logserver"), (nim_app, "nim"), (agent_app, "agent")):
            servers.append(ThreadedServer(create(cfg), cfg.host, getattr(cfg.ports, part)).start())
        yield cfg
    finally:
        for server in reversed(servers):
            server.stop()


def _config(target_p95_s: float = 0.15, **rollout: Any) -> ScalingConfig:
    return ScalingConfig.model_validate(
        {
            "app": APP,
            "profile": {"num_requests": 6},
            "load_sweep": {
                "concurrencies": LEVELS,
                "num_passes": 2,
                "requests_per_level": 16,
                "warmup_requests": 2,
                "request_timeout_s": 10,
            },
            "sizing": {
                "target_users": 200,
                "target_workflow_p95_s": target_p95_s,
                "bootstrap_samples": 200,
                "confirm": True,
            },
            "rollout": {
                "baseline_model": TEACHER,
                "router": {"kind": "demo-agent"},  # the demo agent's own router, with simulated users
                "synthetic_traffic": True,
                "stages": [
                    {"name": "canary-50", "weight": 0.5, "duration_s": 2.5},
                    {"name": "full", "weight": 1.0, "duration_s": 1.5},
                ],
                "slo": {"availability": 0.99, "p95_latency_s": 1.0},
                **rollout,
            },
        }
    )


@pytest.fixture(scope="module")
def scaling_run(stack: LocalStackConfig) -> ScalingOutcome:
    from flows.scaling import scaling

    return scaling(config=_config(), agent_block="local", mlflow_block="local")


@pytest.fixture(scope="module")
def mlflow(home: Path) -> Tracker:
    return Tracker(f"sqlite:///{home / 'mlflow.db'}")


# --------------------------------------------------------------------------------------------------
# scaling: profile → load sweep → sizing
# --------------------------------------------------------------------------------------------------


def test_scaling_flow_records_one_sizing_run(scaling_run: ScalingOutcome, mlflow: Tracker) -> None:
    experiment = mlflow.client.get_experiment_by_name(sizing_experiment(APP))
    assert experiment is not None
    runs = mlflow.client.search_runs([experiment.experiment_id], "tags.`scaling.stage` = 'scaling'")
    assert [r.info.run_id for r in runs] == [scaling_run.mlflow_run_id]  # the subflows logged into it
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["app"] == APP
    assert run.data.tags["simulated"] == "true"
    assert run.data.tags["prefect.flow_run_id"] not in ("", "local")
    assert json.loads(run.data.params["load_sweep.concurrencies"]) == LEVELS
    assert run.data.params["load_sweep.num_passes"] == "2"
    assert float(run.data.params["sizing.target_workflow_p95_s"]) == 0.15
    assert run.data.params["sizing.target_users"] == "200"

    for key in ("workflow_p50_s", "workflow_p95_s", "workflow_p99_s", "llm_p95_s", "throughput_rps", "error_rate"):
        history = mlflow.client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == LEVELS, key
    p95 = {m.step: m.value for m in mlflow.client.get_metric_history(run.info.run_id, "workflow_p95_s")}
    assert p95[16] > p95[1]  # the latency model queues: more load, slower
    assert all(m.value == 0 for m in mlflow.client.get_metric_history(run.info.run_id, "error_rate"))

    files = {a.path for a in mlflow.client.list_artifacts(run.info.run_id)}
    files |= {a.path for d in ("sweep", "profile") for a in mlflow.client.list_artifacts(run.info.run_id, d)}
    assert {
        "sizing.json",
        "sizing.md",
        "latency_vs_concurrency.png",
        "sizing.png",
        "sweep/requests.csv",
        "sweep/levels.csv",
        "sweep/llm_calls.csv",
        "profile/profile.json",
        "profile/profile.md",
        "profile/gantt.png",
        "profile/traces.jsonl",
    } <= files
    local = Path(mlflow.client.download_artifacts(run.info.run_id, "sweep/requests.csv"))
    requests = pd.read_csv(local)
    assert sorted(requests["concurrency"].unique()) == LEVELS
    assert len(requests) == len(LEVELS) * 2 * 16


def test_sizing_answer_has_a_consistent_interval(scaling_run: ScalingOutcome, mlflow: Tracker) -> None:
    """Whatever the busy machine measured: the answer, its interval, its assumptions and MLflow agree."""
    answer = json.loads(Path(mlflow.client.download_artifacts(scaling_run.mlflow_run_id, "sizing.json")).read_text())
    assert answer == scaling_run.sizing
    assert [lv["concurrency"] for lv in answer["levels"]] == LEVELS
    assert answer["assumptions"] == {
        "test_gpus": 1,
        "gpus_per_replica": 1,
        "replicas_in_test": 1,
        "traffic": "balanced",
        "sticky_sessions": False,
        "rule": "replicas = ceil(users / C* per replica) (requests balanced over the replicas)",
    }
    assert answer["interval_kind"] == "confidence"  # per-request rows: an interval, whose open ends say why
    run = mlflow.client.get_run(scaling_run.mlflow_run_id).data
    assert run.params["sizing.replica.traffic"] == "balanced" and run.params["sizing.replica.gpus_per_replica"] == "1"
    assert run.params["sizing.sticky_sessions"] == "false" and run.params["sizing.confirm"] == "true"
    assert run.metrics["reachable"] == (1.0 if answer["reachable"] else 0.0)
    assert run.tags["sizing.interval"] == "confidence"
    if not answer["reachable"]:
        assert answer["gpus"] is None and "confirmation" not in answer
        return
    c, low, high = answer["slo_concurrency"], answer["slo_concurrency_low"], answer["slo_concurrency_high"]
    assert (low is None or low <= c) and (high is None or c <= high)
    assert answer["replicas"] == math.ceil(200 / c - 1e-9) and answer["gpus"] == answer["replicas"]
    assert (answer["gpus_low"] is None) == (high is None) and (answer["gpus_high"] is None) == (low is None)
    assert answer["gpus_low"] is None or answer["gpus_low"] <= answer["gpus"]
    assert answer["gpus_high"] is None or answer["gpus"] <= answer["gpus_high"]
    assert len(answer["interval_notes"]) == (low is None) + (high is None)
    assert run.metrics["gpus"] == answer["gpus"]
    # the confirmation re-measured the load each replica carries, and MLflow says whether the SLO held
    confirmation = answer["confirmation"]
    assert confirmation["load_per_replica"] == pytest.approx(200 / answer["replicas"])
    assert [m["concurrency"] for m in confirmation["measured"]] == confirmation["concurrencies"]
    assert all(m["requests"] == 2 * 16 for m in confirmation["measured"])
    held = confirmation["workflow_p95_s"] is not None and confirmation["workflow_p95_s"] <= 0.15
    assert confirmation["confirmed"] is held
    assert run.tags["sizing.confirmed"] == str(held).lower() and run.metrics["sizing.confirmed"] == float(held)
    if confirmation["workflow_p95_s"] is not None:
        assert run.metrics["sizing.confirmation_workflow_p95_s"] == pytest.approx(confirmation["workflow_p95_s"])
    assert "## Confirmation" in scaling_run.markdown
    files = {a.path for a in mlflow.client.list_artifacts(scaling_run.mlflow_run_id, "confirm")}
    assert files == {"confirm/requests.csv"}


def test_profile_collects_one_trace_per_request(scaling_run: ScalingOutcome, mlflow: Tracker) -> None:
    profile = scaling_run.profile
    assert (profile.requests, profile.failed, profile.traces) == (6, 0, 6)
    assert profile.source == "otlp-receiver"
    assert "bottleneck" in profile.summary["bottleneck"]
    report = json.loads(
        Path(mlflow.client.download_artifacts(scaling_run.mlflow_run_id, "profile/profile.json")).read_text()
    )
    assert report["num_traces"] == 6
    assert report["llm"]["count"] >= 6  # every request makes one or two LLM calls, each with its own span
    assert any(step["kind"] == "llm" for step in report["steps"])


def test_prefect_artifacts_link_to_the_mlflow_run(scaling_run: ScalingOutcome) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["sizing-report", "profile-report", "load-sweep"])
            )
        )
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == {"sizing-report", "profile-report", "load-sweep"}
    run_id = scaling_run.mlflow_run_id
    assert run_id in str(by_key["sizing-report"].data) and "get-artifact?path=sizing.png" in str(
        by_key["sizing-report"].data
    )
    assert "get-artifact?path=profile/gantt.png" in str(by_key["profile-report"].data)
    table = by_key["load-sweep"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [row["concurrency"] for row in rows] == LEVELS


# --------------------------------------------------------------------------------------------------
# rollout-check
# --------------------------------------------------------------------------------------------------


def _routing(stack: LocalStackConfig) -> dict[str, Any]:
    return dict(httpx.get(f"{stack.url('agent')}/admin/routing", timeout=5).json())


def test_rollout_check_rolls_back_a_canary_that_fails(
    scaling_run: ScalingOutcome, stack: LocalStackConfig, mlflow: Tracker
) -> None:
    from flows.rollout_check import rollout_check

    result = rollout_check(config=_config(), canary_model="acme/not-deployed", min_canary_requests=10)
    assert (result.decision, result.mode) == ("rollback", "synthetic")
    assert result.stages[0].stage == "canary-50"
    assert result.stages[0].decision == "rollback"
    assert result.stopped_early == "canary-50"  # the alarm cut the stage short
    assert _routing(stack)["canary_model"] is None  # the agent's routing is restored
    run = mlflow.client.get_run(result.mlflow_run_id)
    assert run.data.tags["rollout.decision"] == "rollback"
    assert run.data.tags["stage.canary-50.decision"] == "rollback"
    assert run.data.tags["canary_model"] == "acme/not-deployed"
    assert (run.data.tags["rollout.mode"], run.data.tags["router"]) == ("synthetic", "demo-agent")
    experiment = mlflow.client.get_experiment(run.info.experiment_id)
    assert experiment.name == rollout_experiment(APP)
    files = {a.path for a in mlflow.client.list_artifacts(run.info.run_id)}
    assert {"rollout.json", "rollout.md", "observations.csv"} <= files


def test_rollout_check_does_not_roll_back_a_healthy_canary(
    scaling_run: ScalingOutcome, stack: LocalStackConfig
) -> None:
    from flows.rollout_check import rollout_check

    httpx.post(f"{stack.url('nim')}/admin/models", json={"id": HEALTHY_CANARY}, timeout=5).raise_for_status()
    # Healthy means it answers: on a busy machine (other tests beside it) a request may take over a second.
    slo = {"availability": 0.99, "p95_latency_s": 60.0}
    result = rollout_check(config=_config(slo=slo), canary_model=HEALTHY_CANARY, min_canary_requests=10)
    assert result.decision in ("promote", "hold")
    assert all(s.decision != "rollback" for s in result.stages)
    assert result.canary_requests >= 10
    assert _routing(stack)["canary_model"] is None


def test_a_candidate_is_never_routed_without_a_router_in_the_config(
    scaling_run: ScalingOutcome, stack: LocalStackConfig, mlflow: Tracker
) -> None:
    from agent_flywheel.scaling.rollout.routers import RoutingRefused
    from flows.scaling import scaling

    data = _config().model_dump(mode="json")
    data["rollout"].update(router={"kind": "none"}, synthetic_traffic=False)  # the production default
    experiment = mlflow.client.get_experiment_by_name(sizing_experiment(APP)).experiment_id
    runs_before = len(mlflow.client.search_runs([experiment]))
    with pytest.raises(RoutingRefused, match="observe only"):
        scaling(config=ScalingConfig.model_validate(data), candidate_model=HEALTHY_CANARY)
    assert _routing(stack)["canary_model"] is None
    assert len(mlflow.client.search_runs([experiment])) == runs_before  # refused before any run started


def test_a_candidate_is_routed_by_the_router_the_config_names_and_the_routing_restored(
    scaling_run: ScalingOutcome, stack: LocalStackConfig
) -> None:
    from flows.scaling import profile

    httpx.post(f"{stack.url('nim')}/admin/models", json={"id": HEALTHY_CANARY}, timeout=5).raise_for_status()
    outcome = profile(config=_config(), candidate_model=HEALTHY_CANARY)  # router: demo-agent, named explicitly
    report = json.loads(Path(str(outcome.report_json)).read_text())
    assert set(report["llm_by_model"]) == {HEALTHY_CANARY}  # every profiled request was served by the candidate
    assert _routing(stack)["canary_model"] is None


def test_rollout_check_without_canary_or_champion_is_skipped(scaling_run: ScalingOutcome) -> None:
    from flows.rollout_check import rollout_check

    result = rollout_check(config=_config(), workload_id="no-such-workload")
    assert result.decision is None
    assert "no `champion`" in result.skipped


def test_a_load_sweep_split_over_generator_tasks_merges_them_and_matches_their_spans(stack: LocalStackConfig) -> None:
    """``load_sweep.workers``: every level-pass fanned out to ``load-generator`` tasks (threads here; Prefect task
    workers in production), their runs merged, the spans of all their requests matched once."""
    from flows.scaling import load_sweep
    from tasks.sweep import load_generator

    cfg = _config()
    cfg.load_sweep = LoadSweepConfig(
        concurrencies=[2, 5],
        num_passes=1,
        requests_per_level=8,
        warmup_requests=0,
        request_timeout_s=10,
        workers=2,
        worker_runner="threads",
        start_lead_s=1.0,
    )
    outcome = load_sweep(config=cfg, agent_block="local", mlflow_block="local")
    assert outcome.requests == 16 and outcome.errors == 0
    assert outcome.spans["requests"] == outcome.spans["with_spans"] == 16 and outcome.spans["llm_calls"] >= 16
    assert [(row["concurrency"], row["generators"]) for row in outcome.levels] == [(2, 2), (5, 2)]
    requests = pd.read_csv(outcome.requests_csv)
    assert requests.groupby(["concurrency", "generator"]).size().to_dict() == {
        (2, 0): 4,
        (2, 1): 4,
        (5, 0): 5,
        (5, 1): 3,
    }
    assert requests["trace_id"].nunique() == 16
    # a task worker elsewhere gets the block's name, not the block (its credentials stay out of task parameters)
    share = {
        "mode": "closed",
        "level": 0,
        "pass_index": 0,
        "concurrency": 2,
        "rate_rps": None,
        "generator": 1,
        "generators": 2,
        "users": 1,
        "share_rate_rps": None,
        "requests": 3,
        "warmup_requests": 0,
        "seed": None,
        "start_at": 0.0,
    }
    run = load_generator.fn("local", ["Where is my order?"], cfg.load_sweep, share)
    assert (run["generator"], run["share"], len(run["records"])) == (1, 1.0, 3) and run["workflow"]["count"] == 3


def test_rollout_event_payload() -> None:
    from flows.rollout_check import rollout_event

    report = {
        "decision": "rollback",
        "stages": [
            {
                "stage": "canary-5",
                "weight": 0.05,
                "decision": "rollback",
                "reasons": ["error rate 100.00% is above the 1.00% budget beyond doubt"],
                "canary": {"requests": 12, "error_rate": 1.0, "p95_latency_s": None},
            }
        ],
        "not_reached": ["canary-25", "full"],
    }
    event = rollout_event("shop", "m-1b", "m-70b", report, "run-1", "http://mlflow/run-1")
    assert event["event"] == "flywheel.rollout.decided"
    assert event["resource"]["prefect.resource.id"] == "flywheel.app.shop"
    payload = event["payload"]
    assert (payload["decision"], payload["canary_model"], payload["baseline_model"]) == ("rollback", "m-1b", "m-70b")
    assert payload["stages"][0]["canary_error_rate"] == 1.0
    assert payload["not_reached"] == ["canary-25", "full"]
    assert payload["mlflow_run_id"] == "run-1"
    json.dumps(payload)  # an event payload must be plain JSON


# --------------------------------------------------------------------------------------------------
# Sizing accuracy against the simulator's true capacity
