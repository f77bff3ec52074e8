"""The command line on indices producers created: `flywheel logs create-index` checks or creates the index, and
`flywheel logs import` adds records to the blueprint's index of epoch seconds in its own form, after which a
second incremental run picks up exactly the new records."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch, helpers
from typer.testing import CliRunner

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.reader import extract
from agent_flywheel.logstore.shape import TimeUnit, inspect_index
from agent_flywheel.logstore.watermarks import Watermark
from agent_flywheel.records.quarantine import QuarantineWriter
from cli.main import app
from simulators.logserver.server import create_app
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port
from tests.support.blueprint_records import AIVA, BLUEPRINT_INDEX_BODY
from tests.support.nat_records import nat_answer

pytestmark = pytest.mark.integration

INDEX = "flywheel"  # the local LogStore block's index


@pytest.fixture
def es(tmp_path: Path, save_local_blocks: Callable[[LocalStackConfig], LocalStackConfig]) -> Iterator[Elasticsearch]:
    cfg = save_local_blocks(LocalStackConfig(state_dir=str(tmp_path / "state"), ports=Ports(logserver=free_port())))
    with ThreadedServer(create_app(cfg), port=cfg.ports.logserver) as server:
        client = Elasticsearch(server.url, request_timeout=30)
        yield client
        client.close()


def _bill(i: int, timestamp: Any) -> dict[str, Any]:
    record = copy.deepcopy(AIVA)
    record["timestamp"] = timestamp
    record["request"]["messages"][1]["content"] = f"Has bill {i} been processed?"
    return record


def _read(es: Elasticsearch, since: Watermark | None, tmp_path: Path) -> tuple[set[str], Watermark | None]:
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        result = extract(
            ElasticsearchClient(es),
            INDEX,
            workload_id=AIVA["workload_id"],
            client_id=AIVA["client_id"],
            since=since,
            quarantine=quarantine,
        )
    assert result.quarantined == {}
    return {str(r.request.messages[1].content) for r in result.records}, result.watermark


def test_import_into_the_blueprints_index_of_epoch_seconds_then_read_only_the_new_records(
    es: Elasticsearch, tmp_path: Path
) -> None:
    es.indices.create(index=INDEX, **BLUEPRINT_INDEX_BODY)
    seconds = AIVA["timestamp"]
    helpers.bulk(es, ({"_index": INDEX, "_source": _bill(i, seconds + i)} for i in range(4)))  # the blueprint's own
    es.indices.refresh(index=INDEX)
    first, mark = _read(es, None, tmp_path)
    assert len(first) == 4

    # more records, in the file as the blueprint documents them (one of them with an ISO time)
    more = tmp_path / "more.jsonl"
    lines = [_bill(4, seconds + 10), _bill(5, "2025-05-01T22:27:08Z"), _bill(6, seconds + 12)]
    more.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = CliRunner().invoke(app, ["logs", "import", str(more)])
    assert result.exit_code == 0, result.output
    assert "indexed 3 records" in result.output
    assert inspect_index(ElasticsearchClient(es), INDEX).unit is TimeUnit.SECONDS  # still one form: epoch seconds
    second, _ = _read(es, mark, tmp_path)
    assert second == {f"Has bill {i} been processed?" for i in (4, 5, 6)}


def test_create_index_creates_ours_and_checks_a_producers(es: Elasticsearch) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["logs", "create-index"])
    assert created.exit_code == 0, created.output
    assert created.output.startswith(f"created {INDEX} with the flywheel's mapping")
    again = runner.invoke(app, ["logs", "create-index"])
    assert (
        again.exit_code == 0 and "exists; log index 'flywheel': filtering on workload_id and client_id" in again.output
    )

    helpers.bulk(es, [{"_index": "nat", "_source": nat_answer(0)}])  # NeMo Agent Toolkit's exporter: no mapping
    es.indices.refresh(index="nat")
    nat = runner.invoke(app, ["logs", "create-index", "--index", "nat"])
    assert nat.exit_code == 0, nat.output
    assert "filtering on workload_id.keyword and client_id.keyword" in nat.output
    assert "timestamp is a long holding epoch seconds" in nat.output

    helpers.bulk(es, [{"_index": "floats", "_source": {**nat_answer(0), "timestamp": 1765000000.5}}])
    es.indices.refresh(index="floats")
    refused = runner.invoke(app, ["logs", "create-index", "--index", "floats"])
    assert refused.exit_code == 2
    (line,) = refused.output.strip().splitlines()
    assert line.startswith("error: log index 'floats': timestamp is mapped as float")
    assert "POST _reindex" in line
