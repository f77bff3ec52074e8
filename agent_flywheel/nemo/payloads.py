"""Request bodies for NeMo v1, built from our config: pure functions, no I/O.

Every body here is checked against the official SDK's request types in ``tests/core/test_nemo_contract.py``.
Where we differ from the blueprint, on purpose:

- LoRA ``alpha`` is sent (the blueprint documents it and drops it);
- tool-calling evals use ``tool_choice`` from ``EvaluationConfig`` (``auto`` by default, not ``required``),
  so calling a tool when none is wanted is measured; the judge prompt grades "no call" answers too;
- judge regexes capture whole numbers: ``RATING:\\s*(\\d+)`` and ``(\\d+)`` (blueprint bug 1: ``(\\d)`` read
  a similarity of 10 as 1);
- ``dataset.limit`` comes from the per-run config (blueprint bug 6 used the global one);
- the customization config name carries a hash of its content, so changing ``max_seq_length`` makes a
  new config instead of silently reusing the old one (config creation is "200 or 409 = fine");
- jobs carry the flow run id and a content hash (``IdempotencyKey``) so a retried run finds its job.

A remote judge's API key is put into the evaluation job body only (the Evaluator needs it to call the
judge); never log these bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from agent_flywheel.config import (
    CustomizerConfig,
    FlywheelConfig,
    LoRAConfig,
    NIMConfig,
    RemoteModelConfig,
    TrainingConfig,
)
from agent_flywheel.evaluation.judge import JUDGE_RATING_PATTERN, JUDGE_SIMILARITY_PATTERN
from agent_flywheel.nemo.idempotency import IdempotencyKey, content_hash
from agent_flywheel.nemo.names import customization_job_name, deployment_name, output_model_name

# Names the Evaluator reports results under (and the blueprint reads them by).
TOOL_CALLING_TASK = "custom-tool-calling"
TOOL_CALLING_METRIC = "tool-calling-accuracy"
CORRECTNESS_METRIC = "correctness"
SIMILARITY_TASK = "llm-as-judge"
SIMILARITY_METRIC = "llm-judge"
FUNCTION_NAME_SCORE = "function_name_accuracy"
FUNCTION_NAME_AND_ARGS_SCORE = "function_name_and_args_accuracy"
RATING_SCORE = "rating"
SIMILARITY_SCORE = "similarity"

# Judge reply parsers: group 1 is the whole number.
TOOL_CALLING_RATING_PATTERN = JUDGE_RATING_PATTERN  # multi-digit: a "10" is 10 (blueprint bug 1)
SIMILARITY_PATTERN = JUDGE_SIMILARITY_PATTERN

EVAL_FILE = "eval_data.jsonl"
TRAINING_DIR = "training"
VALIDATION_DIR = "validation"
CONFIG_VERSION = "v1.0.0"
DEFAULT_NIM_TAG = "latest"
DEFAULT_NIM_ENVS: Mapping[str, str] = {"NIM_GUIDED_DECODING_BACKEND": "outlines"}

JudgeModel = str | dict[str, Any]

TOOL_CALLING_JUDGE_PROMPT = """\
You check whether an assistant made the right tool calls. You see the reference tool calls and the \
assistant's predicted tool calls, both as JSON (null means "no tool call").

Decide:
- Reference null: correct only when the prediction is null or empty too.
- Otherwise each reference call needs a predicted call to the same function name, spelled exactly.
- Arguments must be valid JSON and contain every reference argument. Identifier-like values (ids, codes, \
numbers, dates, enum values) must be equal; free-text values may be worded differently when they mean \
the same thing.
- Extra calls that would change what happens make the prediction wrong.

Reply in exactly this format:
RATING: <1 if correct, 0 if not>
EXPLANATION: <one sentence>"""

TOOL_CALLING_JUDGE_USER = (
    "*Ground Truth*: {{ item.response.choices[0].message.tool_calls | tojson }}\n"
    "*Prediction*: {{ sample.response.choices[0].message.tool_calls | tojson }}"
)

#: The reference calls of a record, as NeMo's ``tool-calling`` metric requires them: a list, ``[]`` for a record
#: whose answer calls no tool (``tool_calls`` null or absent would render ``null``, which the metric rejects).
TOOL_CALLS_GROUND_TRUTH = "{{ item.response.choices[0].message.tool_calls | default([], true) | tojson }}"

SIMILARITY_JUDGE_PROMPT = """\
You compare a candidate answer with a reference answer to the same conversation and rate how well the \
candidate would serve the user in place of the reference, from 1 to 10:
10: same meaning and same facts, any wording;
8-9: same meaning, a minor detail missing or added;
6-7: mostly right, something useful missing or slightly off;
4-5: partly right, with a real error or a large gap;
2-3: mostly wrong or unhelpful;
1: wrong, off-topic or empty.
Reply with the integer only."""

SIMILARITY_JUDGE_USER = (
    "CONVERSATION\n<<<\n{{ item.request.messages | tojson }}\n>>>\n\n"
    "REFERENCE ANSWER\n<<<\n{{ item.response.choices[0].message.content }}\n>>>\n\n"
    "CANDIDATE ANSWER\n<<<\n{{ sample.output_text }}\n>>>"
)


# --- names -----------------------------------------------------------------------------------------


def output_model_ref(namespace: str, model_name: str) -> str:
    """``{namespace}/customized-{model}`` (:func:`~agent_flywheel.nemo.names.output_model_name`); the job answers
    with ``...@cust-...`` appended."""
    return f"{namespace}/{output_model_name(model_name)}"


def dataset_files_url(namespace: str, dataset_name: str, path: str | None = None) -> str:
    """``hf://datasets/{ns}/{name}[/{path}]``: how NeMo services address Data Store files."""
    base = f"hf://datasets/{namespace}/{dataset_name}"
    return f"{base}/{path.lstrip('/')}" if path else base


