"""The rollout check decides from the observed spans of an agent the project did not write.

The agent (``tests/support/otel_agent.py``) is built from public libraries only and exports OTLP protobuf with
OpenInference attributes to an OTLP receiver writing JSON lines (what ``flywheel otlp serve`` does). It serves two
models the way a platform's canary does: a share of its requests is answered by the canary model instead of the
responder, and only its spans say which. Nothing is asked of it: no admin endpoint, no model in its answers.

- ``flywheel rollout check`` on its spans: a healthy canary is promoted, a canary whose model fails is rolled
  back, each with the traffic split exactly as the agent split it.
- The ``rollout-check`` flow, observe only (the default router): the same verdict, no agent block needed.
- The flow with an ``http-hook`` router (its secret header from a Prefect ``Secret`` block): the platform's hook
  gives the canary each stage's weight while users keep coming, each stage is judged from its own window, and
  the canary is taken out of rotation at the end; a failing canary is rolled back at the stage's first alarm.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agent_flywheel.config import ScalingConfig
from agent_flywheel.scaling.otlp.jsonl import JsonlSink
from agent_flywheel.scaling.otlp.receiver import OtlpReceiver
from agent_flywheel.scaling.rollout.service import load_observed_traces
from cli.main import app
from tests.support.homes import isolated_home
from tests.support.otel_agent import PLANNER, RESPONDER, OtelAgent, StubLLM

pytestmark = pytest.mark.integration

GOOD, BAD = "acme/support-1b-lora", "acme/support-1b-broken"
HEALTHY, FAILING = 120, 60  # requests sent with each canary at half the traffic
SPAN_WAIT_S = 60.0  # generous: the exporter batches, the machine is busy


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Prefect's home and MLflow's store in a temporary directory."""
    with isolated_home(tmp_path_factory.mktemp("rollout-foreign-agent")) as root:
        yield root


@pytest.fixture(scope="module")
def spans_file(home: Path) -> Path:
    return home / "spans" / "spans.jsonl"


@pytest.fixture(scope="module")
def agent(spans_file: Path) -> Iterator[OtelAgent]:
    """The agent, its LLM (the BAD model answers 503) and an OTLP receiver appending to ``spans_file``."""
    delays = {PLANNER: 0.005, RESPONDER: 0.02, GOOD: 0.005, BAD: 0.005}
    sink = JsonlSink(spans_file)
    with StubLLM(delays, failing={BAD}) as llm, OtlpReceiver(sink=sink) as receiver:
        with OtelAgent(llm.url, receiver.endpoint, export_delay_ms=100) as running:
            yield running
        sink.close()


def _send(agent: OtelAgent, count: int, concurrency: int = 6) -> list[int]:
    """``count`` user turns, ``concurrency`` at a time; the status of each answer."""
    with httpx.Client(base_url=agent.url, timeout=30) as http, ThreadPoolExecutor(concurrency) as pool:
        return list(
            pool.map(
                lambda i: http.post("/generate", json={"input_message": f"Where is ORD-{i}?"}).status_code, range(count)
            )
        )


def _wait_for_traces(path: Path, at_least: int) -> None:
    """Until the file holds ``at_least`` traces (the exporter sends in batches)."""
    deadline = threading.Event()
    timer = threading.Timer(SPAN_WAIT_S, deadline.set)
    timer.start()
    try:
        while True:
            traces = load_observed_traces(path)[0] if path.exists() else []
            if len(traces) >= at_least:
                return
            if deadline.wait(0.2):
                raise AssertionError(f"{len(traces)} of {at_least} traces arrived in {SPAN_WAIT_S:.0f} s")
    finally:
        timer.cancel()


@pytest.fixture(scope="module")
def observed(agent: OtelAgent, spans_file: Path) -> Path:
    """The platform gives a healthy canary half the traffic, then a failing one; the agent's spans are the record."""
    agent.route(GOOD, 0.5)
    healthy = _send(agent, HEALTHY)
    agent.route(BAD, 0.5)
    failing = _send(agent, FAILING)
    agent.route(None, 0.0)
    assert healthy == [200] * HEALTHY
    assert failing.count(502) == FAILING // 2 and failing.count(200) == FAILING // 2
    _wait_for_traces(spans_file, HEALTHY + FAILING)
    return spans_file


