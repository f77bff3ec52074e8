"""Records in the blueprint's published formats go through `flywheel logs import`, extraction and the
dataset build unchanged in meaning; bad lines are counted by reason and quarantined, never dropped."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from typer.testing import CliRunner

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig
from agent_flywheel.datasets.build import build_datasets
from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.reader import extract
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.quarantine import QuarantineWriter
from cli.main import app
from simulators.logserver.server import create_app
from simulators.settings import LocalStackConfig, Ports
from simulators.threaded import ThreadedServer, free_port
from tests.support.blueprint_records import AIVA  # the blueprint quickstart's tool-calling record, verbatim

pytestmark = pytest.mark.integration


def _variant(i: int) -> dict[str, object]:
    """The same shape with a different question; every other record has arguments as a JSON string."""
    record = json.loads(json.dumps(AIVA))
    record["timestamp"] = AIVA["timestamp"] + i  # type: ignore[operator]
    record["request"]["messages"][1]["content"] = f"Has bill {i} been processed?"
    call = record["response"]["choices"][0]["message"]["tool_calls"][0]["function"]
    call["arguments"] = {"query": f"bill {i} processed", "user_id": str(4000 + i)}
    if i % 2:
        call["arguments"] = json.dumps(call["arguments"])
        record["timestamp"] = f"2025-05-0{1 + i % 8}T10:00:{i % 60:02d}Z"  # ISO timestamps too
        record["description"] = "an extra top-level field, which the blueprint's strict mapping would reject"
    return record


BAD_LINES = [
    "{not json",
    json.dumps({**AIVA, "response": None}),
    json.dumps(
        {
            **AIVA,
            "response": {
                "choices": [
                    {
                        "message": {
                            "role": "assistant",
                            "tool_calls": [{"type": "function", "function": {"name": "x", "arguments": "{oops"}}],
                        }
                    }
                ]
            },
        }
    ),
]


@pytest.fixture
def logserver(tmp_path: Path, save_local_blocks: Callable[[LocalStackConfig], LocalStackConfig]) -> Iterator[str]:
    cfg = save_local_blocks(LocalStackConfig(state_dir=str(tmp_path / "state"), ports=Ports(logserver=free_port())))
    with ThreadedServer(create_app(cfg), port=cfg.ports.logserver) as server:
        yield server.url


def test_import_extract_and_build_keep_the_meaning(logserver: str, tmp_path: Path) -> None:
    source = tmp_path / "aiva.jsonl"
    good = [_variant(i) for i in range(12)]
    source.write_text("\n".join([*(json.dumps(r) for r in good), *BAD_LINES]) + "\n")

    result = CliRunner().invoke(app, ["logs", "import", str(source), "--workload-id", "wl", "--client-id", "c"])
    assert result.exit_code == 0, result.output
    assert "indexed 12 records" in result.output
    assert "quarantined 3" in result.output
    assert "not_json: 1" in result.output
    assert "arguments_not_json: 1" in result.output

    es = Elasticsearch(logserver)
    with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
        extracted = extract(ElasticsearchClient(es), "flywheel", workload_id="wl", client_id="c", quarantine=quarantine)
    assert len(extracted.records) == 12
    assert sum(extracted.quarantined.values()) == 0
    by_question = {r.request.messages[1].content: to_document(r) for r in extracted.records}
    for original in good:
        document = by_question[original["request"]["messages"][1]["content"]]  # type: ignore[index]
        arguments = original["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]  # type: ignore[index]
        stored = document["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        assert stored == (json.loads(arguments) if isinstance(arguments, str) else arguments)
        assert document.get("description") == original.get("description")

    build = build_datasets(
        [to_document(r) for r in extracted.records],
        DataSplitConfig(eval_size=2, val_ratio=0.2, min_total_records=5, limit=100, min_train_records=1),
        ICLConfig(max_examples=1),
        EvaluationConfig(),
        [NIMConfig(model_name="meta/llama-3.2-1b-instruct")],
        tmp_path / "datasets",
    )
    assert build.counts["eval"] == 2
    lines = [json.loads(line) for line in build.train_path.read_text().splitlines()]
    assert lines
    for line in lines:
        assistant = line["messages"][-1]
        assert assistant["content"] == ""
        call = assistant["tool_calls"][0]["function"]
        assert call["name"] == "structured_rag"
        assert isinstance(call["arguments"], str)  # NeMo Customizer wants a JSON string
        assert set(json.loads(call["arguments"])) == {"query", "user_id"}
        assert line["tools"][0]["function"]["name"] == "structured_rag"
    quarantine_file = Path(result.output.split("written to ")[1].split(")")[0])
    reasons = [json.loads(line)["reason"] for line in quarantine_file.read_text().splitlines()]
    assert sorted(reasons) == ["arguments_not_json", "bad_response", "not_json"]
