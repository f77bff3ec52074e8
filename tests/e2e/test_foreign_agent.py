"""The scaling lifecycle against an agent the project did not write (``tests/support/otel_agent.py``).

The agent is built only from public libraries: a NAT-like ``POST /generate`` (no ``llm_calls``, no trace id in its
answers, none of the demo agent's endpoints), two sequential model calls per request with different models, and
OpenTelemetry SDK spans with OpenInference names, exported as OTLP protobuf. Nothing about it changes between
the runs below:

- by the command line: ``flywheel otlp serve`` (a real process) receives its spans; ``profile run``, ``sweep
  run`` and ``sizing calc`` read them from the file;
- by the flows: ``scaling`` with the spans going to the receiver the flow starts on a configured port, and
  ``profile`` reading the file ``flywheel otlp serve`` writes.

What must hold: every request profiled, every LLM call counted per model, the critical path giving the LLM calls
the share of request time they really take (they are sequential), the sweep's per-LLM-call figures from spans,
and a sizing answer.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from agent_flywheel.config import ScalingConfig
from cli.main import app
from simulators.threaded import free_port
from tests.support.homes import isolated_home
from tests.support.otel_agent import PLANNER, RESPONDER, OtelAgent, StubLLM

pytestmark = pytest.mark.integration

REQUESTS = 6


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prefect's home and MLflow's store in a temporary directory."""
    with isolated_home(tmp_path_factory.mktemp("foreign-agent")) as root:
        yield root


@pytest.fixture(scope="module")
def llm() -> Iterator[StubLLM]:
    # the responder is ten times slower than the planner: it is the bottleneck by any clock
    with StubLLM({PLANNER: 0.02, RESPONDER: 0.2}) as server:
        yield server


@pytest.fixture(scope="module")
def otlp_serve(home: Path) -> Iterator[tuple[str, Path]]:
    """``flywheel otlp serve`` in its own process: (its endpoint, the file it writes)."""
    port, out = free_port(), home / "served" / "spans.jsonl"
    command = [sys.executable, "-m", "cli.main", "otlp", "serve", "--port", str(port), "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{endpoint}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"otlp serve did not start: {process.communicate()[1]}") from None
                time.sleep(0.2)
        yield endpoint, out
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.fixture(scope="module")
def served_agent(llm: StubLLM, otlp_serve: tuple[str, Path]) -> Iterator[OtelAgent]:
    """The agent, exporting to ``flywheel otlp serve``."""
    with OtelAgent(llm.url, otlp_serve[0]) as agent:
        yield agent


@pytest.fixture(scope="module")
def inputs_file(home: Path) -> Path:
    path = home / "inputs.jsonl"
    questions = ["Where is ORD-1?", "Return ORD-2?", "Refund ORD-3?"]
    path.write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    return path


def _expected_llm_share(documents: list[dict[str, Any]]) -> tuple[float, int]:
    """From the raw OTLP documents, independently of the profiler: LLM time over request time (the calls are
    sequential and inside the request), and the number of LLM spans."""
    spans = [s for d in documents for rs in d["resourceSpans"] for sc in rs["scopeSpans"] for s in sc["spans"]]

    def seconds(s: dict[str, Any]) -> float:
        return (int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])) / 1e9

    def kind(s: dict[str, Any]) -> str:
        return next(a["value"]["stringValue"] for a in s["attributes"] if a["key"] == "openinference.span.kind")

    llm = [seconds(s) for s in spans if kind(s) == "LLM"]
    roots = [seconds(s) for s in spans if kind(s) == "AGENT"]
    return sum(llm) / sum(roots), len(llm)


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def test_profile_run_counts_every_llm_call_and_finds_the_bottleneck(
    served_agent: OtelAgent, otlp_serve: tuple[str, Path], inputs_file: Path, home: Path
) -> None:
    out = home / "cli-profile"
    args = ["profile", "run", "--agent-url", served_agent.url, "--preset", "nat-generate"]
    args += ["--inputs", str(inputs_file), "--traces", str(otlp_serve[1]), "--requests", str(REQUESTS)]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("requests", "failed", "traces", "without_spans", "source")} == {
        "requests": REQUESTS,
        "failed": 0,
        "traces": REQUESTS,
        "without_spans": 0,
        "source": "traces-file",
    }
    assert report["llm"]["count"] == 2 * REQUESTS
    assert {m: v["count"] for m, v in report["llm_by_model"].items()} == {PLANNER: REQUESTS, RESPONDER: REQUESTS}
    assert report["repaired_spans"] == 0
    steps = {s["name"]: s for s in report["steps"]}
    assert steps[f"ChatOpenAI {RESPONDER}"]["kind"] == "llm" and steps["lookup_order"]["kind"] == "tool"
    top = max(report["steps"], key=lambda s: s["critical_path_share"])
    assert top["name"] == f"ChatOpenAI {RESPONDER}" and top["name"] in report["bottleneck"]
    documents = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    share, spans = _expected_llm_share(documents)
    assert spans == 2 * REQUESTS
    llm_share = sum(s["critical_path_share"] for s in report["steps"] if s["kind"] == "llm")
    assert llm_share == pytest.approx(share, abs=1e-6)
    assert json.loads((out / "profile.json").read_text())["traces"] == REQUESTS