def _cli_check(spans: Path, canary: str) -> dict[str, Any]:
    args = ["rollout", "check", "--traces", str(spans), "--baseline-model", RESPONDER, "--canary-model", canary]
    result = CliRunner().invoke(app, [*args, "--min-requests", "25", "--json"])
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.stdout)
    return body


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def test_rollout_check_promotes_the_healthy_canary_from_the_agents_spans(observed: Path) -> None:
    body = _cli_check(observed, GOOD)
    assert body["decision"] == "promote", body["reasons"]
    traffic = body["traffic"]
    assert (traffic["canary"], traffic["baseline"]) == (HEALTHY // 2, HEALTHY // 2 + FAILING // 2)
    assert (traffic["unattributed"], traffic["unattributed_failed"]) == (FAILING // 2, FAILING // 2)  # BAD's
    assert traffic["other_models"][PLANNER] == HEALTHY + FAILING
    canary, baseline = body["slis"]["canary"], body["slis"]["baseline"]
    assert canary["workflow"]["error_rate"] == 0 and canary["llm_calls"]["requests"] == HEALTHY // 2
    assert baseline["llm_calls"]["requests"] == HEALTHY // 2 + FAILING // 2
    # the calls' latencies come from the spans alone: each canary request holds one canary call, so the calls'
    # p95 is at most the requests' (an order-statistics fact, whatever a busy machine did to the timings)
    assert 0 < canary["llm_calls"]["p95_latency_s"] <= canary["workflow"]["p95_latency_s"]
    assert baseline["llm_calls"]["p95_latency_s"] > 0


def test_rollout_check_rolls_back_the_canary_whose_model_fails(observed: Path) -> None:
    body = _cli_check(observed, BAD)
    assert body["decision"] == "rollback"
    assert body["traffic"]["canary"] == FAILING // 2
    assert body["slis"]["canary"]["workflow"]["error_rate"] == 1.0
    assert body["slis"]["canary"]["llm_calls"]["error_rate"] == 1.0
    assert any("error rate 100.00%" in r for r in body["reasons"]), body["reasons"]


def test_rollout_check_errors_are_one_line(observed: Path, home: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["rollout", "check", "--traces", str(home / "none.jsonl"), "--canary-model", GOOD])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: cannot read the traces:")
    same = runner.invoke(
        app, ["rollout", "check", "--traces", str(observed), "--baseline-model", GOOD, "--canary-model", GOOD]
    )
    assert same.exit_code == 2 and "same model" in same.stderr
    bad_slo = runner.invoke(
        app, ["rollout", "check", "--traces", str(observed), "--canary-model", GOOD, "--availability", "2"]
    )
    assert bad_slo.exit_code == 2 and bad_slo.stderr.startswith("error: --availability:")
    no_canary = runner.invoke(app, ["rollout", "check", "--traces", str(observed)])
    assert no_canary.exit_code == 2 and "--canary-model" in no_canary.stderr


# --------------------------------------------------------------------------------------------------
# The flow
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_server(home: Path) -> Iterator[None]:
    """A Prefect server and database of this module's own."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def mlflow_block(home: Path, prefect_server: None) -> str:
    from blocks.mlflow_tracking import MlflowTracking

    MlflowTracking(tracking_uri=f"sqlite:///{home / 'mlflow.db'}", ui_url=None).save("rollout-mlflow", overwrite=True)
    return "rollout-mlflow"


def _config(spans: Path, **rollout: Any) -> ScalingConfig:
    return ScalingConfig.model_validate(
        {
            "app": "otel-fixture-agent",
            "spans": {"traces_file": str(spans), "otlp_receiver": None, "wait_s": 2.0},
            "rollout": {"baseline_model": RESPONDER, "slo": {"availability": 0.99, "p95_latency_s": 2.0}, **rollout},
        }
    )


def test_the_flow_observes_only_by_default(observed: Path, mlflow_block: str, home: Path) -> None:
    from agent_flywheel.tracking import Tracker
    from flows.rollout_check import rollout_check

    cfg = _config(observed)
    assert cfg.rollout.router.kind == "none" and not cfg.rollout.synthetic_traffic
    result = rollout_check(
        config=cfg,
        canary_model=GOOD,
        agent_block="no-such-agent",  # observing needs no agent: the block is never loaded
        mlflow_block=mlflow_block,
        min_canary_requests=25,
    )
    assert (result.decision, result.mode, result.baseline_model) == ("promote", "observe", RESPONDER)
    assert (result.requests, result.canary_requests) == (HEALTHY + FAILING // 2, HEALTHY // 2)
    assert [s.stage for s in result.stages] == ["observed"]
    run = Tracker(f"sqlite:///{home / 'mlflow.db'}").client.get_run(str(result.mlflow_run_id))
    assert (run.data.tags["rollout.mode"], run.data.tags["router"]) == ("observe", "none")
    assert run.data.tags["traces_file"] == str(observed) and "agent_url" not in run.data.tags


def test_the_flow_without_spans_is_skipped_with_the_reason(mlflow_block: str) -> None:
    from flows.rollout_check import rollout_check

    cfg = ScalingConfig.model_validate({"app": "otel-fixture-agent", "spans": {"traces_file": None}})
    result = rollout_check(config=cfg, canary_model=GOOD, agent_block="no-such-agent", mlflow_block=mlflow_block)
    assert result.decision is None and "needs the agent's spans" in str(result.skipped)


class _Platform(ThreadingHTTPServer):
    """The platform's routing hook: applies each ``{canary_model, weight}`` to the agent, records it and its auth."""

    def __init__(self, agent: OtelAgent) -> None:
        self.agent = agent
        self.received: list[tuple[str, float, str | None]] = []
        super().__init__(("127.0.0.1", 0), _PlatformHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/canary"


class _PlatformHandler(BaseHTTPRequestHandler):
    server: _Platform

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model, weight = str(body["canary_model"]), float(body["weight"])
        self.server.agent.route(model if weight > 0 else None, weight)
        self.server.received.append((model, weight, self.headers.get("X-Platform-Token")))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def platform(agent: OtelAgent) -> Iterator[_Platform]:
    server = _Platform(agent)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        agent.route(None, 0.0)


@pytest.fixture
def users(agent: OtelAgent) -> Iterator[None]:
    """Users keep coming while the rollout runs (4 at a time)."""
    stop = threading.Event()

    def user() -> None:
        with httpx.Client(base_url=agent.url, timeout=30) as http:
            while not stop.is_set():
                try:
                    http.post("/generate", json={"input_message": "Return ORD-7?"})
                except httpx.HTTPError:
                    pass

    threads = [threading.Thread(target=user, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def _routed(spans: Path, hook: str) -> ScalingConfig:
    return _config(
        spans,
        router={"kind": "http-hook", "url": hook, "auth_header": "X-Platform-Token", "auth_secret_block": "hook-token"},
        stages=[
            {"name": "canary-50", "weight": 0.5, "duration_s": 4},
            {"name": "full", "weight": 1.0, "duration_s": 3},
        ],
        check_interval_s=0.5,
    )


@pytest.fixture(scope="module")
def hook_secret(prefect_server: None) -> str:
    from prefect.blocks.system import Secret

    Secret(value="s3cret-token").save("hook-token", overwrite=True)
    return "s3cret-token"


def test_the_flow_with_an_http_hook_routes_each_stage_and_takes_the_canary_out(
    observed: Path, mlflow_block: str, platform: _Platform, users: None, hook_secret: str
) -> None:
    from flows.rollout_check import rollout_check

    result = rollout_check(
        config=_routed(observed, platform.url), canary_model=GOOD, mlflow_block=mlflow_block, min_canary_requests=10
    )
    assert (result.mode, result.decision) == ("routed", "promote"), [s.reasons for s in result.stages]
    assert [(s.stage, s.weight, s.decision) for s in result.stages] == [
        ("canary-50", 0.5, "promote"),
        ("full", 1.0, "promote"),
    ]
    assert platform.received == [(GOOD, 0.5, hook_secret), (GOOD, 1.0, hook_secret), (GOOD, 0.0, hook_secret)]
    assert platform.agent.canary_model is None  # out of rotation once the check is done
    assert "s3cret" not in str(result.router)


def test_the_flow_rolls_a_failing_canary_back_at_the_first_alarm(
    observed: Path, mlflow_block: str, platform: _Platform, users: None, hook_secret: str
) -> None:
    from flows.rollout_check import rollout_check

    cfg = _routed(observed, platform.url)
    result = rollout_check(config=cfg, canary_model=BAD, mlflow_block=mlflow_block, min_canary_requests=10)
    assert (result.decision, result.stopped_early) == ("rollback", "canary-50")
    assert [s.stage for s in result.stages] == ["canary-50"]
    assert [(m, w) for m, w, _ in platform.received] == [(BAD, 0.5), (BAD, 0.0)]


def test_the_scaling_flow_refuses_a_candidate_under_observe_only(
    observed: Path, agent: OtelAgent, prefect_server: None
) -> None:
    from agent_flywheel.scaling.rollout.routers import RoutingRefused
    from blocks.agent_target import AgentTarget
    from flows.scaling import load_sweep

    AgentTarget(app="otel-fixture-agent", url=agent.url, preset="nat-generate").save("otel-agent", overwrite=True)
    with pytest.raises(RoutingRefused, match="observe only"):  # before the MLflow block is even looked up
        load_sweep(config=_config(observed), agent_block="otel-agent", mlflow_block="none", candidate_model=GOOD)
    assert agent.canary_model is None
