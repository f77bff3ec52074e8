"""The blueprint's config.yaml loads as is: its extra sections are mapped or noted, remote URLs either way."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent_flywheel.config import NO_LIMIT, FlywheelConfig, RemoteModelConfig, load_config
from agent_flywheel.endpoints import api_root, chat_completions_url, embeddings_url, remote_api_key
from agent_flywheel.nemo import payloads as p

BLUEPRINT_CONFIG = Path(__file__).parents[1] / "support" / "blueprint_config.yaml"


def test_the_blueprint_config_loads_with_one_note_per_unused_setting(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent_flywheel.config"):
        cfg = load_config(BLUEPRINT_CONFIG, FlywheelConfig)
    assert cfg.namespace == "support-flywheel"  # nmp_config.nmp_namespace mapped
    assert [n.model_name for n in cfg.nims] == ["meta/llama-3.2-3b-instruct", "meta/llama-3.1-8b-instruct"]
    assert cfg.nims[0].customizer_configs is not None and cfg.nims[0].customizer_configs.gpus == 2
    assert cfg.data_split_config.limit == NO_LIMIT and cfg.data_split_config.random_seed is None
    assert cfg.lora_config.adapter_dim == 16 and cfg.training_config.epochs == 3
    notes = cfg.notes()
    assert len(notes) == 3
    assert notes[0].startswith("nmp_config.nemo_base_url, nmp_config.nim_base_url, nmp_config.datastore_base_url:")
    assert "NemoPlatform block" in notes[0]
    assert notes[1].startswith("logging_config.level 'DEBUG'") and notes[2].startswith("mlflow_config:")
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [f"{BLUEPRINT_CONFIG}: {note}" for note in notes]
    assert all("\n" not in note for note in notes)


def test_an_explicit_namespace_wins_over_the_blueprints_and_is_noted() -> None:
    cfg = FlywheelConfig.model_validate(
        {"namespace": "ours", "nmp_config": {"nmp_namespace": "theirs"}, "nims": [{"model_name": "m"}]}
    )
    assert cfg.namespace == "ours"
    assert cfg.notes() == ["nmp_config.nmp_namespace 'theirs' is not used: namespace 'ours' is set"]


def test_a_newer_blueprint_key_is_noted_not_refused() -> None:
    cfg = FlywheelConfig.model_validate({"mlflow_config": {"run_tags": {"a": 1}}, "nims": [{"model_name": "m"}]})
    assert "mlflow_config: unknown blueprint key 'run_tags' ignored" in cfg.notes()


def test_our_own_sections_still_refuse_typos() -> None:
    with pytest.raises(ValueError, match="nimz"):
        FlywheelConfig.model_validate({"nims": [{"model_name": "m"}], "nimz": []})


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("http://nim:8000", "http://nim:8000/v1"),
        ("http://nim:8000/", "http://nim:8000/v1"),
        ("http://nim:8000/v1", "http://nim:8000/v1"),
        ("https://integrate.api.nvidia.com/v1/embeddings", "https://integrate.api.nvidia.com/v1"),
        ("http://0.0.0.0:9022/v1/chat/completions", "http://0.0.0.0:9022/v1"),
        ("https://host/openai/deployments/d/chat/completions/", "https://host/openai/deployments/d"),
    ],
)
def test_remote_urls_are_accepted_with_or_without_the_v1_path(url: str, root: str) -> None:
    assert api_root(url) == root
    assert embeddings_url(url) == f"{root}/embeddings"
    assert chat_completions_url(url) == f"{root}/chat/completions"
    assert "/v1/embeddings/v1" not in embeddings_url(url) and "/embeddings/embeddings" not in embeddings_url(url)


def test_the_blueprints_remote_endpoints_are_used_at_their_urls() -> None:
    cfg = load_config(BLUEPRINT_CONFIG, FlywheelConfig)
    embedding = cfg.icl_config.similarity_config.embedding_nim_config
    assert embedding is not None
    assert embedding.embeddings_url == "https://integrate.api.nvidia.com/v1/embeddings"
    judge = p.judge_model(cfg.llm_judge_config)
    assert judge == {
        "api_endpoint": {
            "url": "https://integrate.api.nvidia.com/v1/chat/completions",
            "model_id": cfg.llm_judge_config.model_name,
        }
    }
    base = RemoteModelConfig(model_name="m", url="https://integrate.api.nvidia.com")
    assert p.judge_model(base) == judge | {"api_endpoint": {**judge["api_endpoint"], "model_id": "m"}}  # type: ignore[operator]


def test_the_api_key_comes_from_the_block_then_the_environment_as_the_blueprint_reads_it() -> None:
    env = {"NVIDIA_API_KEY": "nv", "LLM_JUDGE_API_KEY": "judge", "CUSTOM": "custom"}
    block = SecretStr("from-block")
    assert remote_api_key("judge", block, environ=env) is block
    assert str(remote_api_key("judge", None, environ=env).get_secret_value()) == "judge"  # type: ignore[union-attr]
    key = remote_api_key("embedding", SecretStr(""), environ=env)
    assert key is not None and key.get_secret_value() == "nv"
    key = remote_api_key("embedding", None, api_key_env="CUSTOM", environ=env)
    assert key is not None and key.get_secret_value() == "custom"
    assert remote_api_key("judge", None, api_key_env="MISSING", environ=env) is None
    assert remote_api_key("judge", None, environ={}) is None
    assert "api_key_env" in RemoteModelConfig.model_fields
    assert "nv" not in repr(remote_api_key("embedding", None, environ=env))  # a SecretStr, never shown
