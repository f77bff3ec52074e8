"""Contract tests: every body our payload builders produce is a valid request for the official SDK.

The SDK's request types are TypedDicts generated from NeMo's OpenAPI spec; pydantic validates them.
TypedDicts silently drop unknown keys, so ``conforms`` also checks nothing was dropped: a misspelt
field (``lora_alpha``) fails here instead of being ignored by the service.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from nemo_microservices.types.customization.config_create_params import ConfigCreateParams
from nemo_microservices.types.customization.job_create_params import JobCreateParams as CustomizationJobCreateParams
from nemo_microservices.types.dataset_create_params import DatasetCreateParams
from nemo_microservices.types.deployment.model_deployment_create_params import ModelDeploymentCreateParams
from nemo_microservices.types.evaluation.job_create_params import JobCreateParams as EvaluationJobCreateParams
from nemo_microservices.types.namespace_create_params import NamespaceCreateParams
from nemo_microservices.types.shared_params.api_endpoint_data import APIEndpointData
from pydantic import SecretStr, TypeAdapter, ValidationError

from agent_flywheel.config import (
    CustomizerConfig,
    EvaluationConfig,
    FlywheelConfig,
    LoRAConfig,
    NIMConfig,
    RemoteModelConfig,
    TrainingConfig,
)
from agent_flywheel.nemo import names
from agent_flywheel.nemo import payloads as p
from agent_flywheel.nemo.idempotency import IdempotencyKey, content_hash

JUDGE_KEY = "nvapi-remote-judge-key"


def _materialize(value: Any) -> Any:
    """Validated TypedDicts hold lazy iterators for ``Iterable[...]`` fields: consume them (validating)."""
    if isinstance(value, Mapping):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_materialize(v) for v in value]
    return value


def conforms(sdk_type: Any, body: Mapping[str, Any]) -> None:
    """``body`` validates against the SDK type and loses no key doing so."""
    validated = _materialize(TypeAdapter(sdk_type).validate_python(body))
    assert validated == _materialize(body), "a field is unknown to the SDK (dropped by validation)"


@pytest.fixture
def nim() -> NIMConfig:
    return NIMConfig(
        model_name="meta/llama-3.2-1b-instruct",
        gpus=1,
        pvc_size="25Gi",
        tag="1.8.3",
        customization_enabled=True,
        customizer_configs=CustomizerConfig(target="meta/llama-3.2-1b-instruct@2.0", max_seq_length=8192),
    )


@pytest.fixture
def cfg(nim: NIMConfig) -> FlywheelConfig:
    return FlywheelConfig(nims=[nim])


@pytest.fixture
def key() -> IdempotencyKey:
    return IdempotencyKey(content_hash("manifest", 3), flow_run_id="4b6f-flow-run")


def test_conformance_check_can_fail(nim: NIMConfig) -> None:
    body = p.customization_job_body(nim, "dfwbp", "train")
    body["hyperparameters"]["lora"]["lora_alpha"] = 16
    with pytest.raises(AssertionError, match="unknown to the SDK"):
        conforms(CustomizationJobCreateParams, body)
    body = p.customization_job_body(nim, "dfwbp", "train")
    body["hyperparameters"]["finetuning_type"] = "p_tuning"
    with pytest.raises(ValidationError):
        conforms(CustomizationJobCreateParams, body)
    bad = p.customization_config_body(nim, "dfwbp")
    bad["training_options"][0].pop("num_gpus")
    with pytest.raises(ValidationError):
        conforms(ConfigCreateParams, bad)


def test_namespace_and_dataset(key: IdempotencyKey) -> None:
    conforms(NamespaceCreateParams, p.namespace_body("dfwbp"))
    conforms(NamespaceCreateParams, p.namespace_body("dfwbp", "flywheel namespace"))
    body = p.dataset_body("dfwbp", "flywheel-eval-wl-1", project="flywheel", custom_fields=key.custom_fields())
    conforms(DatasetCreateParams, body)
    assert body["files_url"] == "hf://datasets/dfwbp/flywheel-eval-wl-1"


def test_dms_deployment(nim: NIMConfig) -> None:
    body = p.dms_deployment_body(nim, "dfwbp")
    conforms(ModelDeploymentCreateParams, body)
    assert body["name"] == "meta-llama-3.2-1b-instruct" and "/" not in body["name"]
    deployment = body["config"]["nim_deployment"]
    assert deployment["image_name"] == "nvcr.io/nim/meta/llama-3.2-1b-instruct"
    assert (deployment["image_tag"], deployment["gpu"], deployment["pvc_size"]) == ("1.8.3", 1, "25Gi")
    assert body["config"]["model"] == "meta/llama-3.2-1b-instruct"
    bare = p.dms_deployment_body(NIMConfig(model_name="nvidia/nv-embedqa-e5-v5", model_type="embedding"), "dfwbp")
    conforms(ModelDeploymentCreateParams, bare)
    assert "additional_envs" not in bare["config"]["nim_deployment"]
    assert bare["config"]["nim_deployment"]["image_tag"] == p.DEFAULT_NIM_TAG


def test_judge_deployment(cfg: FlywheelConfig) -> None:
    body = p.judge_deployment_body(cfg.llm_judge_config, "dfwbp")
    conforms(ModelDeploymentCreateParams, body)
    assert body["config"]["nim_deployment"]["gpu"] == 4
    with pytest.raises(ValueError):
        p.judge_deployment_body(RemoteModelConfig(model_name="m", url="https://x/v1/chat/completions"), "dfwbp")


def test_customization_config(nim: NIMConfig) -> None:
    body = p.customization_config_body(nim, "dfwbp")
    conforms(ConfigCreateParams, body)
    assert body["target"] == "meta/llama-3.2-1b-instruct@2.0"
    assert body["max_seq_length"] == 8192
    assert re.fullmatch(r"llama-3\.2-1b-instruct@v1\.0\.0\+fw[0-9a-f]{8}", body["name"])
    changed = nim.model_copy(update={"customizer_configs": CustomizerConfig(target="t@1", max_seq_length=4096)})
    assert p.customization_config_name(changed) != body["name"], "a changed config must get a new name"
    assert p.customization_config_name(nim) == body["name"], "the same config keeps its name"


def test_customization_job(nim: NIMConfig, key: IdempotencyKey) -> None:
    training = TrainingConfig(epochs=3, batch_size=8, learning_rate=5e-5)
    lora = LoRAConfig(adapter_dim=16, adapter_dropout=0.05, alpha=32)
    body = p.customization_job_body(
        nim, "dfwbp", "flywheel-train-wl-1", training=training, lora=lora, idempotency=key, workload_id="wl"
    )
    conforms(CustomizationJobCreateParams, body)
    assert body["hyperparameters"]["lora"] == {"adapter_dim": 16, "adapter_dropout": 0.05, "alpha": 32}
    assert body["hyperparameters"]["epochs"] == 3
    assert body["config"] == f"dfwbp/{p.customization_config_name(nim, training)}"
    assert body["dataset"] == {"name": "flywheel-train-wl-1", "namespace": "dfwbp"}
    assert body["output_model"] == "dfwbp/customized-meta-llama-3.2-1b-instruct"
    assert key.short in body["name"] and key.matches(name=body["name"], description=body["description"])
    assert key.matches(custom_fields=body["custom_fields"])
    full = p.customization_job_body(nim, "dfwbp", "d", training=TrainingConfig(finetuning_type="all_weights"))
    conforms(CustomizationJobCreateParams, full)
    assert "lora" not in full["hyperparameters"]
    no_alpha = p.customization_job_body(nim, "dfwbp", "d", lora=LoRAConfig(alpha=None))
    assert "alpha" not in no_alpha["hyperparameters"]["lora"]
    with pytest.raises(ValueError):
        p.customization_job_body(NIMConfig(model_name="m"), "dfwbp", "d")


def test_tool_calling_eval_job_with_local_judge(cfg: FlywheelConfig, key: IdempotencyKey) -> None:
    config = p.eval_config_for_run(cfg, p.eval_files_url("dfwbp", "flywheel-eval-wl-1"), tool_calling=True)
    body = p.evaluation_job_body(config, "meta/llama-3.2-1b-instruct", "dfwbp", idempotency=key, eval_mode="base-eval")
    conforms(EvaluationJobCreateParams, body)
    task = body["config"]["tasks"][p.TOOL_CALLING_TASK]
    assert task["dataset"] == {"files_url": "hf://datasets/dfwbp/flywheel-eval-wl-1/eval_data.jsonl"}
    assert task["params"]["template"]["tool_choice"] == "auto"
    correctness = task["metrics"][p.CORRECTNESS_METRIC]["params"]
    assert correctness["model"] == "meta/llama-3.3-70b-instruct"
    assert correctness["scores"]["rating"]["parser"]["pattern"] == p.TOOL_CALLING_RATING_PATTERN
    assert task["metrics"][p.TOOL_CALLING_METRIC]["type"] == "tool-calling"
    assert body["target"] == {"type": "model", "model": "meta/llama-3.2-1b-instruct"}
    assert key.matches(description=body["description"], custom_fields=body["custom_fields"])


def test_tool_calling_eval_job_per_run_settings(cfg: FlywheelConfig) -> None:
    run_cfg = cfg.model_copy(
        update={"evaluation_config": EvaluationConfig(tool_choice="required", limit=37, judge_enabled=False)}
    )
    config = p.eval_config_for_run(run_cfg, "hf://datasets/ns/d/eval_data.jsonl", tool_calling=True)
    conforms(EvaluationJobCreateParams, p.evaluation_job_body(config, "m", "ns"))
    task = config["tasks"][p.TOOL_CALLING_TASK]
    assert task["dataset"]["limit"] == 37, "dataset.limit must come from this run's config (blueprint bug 6)"
    assert task["params"]["template"]["tool_choice"] == "required"
    assert set(task["metrics"]) == {p.TOOL_CALLING_METRIC}


def test_similarity_eval_job_with_remote_judge(cfg: FlywheelConfig) -> None:
    remote = RemoteModelConfig(
        model_name="meta/llama-3.3-70b-instruct", url="https://judge.example/v1/chat/completions"
    )
    run_cfg = cfg.model_copy(update={"llm_judge_config": remote})
    config = p.eval_config_for_run(
        run_cfg, "hf://datasets/ns/d/eval_data.jsonl", tool_calling=False, judge_api_key=SecretStr(JUDGE_KEY)
    )
    body = p.evaluation_job_body(config, "ns/customized-m@cust-1", "ns", eval_mode="customized-eval")
    conforms(EvaluationJobCreateParams, body)
    judge = body["config"]["tasks"][p.SIMILARITY_TASK]["metrics"][p.SIMILARITY_METRIC]["params"]
    conforms(APIEndpointData, judge["model"]["api_endpoint"])
    assert judge["model"]["api_endpoint"] == {
        "url": "https://judge.example/v1/chat/completions",
        "model_id": "meta/llama-3.3-70b-instruct",
        "api_key": JUDGE_KEY,
    }
    assert judge["scores"]["similarity"]["parser"]["pattern"] == p.SIMILARITY_PATTERN
    assert JUDGE_KEY not in str(body["custom_fields"]) and JUDGE_KEY not in body["description"]


def test_judge_model_forms(cfg: FlywheelConfig) -> None:
    assert p.judge_model(cfg.llm_judge_config, SecretStr(JUDGE_KEY)) == "meta/llama-3.3-70b-instruct"
    remote = RemoteModelConfig(model_name="m", url="https://x/v1/chat/completions")
    assert p.judge_model(remote) == {"api_endpoint": {"url": "https://x/v1/chat/completions", "model_id": "m"}}


@pytest.mark.parametrize(
    ("pattern", "reply", "expected"),
    [
        (p.TOOL_CALLING_RATING_PATTERN, "RATING: 10\nEXPLANATION: fine", 10),
        (p.TOOL_CALLING_RATING_PATTERN, "RATING:1", 1),
        (p.TOOL_CALLING_RATING_PATTERN, "rating said RATING:  0 because", 0),
        (p.SIMILARITY_PATTERN, "10", 10),
        (p.SIMILARITY_PATTERN, "7", 7),
        (p.SIMILARITY_PATTERN, "Score: 10/10", 10),
    ],
)
def test_judge_regexes_read_whole_numbers(pattern: str, reply: str, expected: int) -> None:
    match = re.search(pattern, reply)
    assert match is not None and int(match.group(1)) == expected


def test_names() -> None:
    assert names.deployment_name("meta/llama-3.3-70b-instruct") == "meta-llama-3.3-70b-instruct"
    assert names.output_model_name("meta/llama-3.2-1b-instruct") == "customized-meta-llama-3.2-1b-instruct"
    assert p.dataset_files_url("ns", "d", "training/train.jsonl") == "hf://datasets/ns/d/training/train.jsonl"
