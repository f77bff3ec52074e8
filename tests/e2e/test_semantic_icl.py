"""Semantic ICL selection end to end: embeddings from the NIM simulator's /v1/embeddings pick the examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ICLConfig, NIMConfig, RemoteModelConfig
from agent_flywheel.datasets.build import build_datasets
from simulators.nim.server import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer
from tasks.datasets import nim_embedder

pytestmark = pytest.mark.integration

EMBEDDER = "nvidia/llama-3.2-nv-embedqa-1b-v2"
TOOLS = [{"type": "function", "function": {"name": name, "parameters": {}}} for name in ("weather", "orders")]


def _record(i: int, question: str, tool: str) -> dict[str, object]:
    return {
        "timestamp": 1_750_000_000 + i,
        "workload_id": "w",
        "client_id": "c",
        "request": {"messages": [{"role": "user", "content": question}], "tools": TOOLS},
        "response": {
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "",
                        "tool_calls": [{"type": "function", "function": {"name": tool, "arguments": "{}"}}],
                    }
                }
            ]
        },
    }


def test_examples_come_from_the_most_similar_train_records(tmp_path: Path) -> None:
    records = [_record(i, f"what is the weather in city {i} tomorrow", "weather") for i in range(20)]
    records += [_record(100 + i, f"where is my order number {i} shipped", "orders") for i in range(20)]
    cfg = LocalStackConfig(state_dir=str(tmp_path / "state"), nim={"latency": {"time_scale": 0}})
    with ThreadedServer(create_app(cfg)) as nim:
        embed = nim_embedder(nim.url, EMBEDDER)
        assert len(embed(["a", "b"])) == 2
        build = build_datasets(
            records,
            DataSplitConfig(eval_size=6, val_ratio=0.1, min_total_records=10, limit=100, min_train_records=1),
            ICLConfig(
                max_examples=2,
                example_selection="semantic_similarity",
                similarity_config={
                    "relevance_ratio": 1.0,
                    "embedding_nim_config": RemoteModelConfig(model_name=EMBEDDER, url=nim.url),
                },
            ),
            EvaluationConfig(),
            [NIMConfig(model_name="meta/llama-3.2-1b-instruct")],
            tmp_path / "datasets",
            embed=embed,
        )
    icl_rows = [json.loads(line) for line in next(iter(build.icl_paths.values())).read_text().splitlines()]
    assert icl_rows
    for row in icl_rows:
        system = row["request"]["messages"][0]["content"]
        question = row["request"]["messages"][-1]["content"]
        topic = "weather" if "weather" in question else "order"
        other = "order" if topic == "weather" else "weather"
        examples = system.split("Example ")[1:]
        assert examples and all(topic in example and other not in example for example in examples), system
