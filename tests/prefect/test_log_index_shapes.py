"""The extract-logs and survey-traffic tasks on indices producers created, against the log server.

What the run log says about an index matters as much as reading it right: a blueprint index of epoch seconds is
read correctly and named in a warning; an index the flywheel cannot read stops the task in one line, without
retries. The tasks run as the flow calls them (``.fn``), with the run logger replaced.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers
from prefect.states import Failed

import flows.traffic_watch
import tasks.extract
from agent_flywheel.config import DataSplitConfig, ExtractionConfig, FlywheelConfig, NIMConfig
from agent_flywheel.logstore.shape import IndexShapeError
from blocks.log_store import LogStore
from flows.traffic_watch import survey_traffic
from simulators.logserver.server import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer
from tasks.extract import commit_watermark, extract_logs
from tasks.retries import retry_if_transient
from tests.support.blueprint_records import AIVA, BLUEPRINT_INDEX_BODY
from tests.support.nat_records import NAT_CLIENT_ID, NAT_WORKLOAD_ID, nat_answer

pytestmark = pytest.mark.integration

WORKLOAD, CLIENT = AIVA["workload_id"], AIVA["client_id"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    cfg = LocalStackConfig(state_dir=str(tmp_path_factory.mktemp("logserver")))
    with ThreadedServer(create_app(cfg)) as running:
        yield running


@pytest.fixture
def es(server: ThreadedServer) -> Iterator[Elasticsearch]:
    client = Elasticsearch(server.url, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    logger = logging.getLogger("test-log-index-shapes")
    monkeypatch.setattr(tasks.extract, "get_run_logger", lambda: logger)
    monkeypatch.setattr(flows.traffic_watch, "get_run_logger", lambda: logger)
    caplog.set_level(logging.INFO, logger=logger.name)
    return caplog


def _blueprint_record(i: int) -> dict[str, Any]:
    record = copy.deepcopy(AIVA)
    record["timestamp"] = AIVA["timestamp"] + i  # epoch seconds, as the blueprint's producers write them
    record["request"]["messages"][1]["content"] = f"Has bill {i} been processed?"
    return record


def _write(es: Elasticsearch, index: str, sources: list[dict[str, Any]]) -> None:
    helpers.bulk(es, ({"_index": index, "_source": source} for source in sources))
    es.indices.refresh(index=index)


CFG = FlywheelConfig(
    nims=[NIMConfig(model_name="small")],
    extraction=ExtractionConfig(teacher_only=False),
    data_split_config=DataSplitConfig(limit=100),
)


def test_a_blueprint_index_of_epoch_seconds_is_read_incrementally_and_named_in_the_run_log(
    server: ThreadedServer, es: Elasticsearch, logged: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    store = LogStore(url=server.url, index="blueprint-seconds")
    es.indices.create(index=store.index, **BLUEPRINT_INDEX_BODY)
    _write(es, store.index, [_blueprint_record(i) for i in range(5)])

    first = extract_logs.fn(WORKLOAD, CLIENT, CFG, store, tmp_path / "run-1")
    assert first.new_records == 5
    warnings = [r.getMessage() for r in logged.records if r.levelno == logging.WARNING]
    assert any("holding epoch seconds, which Elasticsearch reads as milliseconds" in w for w in warnings), warnings
    commit_watermark.fn(WORKLOAD, CLIENT, first.watermark)

    _write(es, store.index, [_blueprint_record(i) for i in range(5, 8)])
    (count,) = survey_traffic.fn(store, None)
    assert (count.workload_id, count.new_records, count.total_records) == (WORKLOAD, 3, 8)
    second = extract_logs.fn(WORKLOAD, CLIENT, CFG, store, tmp_path / "run-2")
    assert (second.new_records, second.incremental, second.cached_records) == (3, True, 8)
    commit_watermark.fn(WORKLOAD, CLIENT, second.watermark)
    assert survey_traffic.fn(store, None)[0].new_records == 0


def test_a_nat_index_is_read_on_its_keyword_sub_fields(
    server: ThreadedServer, es: Elasticsearch, logged: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    store = LogStore(url=server.url, index="nat-exporter")
    _write(es, store.index, [nat_answer(i) for i in range(4)])
    extracted = extract_logs.fn(NAT_WORKLOAD_ID, NAT_CLIENT_ID, CFG, store, tmp_path / "run")
    assert extracted.new_records == 4
    infos = [r.getMessage() for r in logged.records if r.levelno == logging.INFO]
    assert any("filtering on workload_id.keyword and client_id.keyword" in line for line in infos), infos


def test_an_unreadable_index_stops_the_task_in_one_line_and_is_not_retried(
    server: ThreadedServer, es: Elasticsearch, logged: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    store = LogStore(url=server.url, index="float-timestamps")
    _write(es, store.index, [{**nat_answer(0), "timestamp": 1765000000.5}])
    with pytest.raises(IndexShapeError, match="timestamp is mapped as float") as refused:
        extract_logs.fn(NAT_WORKLOAD_ID, NAT_CLIENT_ID, CFG, store, tmp_path / "run")
    with pytest.raises(IndexShapeError):
        survey_traffic.fn(store, None)
    failed = Failed(data=refused.value)
    assert retry_if_transient(extract_logs, None, failed) is False  # type: ignore[arg-type]
    assert retry_if_transient(extract_logs, None, Failed(data=ConnectionError("reset"))) is True  # type: ignore[arg-type]


def test_the_watch_on_a_missing_index_has_no_traffic(server: ThreadedServer, logged: pytest.LogCaptureFixture) -> None:
    assert survey_traffic.fn(LogStore(url=server.url, index="not-there-yet"), None) == []
    assert any("does not exist yet" in r.getMessage() for r in logged.records)
