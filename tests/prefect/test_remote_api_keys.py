"""API keys of a remote judge and a remote embedding model: read by the NemoPlatform block (its secret, else the
environment as the blueprint reads it), carried by the run's client, and sent to NeMo only where NeMo needs it:
the judge's ``api_endpoint.api_key`` in an evaluation job's config, never in its name, description or cache key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from agent_flywheel.config import FlywheelConfig, parse_config
from blocks.nemo_platform import NemoPlatform
from tasks.nemo_jobs import RunContext, _evaluation_inputs

JUDGE_KEY = "sk-judge-canary-123"
EMB_KEY = "sk-emb-canary-456"


def config(judge: dict[str, Any] | None = None, embedding: dict[str, Any] | None = None) -> FlywheelConfig:
    data: dict[str, Any] = {"nims": [{"model_name": "meta/llama-3.2-1b-instruct"}]}
    if judge is not None:
        data["llm_judge_config"] = judge
    if embedding is not None:
        data["icl_config"] = {
            "example_selection": "semantic_similarity",
            "similarity_config": {"embedding_nim_config": embedding},
        }
    return parse_config(data, FlywheelConfig, "test")


REMOTE_JUDGE = {"deployment_type": "remote", "model_name": "meta/llama-3.1-70b", "url": "https://judge.test/v1"}
REMOTE_EMB = {"deployment_type": "remote", "model_name": "nv-embed", "url": "https://emb.test/v1/embeddings"}


@pytest.fixture(autouse=True)
def _no_keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LLM_JUDGE_API_KEY", "EMB_API_KEY", "NVIDIA_API_KEY", "MY_JUDGE_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_the_block_secret_wins_then_the_blueprints_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(REMOTE_JUDGE, REMOTE_EMB)
    assert NemoPlatform().remote_api_keys(cfg) == {}
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-shared")
    keys = NemoPlatform().remote_api_keys(cfg)
    assert {role: k.get_secret_value() for role, k in keys.items()} == {
        "judge": "nvapi-shared",
        "embedding": "nvapi-shared",
    }
    monkeypatch.setenv("LLM_JUDGE_API_KEY", "judge-env")
    assert NemoPlatform().remote_api_keys(cfg)["judge"].get_secret_value() == "judge-env"
    block = NemoPlatform(judge_api_key=SecretStr(JUDGE_KEY), embedding_api_key=SecretStr(EMB_KEY))
    keys = block.remote_api_keys(cfg)
    assert keys["judge"].get_secret_value() == JUDGE_KEY and keys["embedding"].get_secret_value() == EMB_KEY
    assert JUDGE_KEY not in repr(block) and JUDGE_KEY not in block.model_dump_json()


def test_api_key_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-shared")
    monkeypatch.setenv("MY_JUDGE_KEY", "mine")
    cfg = config({**REMOTE_JUDGE, "api_key_env": "MY_JUDGE_KEY"})
    assert NemoPlatform().remote_api_keys(cfg)["judge"].get_secret_value() == "mine"


def test_local_models_need_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-shared")
    assert NemoPlatform(judge_api_key=SecretStr(JUDGE_KEY)).remote_api_keys(config()) == {}


def test_the_run_client_carries_the_keys_and_redacts_them() -> None:
    block = NemoPlatform(judge_api_key=SecretStr(JUDGE_KEY))
    client = block.get_client(config(REMOTE_JUDGE))
    key = client.remote_key("judge")
    assert key is not None and key.get_secret_value() == JUDGE_KEY
    assert client.remote_key("embedding") is None
    assert client.redactor(f"error: {JUDGE_KEY}") == "error: ***"
    assert "authorization" not in client.nim.http.client.headers  # the judge's key is not the platform's key
    assert block.get_client().remote_key("judge") is None


def test_the_judge_key_goes_into_the_judges_api_endpoint_only() -> None:
    cfg = config(REMOTE_JUDGE)
    ctx = RunContext(
        workload_id="w",
        client_id="c",
        flow_run_id="run-1",
        cfg=cfg,
        tool_calling=True,
        namespace="ns",
    )
    sent, key = _evaluation_inputs("meta/llama-3.2-1b-instruct", "base-eval", "ds", ctx, SecretStr(JUDGE_KEY))
    unkeyed, same_key = _evaluation_inputs("meta/llama-3.2-1b-instruct", "base-eval", "ds", ctx)
    assert key == same_key  # a new key is no new evaluation
    judge = sent["tasks"]["custom-tool-calling"]["metrics"]["correctness"]["params"]["model"]
    assert judge == {
        "api_endpoint": {
            "url": "https://judge.test/v1/chat/completions",
            "model_id": "meta/llama-3.1-70b",
            "api_key": JUDGE_KEY,
        }
    }
    assert json.dumps(sent).count(JUDGE_KEY) == 1
    assert JUDGE_KEY not in json.dumps(unkeyed) and JUDGE_KEY not in key.content_hash