def test_sweep_run_then_sizing_calc(
    served_agent: OtelAgent, otlp_serve: tuple[str, Path], inputs_file: Path, home: Path
) -> None:
    out = home / "cli-sweep"
    args = ["sweep", "run", "--agent-url", served_agent.url, "--preset", "nat-generate", "--inputs", str(inputs_file)]
    args += ["--traces", str(otlp_serve[1]), "--concurrency", "1,2", "--passes", "2", "--requests-per-level", "4"]
    result = CliRunner().invoke(app, [*args, "--warmup", "1", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    sweep = json.loads(result.stdout)
    assert sweep["spans"] == {"requests": 16, "with_spans": 16, "without_spans": 0, "llm_calls": 32}
    for level in sweep["levels"]:
        assert level["requests"] == 8 and level["error_rate"] == 0
        assert {m: v["count"] for m, v in level["llm_by_model"].items()} == {PLANNER: 8, RESPONDER: 8}
        w, by_model = level["workflow"], level["llm_by_model"]
        assert w["p50_s"] <= w["p95_s"] <= w["p99_s"]
        assert by_model[RESPONDER]["p95_s"] < w["p95_s"]  # a call is part of its request
    requests = pd.read_csv(out / "requests.csv")
    assert requests["llm_calls"].eq(2).all() and requests["trace_id"].str.len().eq(32).all()
    calls = pd.read_csv(out / "llm_calls.csv")
    assert sorted(calls["model"].unique()) == sorted([PLANNER, RESPONDER]) and len(calls) == 32
    targets = ["--target-workflow-p95", "30", "--target-users", "10", "--test-gpus", "1", "--bootstrap-samples", "100"]
    sized = CliRunner().invoke(app, ["sizing", "calc", "--sweep", str(out / "requests.csv"), *targets, "--json"])
    assert sized.exit_code == 0, sized.output
    answer = json.loads(sized.stdout)
    # 8 requests a level bound no p95 from above at 90% confidence: the interval says so instead of guessing
    assert answer["gpus"] >= 1 and answer["gpus_low"] is None and answer["interval_notes"], answer
    assert answer["gpus_high"] is None or answer["gpus"] <= answer["gpus_high"]


def test_sweep_run_over_generator_processes_matches_every_processs_spans_once(
    served_agent: OtelAgent, otlp_serve: tuple[str, Path], inputs_file: Path, home: Path
) -> None:
    out = home / "cli-sweep-processes"
    args = ["sweep", "run", "--agent-url", served_agent.url, "--preset", "nat-generate", "--inputs", str(inputs_file)]
    args += ["--traces", str(otlp_serve[1]), "--concurrency", "3", "--passes", "1", "--requests-per-level", "6"]
    result = CliRunner().invoke(app, [*args, "--warmup", "0", "--processes", "2", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    sweep = json.loads(result.stdout)
    assert sweep["spans"] == {"requests": 6, "with_spans": 6, "without_spans": 0, "llm_calls": 12}
    (level,) = sweep["levels"]
    assert level["requests"] == 6 and {m: v["count"] for m, v in level["llm_by_model"].items()} == {
        PLANNER: 6,
        RESPONDER: 6,
    }
    assert [(g["generator"], g["share"], g["requests"]) for g in level["generators"]] == [(0, 2.0, 4), (1, 1.0, 2)]
    requests = pd.read_csv(out / "requests.csv")
    assert requests.groupby("generator").size().to_dict() == {0: 4, 1: 2} and requests["llm_calls"].eq(2).all()


def test_profile_run_without_a_span_source_is_one_line(served_agent: OtelAgent) -> None:
    result = CliRunner().invoke(app, ["profile", "run", "--agent-url", served_agent.url, "--preset", "nat-generate"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: no span source")
    bad = CliRunner().invoke(
        app, ["profile", "run", "--agent-url", served_agent.url, "--preset", "openai", "--traces", "x"]
    )
    assert bad.exit_code == 2 and "{model}" in bad.stderr
    wrong = CliRunner().invoke(
        app,
        ["profile", "run", "--agent-url", served_agent.url, "--preset", "nat-chat", "--traces", "x", "--requests", "2"],
    )
    assert wrong.exit_code == 2  # the agent has no /chat: every request fails, said in one line
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: every request failed; first: request 0: http_404")


# --------------------------------------------------------------------------------------------------
# The flows
# --------------------------------------------------------------------------------------------------


def _config(**spans: Any) -> ScalingConfig:
    return ScalingConfig.model_validate(
        {
            "app": "otel-fixture-agent",
            "spans": {"wait_s": 15, **spans},
            "profile": {"num_requests": REQUESTS},
            "load_sweep": {
                "concurrencies": [1, 2, 4],
                "num_passes": 1,
                "requests_per_level": 8,
                "warmup_requests": 1,
                "request_timeout_s": 10,
            },
            "sizing": {"target_users": 20, "target_workflow_p95_s": 30, "bootstrap_samples": 100},
        }
    )


@pytest.fixture(scope="module")
def prefect_server(home: Path) -> Iterator[None]:
    """A Prefect server and database of this module's own, so its flow runs and artifacts (``sizing-report``, ...)
    are never seen by another module's queries."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def mlflow_block(home: Path, prefect_server: None) -> str:
    """An MLflow block saved under a name of the test's own (nothing here is the local stack)."""
    from blocks.mlflow_tracking import MlflowTracking

    MlflowTracking(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", ui_url=None).save("otel-mlflow", overwrite=True)
    return "otel-mlflow"


def test_the_scaling_flow_with_spans_sent_to_its_configured_receiver(llm: StubLLM, mlflow_block: str) -> None:
    from blocks.agent_target import AgentTarget
    from flows.scaling import scaling

    port = free_port()
    with OtelAgent(llm.url, f"http://127.0.0.1:{port}") as agent:  # OTEL_EXPORTER_OTLP_ENDPOINT, in effect
        AgentTarget(app="otel-fixture-agent", url=agent.url, preset="nat-generate").save("otel-agent", overwrite=True)
        outcome = scaling(
            config=_config(otlp_receiver={"host": "127.0.0.1", "port": port}),
            agent_block="otel-agent",
            mlflow_block=mlflow_block,
        )
    profile = outcome.profile
    assert (profile.requests, profile.failed, profile.traces, profile.source) == (
        REQUESTS,
        0,
        REQUESTS,
        "otlp-receiver",
    )
    assert profile.summary["llm_calls_per_workflow"] == 2 and profile.summary["llm"]["count"] == 2 * REQUESTS
    assert RESPONDER in profile.summary["bottleneck"]
    assert outcome.sweep.spans == {"requests": 24, "with_spans": 24, "without_spans": 0, "llm_calls": 48}
    assert [row["concurrency"] for row in outcome.sweep.levels] == [1, 2, 4]
    assert all(RESPONDER in row["llm_p95_s_by_model"] for row in outcome.sweep.levels)
    sized = outcome.sizing  # 8 requests a level: no upper bound on a p95, so no lower bound on the GPUs
    assert sized["gpus"] >= 1 and sized["gpus_low"] is None and sized["interval_notes"], sized
    assert sized["gpus_high"] is None or sized["gpus"] <= sized["gpus_high"]


def test_the_profile_flow_reading_the_file_otlp_serve_writes(
    served_agent: OtelAgent, otlp_serve: tuple[str, Path], mlflow_block: str
) -> None:
    from blocks.agent_target import AgentTarget
    from flows.scaling import profile

    AgentTarget(app="otel-fixture-agent", url=served_agent.url, preset="nat-generate").save(
        "otel-served", overwrite=True
    )
    cfg = _config(otlp_receiver=None, traces_file=str(otlp_serve[1]))
    outcome = profile(config=cfg, agent_block="otel-served", mlflow_block=mlflow_block)
    assert (outcome.requests, outcome.traces, outcome.source) == (REQUESTS, REQUESTS, "traces-file")
    report = json.loads(Path(str(outcome.report_json)).read_text())
    assert report["llm"]["count"] == 2 * REQUESTS and report["without_spans"] == 0
