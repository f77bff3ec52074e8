"""Issue #16's "Done when" for producers the project did not write, on the whole flywheel flow (local stack).

One local stack whose NIM proxy also serves the model the producers logged (``meta/llama-3.1-70b-instruct``, the
teacher of their records), and the official ``elasticsearch`` client writing as the producers do:

1. NeMo Agent Toolkit's data-flywheel exporter writes its records (``tests/support/nat_records.py``) into an index
   it does not create: Elasticsearch's dynamic mapping makes ``workload_id``/``client_id`` ``text`` with a
   ``.keyword`` sub-field and ``timestamp`` a ``long``. The flywheel, pointed at that index, reads exactly the
   valid records (the self-contradicting ones quarantined and counted) under NAT's workload id ``"<workflow>"``
   and reaches a decision;
2. the blueprint creates its index (``timestamp`` a ``date`` holding epoch seconds) and writes its records; a first
   run reaches a decision; more records are added with ``flywheel logs import``; a second run reads exactly the
   new ones and reaches a decision;
3. the blueprint's own ``config.yaml`` (``tests/support/blueprint_config.yaml``), loaded as is, on the blueprint's
   records: refused at extraction, before anything exists on the platform, by a message naming the teacher filter,
   the models seen and the configuration line to change; with that one line added, refused by the preflight,
   naming its remote judge and embedding model, which are not reachable from here. No job in either case.

The configs are the smallest that reach a decision: one candidate without fine-tuning (base-eval and icl-eval
against the teacher's base-eval), an evaluation set of 8 (below the gate's minimum for a meaningful decision,
which the build warns about; a decision is still made).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from elasticsearch import Elasticsearch, helpers
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from agent_flywheel.config import FlywheelConfig, parse_config
from agent_flywheel.nemo.names import workload_label
from agent_flywheel.paths import default_mlflow_uri
from cli.main import app
from simulators.settings import LocalStackConfig
from simulators.threaded import free_port
from tests.support.blueprint_records import AIVA, BLUEPRINT_INDEX_BODY
from tests.support.nat_records import (
    NAT_CLIENT_ID,
    NAT_MODEL,
    NAT_WORKLOAD_ID,
    nat_answer,
    nat_empty_answer,
    nat_lost_tool_call,
    nat_tool_call,
)

if TYPE_CHECKING:
    from flows.flywheel import FlywheelOutcome

pytestmark = pytest.mark.integration

BLUEPRINT_CONFIG = Path(__file__).parents[1] / "support" / "blueprint_config.yaml"
PRODUCERS_MODEL = AIVA["request"]["model"]  # the blueprint's example records and NAT's: meta/llama-3.1-70b-instruct
DEFAULT_TEACHER, EMBEDDER = "meta/llama-3.3-70b-instruct", "nvidia/llama-3.2-nv-embedqa-1b-v2"
SMALL = "meta/llama-3.2-1b-instruct"
NAT_INDEX = "nat-traffic"  # the index NAT's exporter is configured to write to; nobody creates it
BLUEPRINT_INDEX = "flywheel"  # the local LogStore block's index
DECISIONS = ("promoted", "no-candidate", "unchanged")  # FlywheelOutcome.outcome of a run that reached the gate
EVAL_SIZE = 8


@pytest.fixture(scope="module")
def stack(start_local_stack: Callable[..., LocalStackConfig]) -> LocalStackConfig:
    assert NAT_MODEL == PRODUCERS_MODEL
    # The NIM proxy serves the producers' model, and the simulator takes its logged answers as the references
    # its quality model answers by (else the rule-based policy, which calls none of the blueprint's tools).
    nim = {"preloaded": [DEFAULT_TEACHER, EMBEDDER, PRODUCERS_MODEL], "teacher": PRODUCERS_MODEL}
    return start_local_stack(overrides={"nim": nim})


@pytest.fixture(scope="module")
def es(stack: LocalStackConfig) -> Iterator[Elasticsearch]:
    client = Elasticsearch(stack.url("logserver"), request_timeout=60)
    yield client
    client.close()


def _config() -> FlywheelConfig:
    """The smallest run that reaches the gate: the producers' model as teacher, one candidate, no fine-tune."""
    return parse_config(
        {
            "teacher": {"model_name": PRODUCERS_MODEL, "context_length": 32768, "gpus": 4},
            "nims": [{"model_name": SMALL}],
            "data_split_config": {"eval_size": EVAL_SIZE, "min_total_records": 10, "min_train_records": 2},
            "icl_config": {"max_examples": 1},
            "evaluation_config": {"poll_interval_s": 0.2, "timeout_s": 300},
        },
        FlywheelConfig,
        "test",
    )


