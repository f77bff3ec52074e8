"""Reliability (issue #6): the flywheel under injected faults, cancelled, killed and resumed, fed bad input.

One local stack serves the module. Its NIM gives a fine-tuned adapter a perfect score (``lora_ceiling``
1.0), so the promotion decision does not hinge on which job id a fine-tune got and a run under faults
can be compared with a clean one. Each scenario is a small flywheel run (one candidate, 40 eval
samples) in its own NeMo namespace and its own ``FLYWHEEL_HOME``. What each scenario measures is kept
in ``FIGURES``; with ``FLYWHEEL_RELIABILITY_REPORT=<file>`` the figures are written there as JSON (the
numbers quoted in docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from mlflow.tracking import MlflowClient
from starlette.types import ASGIApp, Receive, Scope, Send
from typer.testing import CliRunner

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.ledger import job_users_prefix, read_job_users
from agent_flywheel.nemo.deployments import managed_fields
from agent_flywheel.nemo.payloads import dms_deployment_body_for
from simulators.agent.traffic import run_traffic
from simulators.settings import LocalStackConfig
from tests.support.flywheel_configs import SMALL, small_flywheel_config

if TYPE_CHECKING:
    from flows.flywheel import FlywheelOutcome

pytestmark = pytest.mark.integration

WORKLOAD, CLIENT = "customer-support", "demo"
TEACHER = "meta/llama-3.3-70b-instruct"
MEDIUM = "meta/llama-3.2-3b-instruct"
PROMOTED = f"{SMALL} (customized-eval)"
REPO = Path(__file__).resolve().parents[2]
FIGURES: dict[str, Any] = {}
LIVE = {"created", "pending", "running"}


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _record(**changes: Any) -> dict[str, Any]:
    """A valid log record of the workload; ``changes`` are applied by dotted path (None deletes)."""
    record: dict[str, Any] = {
        "timestamp": time.time(),
        "workload_id": WORKLOAD,
        "client_id": CLIENT,
        "request": {
            "model": TEACHER,
            "messages": [{"role": "user", "content": "Where is my order ORD-4711?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_order_status",
                        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
                    },
                }
            ],
        },
        "response": {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call-1",
                                "type": "function",
                                "function": {"name": "get_order_status", "arguments": '{"order_id": "ORD-4711"}'},
                            }
                        ],
                    },
                }
            ]
        },
    }
    for path, value in changes.items():
        node: Any = record
        *parents, last = [int(p) if p.isdigit() else p for p in path.split("__")]
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return record


def _deep(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


CALL = "response__choices__0__message__tool_calls__0__function"
#: Records the log store accepts but the flywheel must quarantine, each with the reason it must give.
HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("missing_field", _record(response=None)),
    ("bad_messages", _record(request__messages=[])),
    ("bad_messages", _record(request__messages__0__role="us\u0000er")),
    ("bad_messages", _record(request__messages__0__content={"text": 5})),
    ("arguments_not_json", _record(**{f"{CALL}__arguments": "order_id=ORD-4711"})),
    ("bad_response", _record(response__choices=[])),
    ("bad_response", _record(**{f"{CALL}__name": ""})),
    ("bad_request", _record(request__model=42)),
    ("too_large", _record(request__metadata=_deep(80))),
]


REQUESTS: Counter[str] = Counter()


class CountRequests:
    """ASGI middleware: counts the requests each part of the stack receives (faulted ones included)."""

    def __init__(self, app: ASGIApp, part: str) -> None:
        self.app = app
        self.part = part

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not str(scope.get("path", "")).startswith("/admin"):
            REQUESTS[self.part] += 1
        await self.app(scope, receive, send)


def requests_since(before: Counter[str], part: str) -> int:
    return REQUESTS[part] - before[part]


class LogCounter(logging.Handler):
    """Counts log records whose message matches one of ``patterns`` (retries, injected faults)."""

    def __init__(self, patterns: dict[str, str]) -> None:
        super().__init__(logging.DEBUG)
        self.patterns = {name: re.compile(pattern) for name, pattern in patterns.items()}
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        for name, pattern in self.patterns.items():
            if pattern.search(message):
                self.counts[name] += 1


COUNTED = {
    "agent_flywheel.nemo.http": {"client_retries": r"; retry \d+/\d+ in"},
    "agent_flywheel.nemo.idempotency": {"ambiguous_creates_found": r"failed ambiguously"},
    "agent_flywheel.nemo.poller": {"polls_failed_transiently": r"transient error"},
    "nemo-sim": {"nemo_5xx_injected": r"^fault: answering", "nemo_drops_injected": r"^fault: dropping"},
    "elastic_transport.transport": {"log_store_retries": r"Retrying request"},
    "prefect.task_runs": {"task_retries": r"Retry \d+/\d+ will start"},
}


def counting() -> tuple[LogCounter, Callable[[], None]]:
    """A counter attached to the loggers that report retries and injected faults; call the second to detach."""
    counter = LogCounter({name: pattern for group in COUNTED.values() for name, pattern in group.items()})
    loggers = [logging.getLogger(name) for name in COUNTED]
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(counter)
        if lg.getEffectiveLevel() > logging.INFO:
            lg.setLevel(logging.INFO)

    def detach() -> None:
        for lg, level in saved:
            lg.removeHandler(counter)
            lg.setLevel(level)

    return counter, detach


def run_flywheel(cfg: FlywheelConfig) -> FlywheelOutcome:
    """One in-process flywheel run; the flow raises when the run fails."""
    from flows.flywheel import flywheel

    return asyncio.run(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=cfg))


def nemo_list(stack: LocalStackConfig, path: str, namespace: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"page_size": 100}
    if namespace:
        params["filter[namespace]"] = namespace
    response = httpx.get(f"{stack.url('nemo')}{path}", params=params, timeout=30)
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def job_users_left(home: Path) -> list[str]:
    """The jobs that a run of ``home`` took over and still lists itself as using (its state documents)."""
    from tasks.state_store import state_store

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLYWHEEL_HOME", str(home))  # the home's state prefix
        return state_store().names(job_users_prefix())


def leaked(stack: LocalStackConfig, namespace: str, home: Path) -> dict[str, list[str]]:
    """Everything a finished run left behind: live deployments and jobs, and jobs still listed as taken over."""
    return {
        "deployments": [d["name"] for d in nemo_list(stack, "/v1/deployment/model-deployments", namespace)],
        "customization_jobs": [
            j["id"] for j in nemo_list(stack, "/v1/customization/jobs", namespace) if j["status"] in LIVE
        ],
        "evaluation_jobs": [j["id"] for j in nemo_list(stack, "/v1/evaluation/jobs", namespace) if j["status"] in LIVE],
        "job_users": job_users_left(home),
    }


def assert_nothing_left(stack: LocalStackConfig, namespace: str, home: Path, scenario: str) -> None:
    left = leaked(stack, namespace, home)
    FIGURES.setdefault(scenario, {})["resources_leaked"] = sum(len(v) for v in left.values())
    assert not any(left.values()), left


def set_faults(stack: LocalStackConfig, part: str, faults: dict[str, Any] | None) -> dict[str, Any]:
    """POST (or with None, DELETE) ``/admin/faults`` of a part; returns what it answered."""
    url = f"{stack.url(part)}/admin/faults"
    response = httpx.delete(url, timeout=10) if faults is None else httpx.post(url, json=faults, timeout=10)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def latest_parent_run(tracking_uri: str) -> Any:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"flywheel/{WORKLOAD}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=50)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents[0]


def child_runs(tracking_uri: str, parent_run_id: str) -> list[Any]:
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    return list(runs)


def cached_task_runs(flow_run_id: str) -> list[str]:
    """Names of the task runs of a flow run and its subflows (the candidates) that finished from the cache."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    async def read() -> list[str]:
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
            )
            ids = [flow_run_id, *(str(run.id) for run in children)]
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=200)
        return [r.name for r in runs if r.state is not None and r.state.name == "Cached"]

    return asyncio.run(read())


