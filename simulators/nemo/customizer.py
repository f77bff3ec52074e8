"""Customizer targets and configs (``/v1/customization/targets``, ``/v1/customization/configs``).

Since 25.06 a job must name a *versioned* config, and a config must point at a registered, enabled
target. The seeded targets and configs are the ones a freshly installed platform (Helm defaults) has.
Jobs live in :mod:`customization_jobs`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulators.nemo.context import NemoSim
from simulators.nemo.crud import NamedKind, add_named_routes
from simulators.nemo.errors import not_found
from simulators.nemo.ids import new_id
from simulators.nemo.state import Record, public, ref

JSONDict = dict[str, Any]
FinetuningType = Literal["lora", "lora_merged", "all_weights"]
TrainingType = Literal["sft", "distillation", "dpo", "grpo"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class TargetBody(_Body):
    name: str | None = None
    namespace: str | None = None
    base_model: str | None = None
    enabled: bool = True
    model_uri: str | None = None
    model_path: str | None = None
    model_type: Literal["nemo", "hf", "hf-lora"] = "nemo"
    num_parameters: int = Field(gt=0)
    precision: str = Field(min_length=1)
    hf_endpoint: str | None = None
    tokenizer: JSONDict | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class TrainingOptionBody(_Body):
    training_type: TrainingType
    finetuning_type: FinetuningType
    num_gpus: int = Field(ge=1)
    micro_batch_size: int = Field(ge=1)
    num_nodes: int = Field(default=1, ge=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int | None = Field(default=None, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    expert_model_parallel_size: int | None = Field(default=None, ge=1)
    use_sequence_parallel: bool = False


class ConfigBody(_Body):
    name: str | None = None
    namespace: str | None = None
    target: str | JSONDict
    training_options: list[TrainingOptionBody] = Field(min_length=1)
    max_seq_length: int = Field(gt=0)
    training_precision: str | None = None
    prompt_template: str | None = None
    chat_prompt_template: str | None = None
    dataset_schemas: list[JSONDict] | None = None
    pod_spec: JSONDict | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None

    @field_validator("target")
    @classmethod
    def _target_reference(cls, value: str | JSONDict) -> str | JSONDict:
        if isinstance(value, str) and "/" not in value:
            raise ValueError("target must be 'namespace/name' (e.g. meta/llama-3.2-1b-instruct@2.0)")
        return value


def target_key(target: str | JSONDict) -> str:
    """``namespace/name`` of a target given as a reference string or an object."""
    if isinstance(target, str):
        return target
    return ref(str(target.get("namespace") or "default"), str(target.get("name") or ""))


def find_target(sim: NemoSim, target: str | JSONDict) -> Record | None:
    """The registered target a config points at, or None."""
    record = sim.store.table("customization_targets").get(target_key(target))
    return public(record) if record else None


async def _target_defaults(sim: NemoSim, record: Record) -> None:
    name = str(record["name"])
    record["base_model"] = record.get("base_model") or f"{record['namespace']}/{name.split('@')[0]}"
    record["model_path"] = record.get("model_path") or name.replace("@", "_").replace(".", "_")
    record["status"] = record.get("status") or "ready"


async def _config_target_exists(sim: NemoSim, record: Record) -> None:
    if find_target(sim, record["target"]) is None:
        raise not_found(f"Customization target {target_key(record['target'])}")


TARGETS = NamedKind(
    table="customization_targets",
    path="/v1/customization/targets",
    label="Customization target",
    model=TargetBody,
    id_prefix="cust-target",
    before_save=_target_defaults,
    sortable=frozenset({"created_at", "updated_at", "name", "id", "num_parameters", "enabled"}),
)
CONFIGS = NamedKind(
    table="customization_configs",
    path="/v1/customization/configs",
    label="Customization config",
    model=ConfigBody,
    before_save=_config_target_exists,
    resolvers={
        "training_type": lambda r: [o.get("training_type") for o in r.get("training_options") or []],
        "finetuning_type": lambda r: [o.get("finetuning_type") for o in r.get("training_options") or []],
    },
    sortable=frozenset({"created_at", "updated_at", "name", "target_enabled", "num_parameters"}),
)

# (model, parameters) of the targets a fresh install registers.
SEEDED_TARGETS = (
    ("llama-3.2-1b-instruct", 1_000_000_000),
    ("llama-3.2-3b-instruct", 3_000_000_000),
    ("llama-3.1-8b-instruct", 8_000_000_000),
)


def seed_customizer(sim: NemoSim, now_iso: str) -> None:
    """Targets ``meta/<model>@2.0`` (enabled, ready) and configs ``meta/<model>@v1.0.0+A100`` (LoRA and full SFT)."""
    targets = sim.store.table("customization_targets")
    configs = sim.store.table("customization_configs")
    for model, parameters in SEEDED_TARGETS:
        target_name = f"{model}@2.0"
        targets.setdefault(
            ref("meta", target_name),
            {
                "id": new_id("cust-target"),
                "name": target_name,
                "namespace": "meta",
                "base_model": f"meta/{model}",
                "enabled": True,
                "model_uri": f"ngc://nvidia/nemo/{model.replace('.', '_')}:2.0",
                "model_path": f"{model.replace('.', '_')}_2_0",
                "model_type": "nemo",
                "num_parameters": parameters,
                "precision": "bf16-mixed",
                "hf_endpoint": None,
                "tokenizer": None,
                "description": f"{model} (seeded by the simulator)",
                "project": None,
                "custom_fields": {},
                "ownership": None,
                "status": "ready",
                "created_at": now_iso,
                "updated_at": now_iso,
            },
        )
        options = [
            {
                "training_type": "sft",
                "finetuning_type": finetuning,
                "num_gpus": gpus,
                "micro_batch_size": 1,
                "num_nodes": 1,
                "tensor_parallel_size": 1,
                "data_parallel_size": gpus,
                "pipeline_parallel_size": 1,
                "expert_model_parallel_size": None,
                "use_sequence_parallel": False,
            }
            for finetuning, gpus in (("lora", 1), ("all_weights", 8 if parameters > 3e9 else 1))
        ]
        configs.setdefault(
            ref("meta", f"{model}@v1.0.0+A100"),
            {
                "name": f"{model}@v1.0.0+A100",
                "namespace": "meta",
                "target": ref("meta", target_name),
                "training_options": options,
                "max_seq_length": 4096,
                "training_precision": "bf16-mixed",
                "prompt_template": "{prompt} {completion}",
                "chat_prompt_template": None,
                "dataset_schemas": None,
                "pod_spec": None,
                "description": f"{model} training on A100 (seeded by the simulator)",
                "project": None,
                "custom_fields": {},
                "ownership": None,
                "created_at": now_iso,
                "updated_at": now_iso,
            },
        )


def build_router(sim: NemoSim) -> APIRouter:
    """Target and config routes."""
    router = APIRouter()
    add_named_routes(router, sim, TARGETS)
    add_named_routes(router, sim, CONFIGS)
    return router