def eval_files_url(namespace: str, dataset_name: str) -> str:
    """The eval file of a dataset repo, as an Evaluator task's ``dataset.files_url``."""
    return dataset_files_url(namespace, dataset_name, EVAL_FILE)


# --- Entity Store ----------------------------------------------------------------------------------


def namespace_body(namespace: str, description: str | None = None) -> dict[str, Any]:
    """``POST /v1/namespaces``."""
    body: dict[str, Any] = {"id": namespace}
    if description:
        body["description"] = description
    return body


def dataset_body(
    namespace: str,
    name: str,
    *,
    files_url: str | None = None,
    description: str = "",
    project: str | None = None,
    custom_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``POST /v1/datasets`` (and the PATCH of an existing one): registers a Data Store repo."""
    body: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "description": description,
        "files_url": files_url or dataset_files_url(namespace, name),
    }
    if project:
        body["project"] = project
    if custom_fields:
        body["custom_fields"] = dict(custom_fields)
    return body


# --- Deployment Management -------------------------------------------------------------------------


def dms_deployment_body_for(
    model_name: str,
    namespace: str,
    *,
    gpus: int | None = None,
    tag: str | None = None,
    pvc_size: str | None = None,
    registry_base: str = "nvcr.io/nim",
    additional_envs: Mapping[str, str] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """``POST /v1/deployment/model-deployments`` for any model (a candidate NIM or a local judge)."""
    nim_deployment: dict[str, Any] = {
        "image_name": f"{registry_base.rstrip('/')}/{model_name}",
        "image_tag": tag or DEFAULT_NIM_TAG,
        "gpu": gpus or 1,
    }
    if pvc_size:
        nim_deployment["pvc_size"] = pvc_size
    envs = DEFAULT_NIM_ENVS if additional_envs is None else additional_envs
    if envs:
        nim_deployment["additional_envs"] = dict(envs)
    body: dict[str, Any] = {
        "name": deployment_name(model_name),
        "namespace": namespace,
        "config": {"model": model_name, "nim_deployment": nim_deployment},
    }
    if description:
        body["description"] = description
    return body


def dms_deployment_body(
    nim: NIMConfig, namespace: str, *, additional_envs: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """DMS body for a candidate NIM; embedding NIMs get no guided-decoding env."""
    envs = additional_envs if additional_envs is not None else (DEFAULT_NIM_ENVS if nim.model_type == "llm" else {})
    return dms_deployment_body_for(
        nim.model_name,
        namespace,
        gpus=nim.gpus,
        tag=nim.tag,
        pvc_size=nim.pvc_size,
        registry_base=nim.registry_base,
        additional_envs=envs,
        description=f"agent-flywheel candidate {nim.model_name}",
    )


def judge_deployment_body(judge: RemoteModelConfig, namespace: str) -> dict[str, Any]:
    """DMS body for a locally deployed LLM judge (``deployment_type: local``)."""
    if judge.deployment_type != "local":
        raise ValueError("only a local judge is deployed through DMS; a remote judge is called at its url")
    return dms_deployment_body_for(
        judge.model_name,
        namespace,
        gpus=judge.gpus,
        tag=judge.tag,
        pvc_size=judge.pvc_size,
        description=f"agent-flywheel LLM judge {judge.model_name}",
    )


# --- Customizer ------------------------------------------------------------------------------------


def _customizer(nim: NIMConfig) -> CustomizerConfig:
    if nim.customizer_configs is None:
        raise ValueError(f"{nim.model_name}: customizer_configs is required to fine-tune it")
    return nim.customizer_configs


def _training_option(training: TrainingConfig, customizer: CustomizerConfig) -> dict[str, Any]:
    return {
        "training_type": training.training_type,
        "finetuning_type": training.finetuning_type,
        "num_gpus": customizer.gpus,
        "num_nodes": customizer.num_nodes,
        "tensor_parallel_size": customizer.tensor_parallel_size,
        "data_parallel_size": customizer.data_parallel_size,
        "use_sequence_parallel": customizer.use_sequence_parallel,
        "micro_batch_size": customizer.micro_batch_size,
    }


def customization_config_name(nim: NIMConfig, training: TrainingConfig | None = None) -> str:
    """``{model}@v1.0.0+fw<hash8>``: versioned like NeMo's seeded configs, unique per content."""
    training = training or TrainingConfig()
    customizer = _customizer(nim)
    digest = content_hash(customizer, _training_option(training, customizer))[:8]
    return f"{nim.model_name.split('/')[-1]}@{CONFIG_VERSION}+fw{digest}"


def customization_config_ref(nim: NIMConfig, namespace: str, training: TrainingConfig | None = None) -> str:
    """``{namespace}/{config name}``: what a job's ``config`` field names."""
    return f"{namespace}/{customization_config_name(nim, training)}"


def customization_config_body(nim: NIMConfig, namespace: str, training: TrainingConfig | None = None) -> dict[str, Any]:
    """``POST /v1/customization/configs``: the training template for one base model."""
    training = training or TrainingConfig()
    customizer = _customizer(nim)
    return {
        "name": customization_config_name(nim, training),
        "namespace": namespace,
        "description": f"agent-flywheel {training.training_type}/{training.finetuning_type} config for {nim.model_name}",
        "target": customizer.target,
        "training_options": [_training_option(training, customizer)],
        "training_precision": customizer.training_precision,
        "max_seq_length": customizer.max_seq_length,
    }


def hyperparameters_body(training: TrainingConfig, lora: LoRAConfig) -> dict[str, Any]:
    """The job's ``hyperparameters``; LoRA settings (with ``alpha``) only for LoRA fine-tuning."""
    body: dict[str, Any] = {
        "training_type": training.training_type,
        "finetuning_type": training.finetuning_type,
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "learning_rate": training.learning_rate,
    }
    if training.finetuning_type in ("lora", "lora_merged"):
        lora_body: dict[str, Any] = {"adapter_dim": lora.adapter_dim, "adapter_dropout": lora.adapter_dropout}
        if lora.alpha is not None:
            lora_body["alpha"] = lora.alpha
        body["lora"] = lora_body
    return body


def _job_labels(
    description: str, fields: Mapping[str, Any], workload_id: str | None, idempotency: IdempotencyKey | None
) -> tuple[str, dict[str, Any]]:
    """A job's description and ``custom_fields``: ``fields``, its workload, and the idempotency key a retried
    run finds it by (in both, since a service's list filters may not reach ``custom_fields``)."""
    custom_fields = dict(fields)
    if workload_id:
        custom_fields["flywheel_workload_id"] = workload_id
    if idempotency is None:
        return description, custom_fields
    return idempotency.describe(description), custom_fields | idempotency.custom_fields()


def customization_job_body(
    nim: NIMConfig,
    namespace: str,
    dataset_name: str,
    *,
    training: TrainingConfig | None = None,
    lora: LoRAConfig | None = None,
    idempotency: IdempotencyKey | None = None,
    workload_id: str | None = None,
    dataset_namespace: str | None = None,
) -> dict[str, Any]:
    """``POST /v1/customization/jobs``: fine-tune ``nim`` on a registered train dataset.

    The name and description carry the idempotency key (the Customizer's list filters cannot reach
    ``custom_fields``, so the lookup matches on them client-side).
    """
    training = training or TrainingConfig()
    lora = lora or LoRAConfig()
    name = customization_job_name(workload_id, nim.model_name, idempotency.short if idempotency else None)
    description, custom_fields = _job_labels(
        f"agent-flywheel {training.finetuning_type} fine-tune of {nim.model_name} on {dataset_name}",
        {"flywheel_base_model": nim.model_name},
        workload_id,
        idempotency,
    )
    return {
        "name": name,
        "namespace": namespace,
        "description": description,
        "config": customization_config_ref(nim, namespace, training),
        "dataset": {"name": dataset_name, "namespace": dataset_namespace or namespace},
        "hyperparameters": hyperparameters_body(training, lora),
        "output_model": output_model_ref(namespace, nim.model_name),
        "custom_fields": custom_fields,
    }


# --- Evaluator -------------------------------------------------------------------------------------


def judge_model(judge: RemoteModelConfig, api_key: SecretStr | None = None) -> JudgeModel:
    """The judge as the Evaluator wants it: a model name (local, served by NIM) or an ``api_endpoint``.

    The URL is the full chat-completions URL whether the config wrote a base or the blueprint's full URL.
    The API key (:func:`~agent_flywheel.endpoints.remote_api_key`), when there is one, goes into this structure
    only, i.e. into the Evaluator's own payload.
    """
    if judge.deployment_type == "local":
        return judge.model_name
    if not judge.url:
        raise ValueError("a remote judge needs a url")
    endpoint: dict[str, Any] = {"url": judge.chat_completions_url, "model_id": judge.model_name}
    if api_key is not None and api_key.get_secret_value():
        endpoint["api_key"] = api_key.get_secret_value()
    return {"api_endpoint": endpoint}


def _judge_metric(judge: JudgeModel, system: str, user: str, score: str, pattern: str) -> dict[str, Any]:
    return {
        "type": "llm-judge",
        "params": {
            "model": judge,
            "template": {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]},
            "scores": {score: {"type": "int", "parser": {"type": "regex", "pattern": pattern}}},
        },
    }