def scores_by_mode(scores: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["model"], row["eval_mode"]): row for row in scores}


# --------------------------------------------------------------------------------------------------
# Fixtures: the stack, its traffic, and the clean run every fault scenario is compared with
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(start_local_stack: Callable[..., LocalStackConfig]) -> LocalStackConfig:
    return start_local_stack(
        {
            "nim": {"quality": {"lora_ceiling": 1.0, "lora_records_scale": 5}},
            "nemo": {"faults": {"seed": 11}},
            "logserver": {"faults": {"seed": 11}},
        },
        prepare=lambda part, app: app.add_middleware(CountRequests, part=part),
    )


@pytest.fixture(scope="module")
def env(stack: LocalStackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Prefect and MLflow state for the module, the demo traffic, and hostile records in the log index."""
    base = tmp_path_factory.mktemp("reliability")
    monkeypatch = pytest.MonkeyPatch()
    values = {
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    report = run_traffic(stack.url("agent"), requests=300, concurrency=16, seed=3)
    assert report.failed == 0
    assert httpx.post(f"{stack.url('agent')}/admin/flush", timeout=60).status_code == 200
    lines = []
    for number, (_, record) in enumerate(HOSTILE):
        lines += [json.dumps({"index": {"_index": "flywheel", "_id": f"hostile-{number}"}}), json.dumps(record)]
    bulk = httpx.post(
        f"{stack.url('logserver')}/_bulk",
        params={"refresh": "true"},
        content="\n".join(lines) + "\n",
        headers={"content-type": "application/x-ndjson"},
        timeout=30,
    )
    assert bulk.status_code == 200 and not bulk.json()["errors"], bulk.text[:500]
    FIGURES["traffic"] = {"requests": 300, "llm_calls_logged": report.llm_calls, "hostile_records": len(HOSTILE)}
    FIGURES["traffic"]["seconds"] = round(time.monotonic() - started, 1)
    try:
        yield values
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module")
def clean(stack: LocalStackConfig, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference: a run with no fault injected (namespace ``clean``), and its ``home``."""
    home = tmp_path_factory.mktemp("clean-home")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    started = time.monotonic()
    try:
        result = run_flywheel(small_flywheel_config("clean"))
    finally:
        monkeypatch.undo()
    FIGURES["clean"] = {"seconds": round(time.monotonic() - started, 1), "decision": result.promoted}
    return {**result.model_dump(), "home": home}


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    target = os.environ.get("FLYWHEEL_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True, default=str) + "\n")


@pytest.fixture
def home(_isolated_flywheel_home: Path) -> Path:
    """This test's FLYWHEEL_HOME (fresh: its own record cache, task cache and, through its state prefix, its
    own watermarks)."""
    return _isolated_flywheel_home


# --------------------------------------------------------------------------------------------------
# The clean run, bad records, and transient faults
# --------------------------------------------------------------------------------------------------


def test_clean_run_promotes_the_fine_tune_and_quarantines_every_hostile_record(
    clean: dict[str, Any], stack: LocalStackConfig, env: dict[str, str]
) -> None:
    assert clean["outcome"] == "promoted", clean["markdown"]
    assert clean["promoted"] == PROMOTED
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    counts_file = client.download_artifacts(clean["mlflow_run_id"], "datasets/counts.json")
    extraction = json.loads(Path(counts_file).read_text())["extraction"]
    expected = Counter(reason for reason, _ in HOSTILE)
    assert extraction["quarantined"] == dict(expected)
    quarantine_dir = client.download_artifacts(clean["mlflow_run_id"], "quarantine")
    lines = [json.loads(line) for f in Path(quarantine_dir).glob("*.jsonl") for line in f.read_text().splitlines()]
    assert Counter(line["reason"] for line in lines) == expected
    assert all(line["message"].startswith("es:flywheel/hostile-") for line in lines)
    FIGURES["clean"]["records_quarantined"] = sum(expected.values())
    FIGURES["clean"]["records_scanned"] = extraction["scanned"]
    assert_nothing_left(stack, "clean", clean["home"], "clean")


def test_ten_percent_5xx_on_every_nemo_endpoint_gives_the_same_decision(
    clean: dict[str, Any], stack: LocalStackConfig, home: Path
) -> None:
    counter, detach = counting()
    set_faults(stack, "nemo", {"error_rate": {"/": 0.1}, "seed": 5})
    started, before = time.monotonic(), REQUESTS.copy()
    try:
        result = run_flywheel(small_flywheel_config("faulty"))
    finally:
        set_faults(stack, "nemo", None)
        detach()
    FIGURES["nemo_5xx_10pct"] = {
        "seconds": round(time.monotonic() - started, 1),
        "nemo_requests": requests_since(before, "nemo"),
        **counter.counts,
    }
    assert counter.counts["nemo_5xx_injected"] > 0  # the faults were there ...
    assert counter.counts["client_retries"] >= counter.counts["nemo_5xx_injected"]  # ... and each was retried
    assert result.promoted == clean["promoted"] == PROMOTED
    faulty, reference = scores_by_mode(result.scores), scores_by_mode(clean["scores"])
    assert faulty.keys() == reference.keys()
    for key in [(TEACHER, "base-eval"), (SMALL, "base-eval"), (SMALL, "icl-eval")]:
        assert faulty[key] == reference[key], key  # same datasets, same models: not one sample lost or changed
    assert_nothing_left(stack, "faulty", home, "nemo_5xx_10pct")


def test_dropped_connections_slow_services_late_adapters_and_a_flaky_log_store_are_survived(
    clean: dict[str, Any], stack: LocalStackConfig, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With seed 4 the log store fails the first request 4 times in a row: more than the Elasticsearch
    client retries, so the extraction task itself is retried (after 1 s here; 5 s in production)."""
    from tasks.extract import extract_logs

    monkeypatch.setattr(extract_logs, "retry_delay_seconds", [1, 1])
    counter, detach = counting()
    set_faults(
        stack,
        "nemo",
        {"drop_rate": {"/": 0.05}, "latency_s": {"/": 0.01}, "adapter_visible_after_s": 1500, "seed": 3},
    )
    set_faults(stack, "logserver", {"error_rate": 0.4, "error_status": 503, "latency_s": 0.01, "seed": 4})
    started, before = time.monotonic(), REQUESTS.copy()
    try:
        result = run_flywheel(small_flywheel_config("flaky"))
        injected = httpx.get(f"{stack.url('logserver')}/admin/faults").json()["injected"]
    finally:
        set_faults(stack, "logserver", None)
        set_faults(stack, "nemo", None)
        detach()
    FIGURES["flaky"] = {
        "seconds": round(time.monotonic() - started, 1),
        "nemo_requests": requests_since(before, "nemo"),
        "log_store_requests": requests_since(before, "logserver"),
        "log_store_errors_injected": injected.get("error", 0),
        **counter.counts,
    }
    assert counter.counts["nemo_drops_injected"] > 0
    assert counter.counts["task_retries"] >= 1
    assert result.promoted == PROMOTED
    assert_nothing_left(stack, "flaky", home, "flaky")


def test_log_store_errors_are_retried_by_the_client(stack: LocalStackConfig, home: Path, env: dict[str, str]) -> None:
    """Extraction alone under a log store that answers 429 to 30% of requests: the same records come back."""
    from agent_flywheel.logstore.reader import extract
    from agent_flywheel.records.quarantine import QuarantineWriter
    from blocks.log_store import LogStore

    store = LogStore(url=stack.url("logserver"), index="flywheel")

    def read() -> tuple[int, dict[str, int]]:
        es = store.get_client()
        try:
            with QuarantineWriter(home / "q.jsonl") as quarantine:
                result = extract(
                    es, "flywheel", workload_id=WORKLOAD, client_id=CLIENT, page_size=50, quarantine=quarantine
                )
        finally:
            es.close()
        return len(result.records), result.quarantined

    for bad in ({"error_status": 404}, {"error_rate": 2}, {"latency_s": -1}, {"bogus": 1}, ["refuse"]):
        answer = httpx.post(f"{stack.url('logserver')}/admin/faults", json=bad, timeout=10)
        assert answer.status_code == 422, (bad, answer.text)
    assert httpx.get(f"{stack.url('logserver')}/admin/faults").json()["error_rate"] == 0  # nothing half-applied
    reference = read()
    counter, detach = counting()
    set_faults(stack, "logserver", {"error_rate": 0.3, "error_status": 429, "seed": 2})
    try:
        under_faults = read()
        injected = httpx.get(f"{stack.url('logserver')}/admin/faults").json()["injected"]
    finally:
        set_faults(stack, "logserver", None)
        detach()
    FIGURES["log_store_429_30pct"] = {"errors_injected": injected.get("error", 0), **counter.counts}
    assert injected.get("error", 0) > 0
    assert under_faults == reference


# --------------------------------------------------------------------------------------------------
# Permanent faults: the run fails, says where and what to do, leaves nothing running, loses nothing
# --------------------------------------------------------------------------------------------------


def test_a_failed_fine_tune_fails_the_run_and_a_rerun_redoes_only_what_failed(
    stack: LocalStackConfig, home: Path, env: dict[str, str]
) -> None:
    from flows.flywheel import FlywheelRunError

    set_faults(stack, "nemo", {"customization_failed": True})
    try:
        with pytest.raises(FlywheelRunError) as failure:
            run_flywheel(small_flywheel_config("refit"))
    finally:
        set_faults(stack, "nemo", None)
    message = str(failure.value)
    assert "NeMo Customizer: customization job cust-" in message
    assert "What to do:" in message and "container-logs" in message
    assert "3 finished evaluations are recorded in MLflow" in message
    assert_nothing_left(stack, "refit", home, "customization_failed")
    failed_parent = latest_parent_run(env["MLFLOW_TRACKING_URI"])
    assert failed_parent.info.status == "FAILED"
    recorded = {r.data.tags["eval_mode"] for r in child_runs(env["MLFLOW_TRACKING_URI"], failed_parent.info.run_id)}
    assert recorded == {"base-eval", "icl-eval", "customized-eval"}
    evaluations_before = len(nemo_list(stack, "/v1/evaluation/jobs", "refit"))
    assert evaluations_before == 3

    started = time.monotonic()
    result = run_flywheel(small_flywheel_config("refit"))
    rerun_seconds = round(time.monotonic() - started, 1)
    assert result.promoted == PROMOTED
    assert len(nemo_list(stack, "/v1/evaluation/jobs", "refit")) == evaluations_before + 1  # only customized-eval
    jobs = nemo_list(stack, "/v1/customization/jobs", "refit")
    assert sorted(j["status"] for j in jobs) == ["completed", "failed"]
    flow_run_id = (
        MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(result.mlflow_run_id).data.tags["prefect.flow_run_id"]
    )
    cached = cached_task_runs(flow_run_id)
    assert sum(name.startswith("evaluate") for name in cached) == 3
    assert_nothing_left(stack, "refit", home, "customization_failed")
    FIGURES["customization_failed"].update(
        {"evaluations_reused_from_cache": len(cached), "rerun_seconds": rerun_seconds, "message": message}
    )


def test_not_enough_gpus_is_explained_and_the_pending_job_cancelled(stack: LocalStackConfig, home: Path) -> None:
    from flows.flywheel import FlywheelRunError

    set_faults(stack, "nemo", {"customization_not_enough_resources": True})
    try:
        with pytest.raises(FlywheelRunError) as failure:
            run_flywheel(small_flywheel_config("gpus", evaluation_config={"timeout_s": 3}))
    finally:
        set_faults(stack, "nemo", None)
    message = str(failure.value)
    assert "NeMo Customizer: customization job cust-" in message
    assert "NotEnoughResources" in message and "free GPU" in message
    jobs = nemo_list(stack, "/v1/customization/jobs", "gpus")
    assert [j["status"] for j in jobs] == ["cancelled"]
    assert_nothing_left(stack, "gpus", home, "not_enough_resources")
    FIGURES["not_enough_resources"]["message"] = message


def test_an_adapter_nim_never_serves_fails_its_step_without_waiting_out_the_stall_limit(
    stack: LocalStackConfig, home: Path
) -> None:
    """The fine-tune completes but NIM never lists its adapter (here: only after ~4 simulated months): the
    step fails once the serve grace (here the 20 s stall timeout) has passed, saying what to check."""
    from flows.flywheel import FlywheelRunError

    set_faults(stack, "nemo", {"adapter_visible_after_s": 10_000_000})
    try:
        with pytest.raises(FlywheelRunError) as failure:
            run_flywheel(small_flywheel_config("unserved", evaluation_config={"timeout_s": 20}))
    finally:
        set_faults(stack, "nemo", None)
    message = str(failure.value)
    assert f"NIM: adapter unserved/customized-{SMALL.replace('/', '-')}@cust-" in message
    assert "was not served within 20 s of its fine-tune completing" in message
    assert "What to do:" in message and "LoRA adapters" in message
    assert [j["status"] for j in nemo_list(stack, "/v1/customization/jobs", "unserved")] == ["completed"]
    assert_nothing_left(stack, "unserved", home, "adapter_never_served")
    FIGURES["adapter_never_served"]["message"] = message


def test_a_failed_deployment_and_failed_evaluations_are_named_and_cleaned_up(
    stack: LocalStackConfig, home: Path
) -> None:
    from flows.flywheel import FlywheelRunError

    set_faults(stack, "nemo", {"deployment_failed": True, "evaluation_failed": True})
    try:
        with pytest.raises(FlywheelRunError) as failure:
            run_flywheel(small_flywheel_config("broken"))
    finally:
        set_faults(stack, "nemo", None)
    message = str(failure.value)
    assert f"NeMo Deployment Management: deployment broken/{SMALL.replace('/', '-')} of {SMALL}" in message
    assert "the deployment was deleted" in message
    assert "NeMo Evaluator: evaluation job eval-" in message and f"(base-eval of {TEACHER})" in message
    assert_nothing_left(stack, "broken", home, "deployment_and_evaluation_failed")
    FIGURES["deployment_and_evaluation_failed"]["message"] = message


def test_a_log_store_that_refuses_fails_the_run_in_one_clear_message(
    stack: LocalStackConfig, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.extract import extract_logs

    monkeypatch.setattr(extract_logs, "retry_delay_seconds", [0.1, 0.1])
    set_faults(stack, "logserver", {"refuse": True})
    try:
        with pytest.raises(RuntimeError) as failure:
            run_flywheel(small_flywheel_config("refused"))
        refused = httpx.get(f"{stack.url('logserver')}/admin/faults").json()["injected"]["refused"]
    finally:
        set_faults(stack, "logserver", None)
    message = str(failure.value)
    assert message.startswith(f"Log store (Elasticsearch at {stack.url('logserver')}, index 'flywheel')")
    assert "503" in message and "What to do:" in message and "nothing was lost" in message
    from tasks.watermarks import watermark_store

    assert watermark_store().get(WORKLOAD, CLIENT) is None
    assert nemo_list(stack, "/v1/evaluation/jobs", "refused") == []
    FIGURES["log_store_refuses"] = {"requests_refused": refused, "message": message}


# --------------------------------------------------------------------------------------------------
# Cancelled, killed, resumed
# --------------------------------------------------------------------------------------------------


def test_cancelling_a_run_stops_the_fine_tune_the_evaluations_and_the_deployment(
    stack: LocalStackConfig, home: Path
) -> None:
    from flows.flywheel import flywheel

    cfg = small_flywheel_config("cancel", training_config={"epochs": 40})

    async def cancel_when_training() -> str:
        run = asyncio.create_task(flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=cfg))
        async with httpx.AsyncClient(base_url=stack.url("nemo")) as nemo:
            while not run.done():
                jobs = (await nemo.get("/v1/customization/jobs", params={"filter[namespace]": "cancel"})).json()
                if any(j["status"] == "running" for j in jobs["data"]):
                    break
                await asyncio.sleep(0.05)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        return "cancelled"

    asyncio.run(cancel_when_training())
    jobs = nemo_list(stack, "/v1/customization/jobs", "cancel")
    assert [j["status"] for j in jobs] == ["cancelled"]
    assert_nothing_left(stack, "cancel", home, "cancelled")
    evaluations = Counter(j["status"] for j in nemo_list(stack, "/v1/evaluation/jobs", "cancel"))
    FIGURES["cancelled"].update({"customization_jobs_cancelled": 1, "evaluation_jobs": dict(evaluations)})


def _set_clock(stack: LocalStackConfig, speed: float) -> None:
    httpx.post(f"{stack.url('nemo')}/admin/clock", json={"speed": speed}, timeout=10).raise_for_status()


def _wait(condition: Callable[[], Any], timeout_s: float, what: str, process: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"the flywheel exited ({process.returncode}) before {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _complete_results(directory: Path, prefix: str) -> int:
    """How many of Prefect's result records named ``prefix*`` are whole: a file appears before it is all written,
    and one cut short by the kill is no cache hit for the next run."""
    whole = 0
    for path in directory.glob(f"{prefix}*"):
        try:
            json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        whole += 1
    return whole


def test_a_killed_run_resumes_without_a_second_fine_tune_or_evaluation(
    clean: dict[str, Any], stack: LocalStackConfig, home: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    config_file = tmp_path / "flywheel.yaml"
    # 40 epochs: ~6,000 simulated seconds of training, ~5 minutes at clock speed 20 (below) and ~6 s at 1000
    resume = small_flywheel_config("resume", training_config={"epochs": 40})
    config_file.write_text(yaml.safe_dump(resume.model_dump(mode="json", exclude_defaults=True)))
    sub_env = {
        **os.environ,
        "FLYWHEEL_HOME": str(home),
        "PREFECT_API_URL": os.environ["PREFECT_API_URL"],  # the session's server (tests/conftest.py)
        "PREFECT_LOGGING_LEVEL": "INFO",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    command = [sys.executable, "-m", "cli.main", "run", "--workload-id", WORKLOAD, "--client-id", CLIENT]
    command += ["--config", str(config_file)]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            command, cwd=REPO, env=sub_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def jobs(path: str) -> list[dict[str, Any]]:
        return nemo_list(stack, path, "resume")

    started = time.monotonic()
    _set_clock(stack, 20)  # the evaluations finish long before the fine-tune, however busy the machine is
    first = start()
    try:
        job = _wait(
            lambda: next((j for j in jobs("/v1/customization/jobs") if j["status"] == "running"), None),
            300,
            "the fine-tune to run",
            first,
        )
        _wait(
            lambda: _complete_results(home / "results", "evaluate-") >= 3,
            300,
            "the three evaluations to finish and be cached",
            first,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    _set_clock(stack, 0.001)  # frozen: the fine-tune is still running when the second run looks for it
    first_output = first.stdout.read() if first.stdout else ""
    assert first.returncode == -signal.SIGKILL, first_output[-2000:]
    assert [j["status"] for j in jobs("/v1/customization/jobs")] == ["running"]
    # One more thing the dead run "left": a deployment of a model the next run does not evaluate at all.
    dead_run = job["custom_fields"]["flywheel_run_id"]  # the platform says whose it is: no file does
    assert json.loads((home / "runs" / dead_run / "owner.json").read_text())["pid"] == first.pid
    extra = {**dms_deployment_body_for(MEDIUM, "resume"), "custom_fields": managed_fields(dead_run)}
    httpx.post(f"{stack.url('nemo')}/v1/deployment/model-deployments", json=extra, timeout=10).raise_for_status()
    orphaned = leaked(stack, "resume", home)
    assert len(orphaned["deployments"]) == 2 and orphaned["customization_jobs"] == [job["id"]]

    second = start()
    try:
        from tasks.state_store import state_store

        def adopted() -> bool:
            return bool(read_job_users(state_store(), job["id"]))  # this test's home: the runs' state prefix

        _wait(adopted, 300, "the second run to take over the running fine-tune", second)
        _set_clock(stack, 1000)
        output, _ = second.communicate(timeout=600)
    finally:
        _set_clock(stack, 1000)
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, output[-3000:]
    assert "decision: promoted" in output
    customizations = jobs("/v1/customization/jobs")
    assert [(j["id"], j["status"]) for j in customizations] == [(job["id"], "completed")]
    evaluations = jobs("/v1/evaluation/jobs")
    assert len(evaluations) == 4  # teacher base, small base, small icl (from the killed run), customized
    cached = re.findall(r"Task run '(evaluate-[^']*)' - Finished in state Cached", output)
    assert len(cached) == 3, output[-3000:]
    assert f"stopped deployment resume/{extra['name']}" in output  # reaped: nobody would ever tear it down
    assert_nothing_left(stack, "resume", home, "killed_and_resumed")
    FIGURES["killed_and_resumed"].update(
        {
            "runs_resumed": 1,
            "customization_jobs": len(customizations),
            "evaluation_jobs": len(evaluations),
            "evaluations_reused_from_cache": len(cached),
            "resources_adopted": len(re.findall(r"this run takes it over|exists, joined", output)),
            "orphans_reaped": 1,
            "seconds": round(time.monotonic() - started, 1),
        }
    )


# --------------------------------------------------------------------------------------------------
# Bad configs and bad command lines: one clear line, never a traceback
# --------------------------------------------------------------------------------------------------


BAD_CONFIGS = {
    "missing file": None,
    "not YAML": "nims: [\n  - model_name: x\n",
    "unknown key": "nims:\n  - model_name: m\nnimz: []\n",
    "wrong type": "nims:\n  - model_name: m\ndata_split_config:\n  eval_size: many\n",
    "inconsistent": "nims:\n  - model_name: m\ndata_split_config:\n  limit: 5\n  min_total_records: 50\n",
    "not a mapping": "- just\n- a list\n",
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_a_bad_config_is_one_line_not_a_traceback(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.main import app

    for key in ("PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREFECT_SERVER_ANALYTICS_ENABLED"):  # the CLI sets defaults
        monkeypatch.setenv(key, os.environ.get(key, str(tmp_path / key.lower())))

    path = tmp_path / "flywheel.yaml"
    text = BAD_CONFIGS[case]
    if text is not None:
        path.write_text(text)
    result = CliRunner().invoke(app, ["run", "--workload-id", "w", "--client-id", "c", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    FIGURES.setdefault("bad_configs", {})[case] = lines[0]


@pytest.mark.parametrize(
    "args",
    [["run", "--client-id", "c"], ["traffic", "--requests", "0"], ["run", "--workload-id", "w", "--bogus"]],
    ids=["missing option", "out of range", "unknown option"],
)
def test_bad_command_line_arguments_are_explained_without_a_traceback(args: list[str]) -> None:
    from cli.main import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert re.search(r"Missing option|Invalid value|No such option", result.output), result.output


def test_hostile_records_strategy_is_exercised() -> None:
    """The hostile records above really are what the flywheel must quarantine (guards the fixture itself)."""
    from agent_flywheel.records.quarantine import Quarantined
    from agent_flywheel.records.validation import validate_record

    for reason, record in HOSTILE:
        result = validate_record(copy.deepcopy(record), source="fixture", expected_workload_id=WORKLOAD)
        assert isinstance(result, Quarantined) and result.reason == reason