def _run(workload_id: str, client_id: str, **kwargs: Any) -> FlywheelOutcome:
    from flows.flywheel import flywheel

    return asyncio.run(flywheel(workload_id=workload_id, client_id=client_id, **kwargs))


def _reached_the_gate(result: FlywheelOutcome) -> dict[str, float]:
    """The run's decision is one of the gate's, every mode was evaluated on the whole evaluation set; the
    parent MLflow run's metrics (extraction and dataset counts)."""
    assert result.outcome in DECISIONS, result.reason
    modes = {(row["model"], row["eval_mode"]): row for row in result.scores}
    assert set(modes) == {(PRODUCERS_MODEL, "base-eval"), (SMALL, "base-eval"), (SMALL, "icl-eval")}, modes
    assert all(row["samples"] == EVAL_SIZE and not row["error"] for row in result.scores), result.scores
    # the logged answers were compared with the teacher's (a run on answers no model can match scores 0 everywhere)
    assert modes[(PRODUCERS_MODEL, "base-eval")]["function_name_accuracy"] > 0, result.scores
    parent = MlflowClient(default_mlflow_uri()).get_run(result.mlflow_run_id)
    assert parent.data.tags["gate.outcome"] in ("promoted", "no-candidate")
    return parent.data.metrics


def _nemo(stack: LocalStackConfig, path: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.url('nemo')}{path}", params={"page_size": 100}, timeout=30)
    response.raise_for_status()
    return list(response.json()["data"])


def _platform(stack: LocalStackConfig) -> dict[str, set[str]]:
    """What exists on the platform: evaluation and customization jobs, deployments, datasets."""
    return {
        "evaluation jobs": {j["id"] for j in _nemo(stack, "/v1/evaluation/jobs")},
        "customization jobs": {j["id"] for j in _nemo(stack, "/v1/customization/jobs")},
        "deployments": {f"{d['namespace']}/{d['name']}" for d in _nemo(stack, "/v1/deployment/model-deployments")},
        "datasets": {f"{d['namespace']}/{d['name']}" for d in _nemo(stack, "/v1/datasets")},
    }


# --- 1. NeMo Agent Toolkit's exporter, into an index it did not create ----------------------------------------


