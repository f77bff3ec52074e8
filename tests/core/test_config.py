"""Config models: the shipped YAML files validate, and errors name the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_flywheel.config import (
    ConfigError,
    DataSplitConfig,
    FlywheelConfig,
    ICLConfig,
    LoRAConfig,
    ScalingConfig,
    load_config,
    parse_config,
    parse_model_size_b,
)
from simulators.settings import LocalStackConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_shipped_configs_validate() -> None:
    flywheel = load_config(CONFIGS / "flywheel.yaml", FlywheelConfig)
    assert flywheel.nims[0].model_name == "meta/llama-3.2-1b-instruct"
    assert flywheel.data_split_config.eval_size == 200
    assert load_config(CONFIGS / "scaling.yaml", ScalingConfig).sizing.target_users == 200
    assert load_config(CONFIGS / "local.yaml", LocalStackConfig).ports.nim == 18002


def test_blueprint_defaults_where_we_did_not_choose_otherwise() -> None:
    split = DataSplitConfig()
    assert (split.eval_size, split.val_ratio, split.min_total_records, split.limit) == (100, 0.1, 50, 1000)
    icl = ICLConfig()
    assert (icl.max_context_length, icl.reserved_tokens, icl.max_examples, icl.min_examples) == (32768, 4096, 3, 1)
    assert (LoRAConfig().adapter_dim, LoRAConfig().adapter_dropout) == (32, 0.1)


def test_error_names_file_key_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "flywheel.yaml"
    path.write_text("nims:\n  - model_name: a\ndata_split_config:\n  eval_size: -3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, FlywheelConfig)
    message = str(info.value)
    assert f"{path}: data_split_config.eval_size: Input should be greater than or equal to 1 (got -3)" in message


def test_unknown_key_is_an_error_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"<x>: data_split_config.eval_sise: Extra inputs are not permitted"):
        parse_config({"nims": [{"model_name": "a"}], "data_split_config": {"eval_sise": 5}}, FlywheelConfig, "<x>")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nims:\n  - model_name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: invalid YAML"):
        load_config(path, FlywheelConfig)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", FlywheelConfig)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"nims": []}, "nims: List should have at least 1 item"),
        ({"nims": [{"model_name": "a"}, {"model_name": "a"}]}, "nims lists a more than once"),
        ({"nims": [{"model_name": "a", "customization_enabled": True}]}, "customizer_configs is required"),
        (
            {"nims": [{"model_name": "a"}], "icl_config": {"min_examples": 4}},
            "min_examples (4) exceeds max_examples (3)",
        ),
        ({"nims": [{"model_name": "a"}], "lora_config": {"adapter_dim": 24}}, "adapter_dim must be a power of 2"),
        (
            {"nims": [{"model_name": "a"}], "icl_config": {"example_selection": "semantic_similarity"}},
            "embedding_nim_config is required",
        ),
        (
            {"nims": [{"model_name": "a"}], "data_split_config": {"limit": 10}},
            "limit (10) must be >= min_total_records",
        ),
    ],
)
def test_cross_field_rules(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, FlywheelConfig, "cfg")
    assert needle in str(info.value)


def test_model_size_from_name() -> None:
    assert parse_model_size_b("meta/llama-3.2-1b-instruct") == 1.0
    assert parse_model_size_b("meta/llama-3.3-70b-instruct") == 70.0
    assert parse_model_size_b("nvidia/nemotron-nano-llama-3.1-8b") == 8.0
    assert parse_model_size_b("openai/gpt-oss") is None