def _eval_dataset(files_url: str, limit: int | None) -> dict[str, Any]:
    dataset: dict[str, Any] = {"files_url": files_url}
    if limit is not None:
        dataset["limit"] = limit
    return dataset


def tool_calling_eval_config(
    files_url: str,
    *,
    tool_choice: str = "auto",
    limit: int | None = None,
    judge: JudgeModel | None = None,
) -> dict[str, Any]:
    """Custom eval config: replay logged requests with their tools; score calls (and a judge's correctness)."""
    metrics: dict[str, Any] = {
        TOOL_CALLING_METRIC: {
            "type": "tool-calling",
            "params": {"tool_calls_ground_truth": TOOL_CALLS_GROUND_TRUTH},
        }
    }
    if judge is not None:
        metrics[CORRECTNESS_METRIC] = _judge_metric(
            judge, TOOL_CALLING_JUDGE_PROMPT, TOOL_CALLING_JUDGE_USER, RATING_SCORE, TOOL_CALLING_RATING_PATTERN
        )
    return {
        "type": "custom",
        "tasks": {
            TOOL_CALLING_TASK: {
                "type": "chat-completion",
                "dataset": _eval_dataset(files_url, limit),
                "params": {
                    "template": {
                        "messages": "{{ item.request.messages | tojson }}",
                        "tools": "{{ item.request.tools | tojson }}",
                        "tool_choice": tool_choice,
                    }
                },
                "metrics": metrics,
            }
        },
    }