def test_nat_exporter_records_in_the_index_nat_created_reach_a_decision(
    stack: LocalStackConfig, es: Elasticsearch
) -> None:
    good = [nat_tool_call(i) for i in range(10)] + [nat_answer(i) for i in range(10, 14)]
    contradicting = [nat_lost_tool_call(i) for i in range(20, 23)] + [nat_empty_answer(23)]
    helpers.bulk(es, ({"_index": NAT_INDEX, "_source": record} for record in [*good, *contradicting]))
    es.indices.refresh(index=NAT_INDEX)
    mapping = es.indices.get_mapping(index=NAT_INDEX)[NAT_INDEX]["mappings"]["properties"]
    assert mapping["workload_id"] == {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    assert mapping["client_id"]["type"] == "text" and mapping["timestamp"] == {"type": "long"}

    from blocks.log_store import LogStore

    LogStore(url=stack.url("logserver"), index=NAT_INDEX, simulated=True).save("nat", overwrite=True)
    result = _run(NAT_WORKLOAD_ID, NAT_CLIENT_ID, config=_config(), log_store_block="nat")

    metrics = _reached_the_gate(result)
    assert metrics["extraction.new_records"] == len(good)
    assert metrics["extraction.quarantined.tool_calls_missing"] == 3
    assert metrics["extraction.quarantined.empty_answer"] == 1
    assert metrics["datasets.eval"] == EVAL_SIZE
    parent = MlflowClient(default_mlflow_uri()).get_run(result.mlflow_run_id)
    assert parent.data.tags["workload_id"] == NAT_WORKLOAD_ID  # the original id, kept
    # NAT's default workload id made valid names for the Data Store and the Entity Store (eval, train, ICL sets)
    datasets = [d for d in _nemo(stack, "/v1/datasets") if f"-{workload_label(NAT_WORKLOAD_ID)}-" in d["name"]]
    assert len(datasets) >= 2, datasets


# --- 2. the blueprint's index of epoch seconds: imported once, then more records ---------------------------------


def _bill(i: int) -> dict[str, Any]:
    """The blueprint's AIVA example with question ``i``, logged ``i`` seconds after it (epoch seconds)."""
    record = copy.deepcopy(AIVA)
    record["timestamp"] = AIVA["timestamp"] + i
    record["request"]["messages"][1]["content"] = f"Has bill {i} been processed?"
    record["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = {
        "query": f"bill {i} processed",
        "user_id": str(4000 + i),
    }
    return record


FIRST, ADDED = 14, 4


@pytest.fixture(scope="module")
def blueprint_index(es: Elasticsearch) -> str:
    """The index as the blueprint's ``es_client`` creates it, holding its records as the blueprint writes them."""
    es.indices.create(index=BLUEPRINT_INDEX, **BLUEPRINT_INDEX_BODY)
    helpers.bulk(es, ({"_index": BLUEPRINT_INDEX, "_source": _bill(i)} for i in range(FIRST)))
    es.indices.refresh(index=BLUEPRINT_INDEX)
    assert es.indices.get_mapping(index=BLUEPRINT_INDEX)[BLUEPRINT_INDEX]["mappings"]["properties"]["timestamp"] == {
        "type": "date"
    }
    return BLUEPRINT_INDEX


def test_blueprint_index_first_run_decides_then_a_second_run_reads_exactly_the_new_records(
    stack: LocalStackConfig, blueprint_index: str, tmp_path: Path
) -> None:
    workload, client = AIVA["workload_id"], AIVA["client_id"]
    first = _run(workload, client, config=_config())
    first_metrics = _reached_the_gate(first)
    assert first_metrics["extraction.new_records"] == FIRST
    assert first_metrics["extraction.cached_records"] == FIRST

    more = tmp_path / "more.jsonl"
    more.write_text("".join(json.dumps(_bill(i)) + "\n" for i in range(100, 100 + ADDED)))
    imported = CliRunner().invoke(app, ["logs", "import", str(more)])
    assert imported.exit_code == 0, imported.output
    assert f"indexed {ADDED} records" in imported.output

    second = _run(workload, client, config=_config())
    second_metrics = _reached_the_gate(second)
    assert second.mlflow_run_id != first.mlflow_run_id
    assert second_metrics["extraction.new_records"] == ADDED  # exactly the new records
    assert second_metrics["extraction.cached_records"] == FIRST + ADDED
    assert second_metrics["datasets.eval"] == EVAL_SIZE


# --- 3. the blueprint's own config.yaml --------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The blueprint config's remote judge and embedding model are on the internet: any HTTPS request goes to a
    closed local port instead (the local stack is plain HTTP on loopback), and no NVIDIA API key is set."""
    for variable in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, f"http://127.0.0.1:{free_port()}")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(variable, "127.0.0.1,localhost")
    for variable in ("NVIDIA_API_KEY", "LLM_JUDGE_API_KEY", "EMB_API_KEY"):
        monkeypatch.delenv(variable, raising=False)


def test_the_blueprints_config_as_is_is_refused_early_and_precisely(
    stack: LocalStackConfig, es: Elasticsearch, blueprint_index: str, offline: None, tmp_path: Path
) -> None:
    from agent_flywheel.datasets.build import InsufficientRecordsError
    from agent_flywheel.preflight import PreflightError

    workload, client = AIVA["workload_id"], AIVA["client_id"]
    logged = es.count(index=blueprint_index, query={"term": {"client_id": client}})["count"]
    assert logged >= FIRST
    before = _platform(stack)

    # As is: the default teacher is not the model that answered the blueprint's records.
    with pytest.raises(InsufficientRecordsError) as filtered:
        _run(workload, client, config_path=str(BLUEPRINT_CONFIG))
    message = str(filtered.value)
    assert message.startswith(f"0 usable records for workload {workload!r} / client {client!r}"), message
    assert f"- log store: {logged} records read in 1 read(s); 0 quarantined" in message, message
    assert f"teacher.model_name: {DEFAULT_TEACHER}): {logged} records skipped" in message, message
    assert f"Models seen: {PRODUCERS_MODEL}: {logged}" in message, message
    assert f"change in {BLUEPRINT_CONFIG}: `teacher.model_name: {PRODUCERS_MODEL}`" in message, message
    assert _platform(stack) == before

    # With that line: the preflight names the remote judge and embedding model it cannot reach.
    fixed = tmp_path / "config.yaml"
    fixed.write_text(BLUEPRINT_CONFIG.read_text() + f"\nteacher:\n  model_name: {PRODUCERS_MODEL}\n")
    with pytest.raises(PreflightError) as preflight:
        _run(workload, client, config_path=str(fixed))
    problems = str(preflight.value).splitlines()
    assert problems[0].startswith("preflight: 2 problem(s), so nothing was started"), problems
    assert problems[1].startswith(
        "- remote judge meta/llama-3.1-70b-instruct: cannot reach https://integrate.api.nvidia.com/v1/chat/completions"
    ), problems
    assert problems[2].startswith(
        "- remote embedding nvidia/llama-3.2-nv-embedqa-1b-v2: cannot reach "
        "https://integrate.api.nvidia.com/v1/embeddings"
    ), problems
    assert _platform(stack) == before