def similarity_eval_config(files_url: str, *, judge: JudgeModel, limit: int | None = None) -> dict[str, Any]:
    """Custom eval config for workloads without tools: a judge rates similarity to the logged answer, 1-10."""
    return {
        "type": "custom",
        "tasks": {
            SIMILARITY_TASK: {
                "type": "chat-completion",
                "dataset": _eval_dataset(files_url, limit),
                "params": {"template": {"messages": "{{ item.request.messages | tojson }}"}},
                "metrics": {
                    SIMILARITY_METRIC: _judge_metric(
                        judge, SIMILARITY_JUDGE_PROMPT, SIMILARITY_JUDGE_USER, SIMILARITY_SCORE, SIMILARITY_PATTERN
                    )
                },
            }
        },
    }


def eval_dataset_limit(cfg: FlywheelConfig) -> int | None:
    """Samples per eval job from *this run's* config (blueprint bug 6 read the global one); None = all."""
    return cfg.evaluation_config.limit


def eval_config_for_run(
    cfg: FlywheelConfig,
    files_url: str,
    *,
    tool_calling: bool,
    judge_api_key: SecretStr | None = None,
) -> dict[str, Any]:
    """The eval config a flywheel run uses: tool-calling or similarity, limit, tool_choice and judge from ``cfg``."""
    limit = eval_dataset_limit(cfg)
    judge = judge_model(cfg.llm_judge_config, judge_api_key)
    if tool_calling:
        return tool_calling_eval_config(
            files_url,
            tool_choice=cfg.evaluation_config.tool_choice,
            limit=limit,
            judge=judge if cfg.evaluation_config.judge_enabled else None,
        )
    return similarity_eval_config(files_url, judge=judge, limit=limit)


def evaluation_job_body(
    config: Mapping[str, Any],
    target_model: str,
    namespace: str,
    *,
    idempotency: IdempotencyKey | None = None,
    eval_mode: str | None = None,
    workload_id: str | None = None,
) -> dict[str, Any]:
    """``POST /v1/evaluation/jobs`` with an inline config and a model target served by NIM."""
    fields: dict[str, Any] = {"flywheel_target_model": target_model}
    if eval_mode:
        fields["flywheel_eval_mode"] = eval_mode
    description, custom_fields = _job_labels(
        f"agent-flywheel {eval_mode or 'eval'} of {target_model}", fields, workload_id, idempotency
    )
    return {
        "namespace": namespace,
        "description": description,
        "config": dict(config),
        "target": {"type": "model", "model": target_model},
        "custom_fields": custom_fields,
    }
