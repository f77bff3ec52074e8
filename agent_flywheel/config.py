"""Configuration models for the flywheel and the scaling lifecycle.

Every section of the NVIDIA Data Flywheel Blueprint's ``config.yaml`` has a model here, with the
blueprint's YAML defaults, plus our own sections (promotion gate, log store, evaluation, scaling,
rollout). Flows take these models as parameters, so the Prefect UI renders a form and every run
records its whole configuration.

Defaults that differ from the blueprint on purpose are marked ``# ours:`` with the reason.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent_flywheel.endpoints import chat_completions_url, embeddings_url

log = logging.getLogger(__name__)

#: ``data_split_config.limit: null`` (the blueprint's "no limit"): more records than any run reads.
NO_LIMIT = 10**12


class ConfigError(ValueError):
    """A configuration file could not be read or does not validate; the message names file, key and problem."""


class _Section(BaseModel):
    """Base for every config section: unknown keys are an error, so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------------
# Flywheel
# --------------------------------------------------------------------------------------------------


class CustomizerConfig(_Section):
    """How NeMo Customizer trains a LoRA adapter for one NIM (blueprint ``nims[].customizer_configs``)."""

    target: str = Field(description="Customization target, e.g. meta/llama-3.2-1b-instruct@2.0")
    gpus: int = Field(default=1, ge=1)
    num_nodes: int = Field(default=1, ge=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(default=1, ge=1)
    use_sequence_parallel: bool = False
    micro_batch_size: int = Field(default=1, ge=1)
    training_precision: str = "bf16-mixed"
    max_seq_length: int = Field(default=4096, ge=128)


class NIMConfig(_Section):
    """A candidate NIM: how to deploy it, whether to fine-tune it, and what it costs."""

    model_name: str
    model_type: Literal["llm", "embedding"] = "llm"
    context_length: int = Field(default=8192, ge=512)
    gpus: int | None = Field(default=None, ge=1)
    pvc_size: str | None = None
    tag: str | None = None
    registry_base: str = "nvcr.io/nim"
    customization_enabled: bool = False
    customizer_configs: CustomizerConfig | None = None
    # ours: the promotion gate prefers the cheapest non-inferior candidate, so cost must be known.
    num_parameters_b: float | None = Field(
        default=None, gt=0, description="Model size in billions of parameters; parsed from the name if absent"
    )
    cost_per_1k_tokens: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _customizer_needed(self) -> NIMConfig:
        if self.customization_enabled and self.customizer_configs is None:
            raise ValueError("customizer_configs is required when customization_enabled is true")
        return self

    @property
    def size_b(self) -> float | None:
        """Model size in billions of parameters, from the config or the usual ``-<N>b-`` in the name."""
        if self.num_parameters_b is not None:
            return self.num_parameters_b
        return parse_model_size_b(self.model_name)


class TeacherConfig(NIMConfig):
    """The model whose logged answers are learned from, evaluated like a candidate (``base-eval``) as the bar.

    ``deployment_type``: ``served`` (default) when the NIM proxy serves it already (usually the production
    model that wrote the traffic): the preflight checks that it answers, and a run stops before any GPU work
    when it does not. ``local``: the flywheel deploys it through Deployment Management when the NIM proxy does
    not serve it, and removes that deployment when the run is done (``gpus``, ``tag``, ``pvc_size`` as for a
    candidate).
    """

    # ours: the blueprint has no teacher section (it never evaluates the teacher).
    deployment_type: Literal["served", "local"] = "served"


def parse_model_size_b(model_name: str) -> float | None:
    """Read ``70`` from ``meta/llama-3.3-70b-instruct``; None when the name carries no size."""
    import re

    match = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])", model_name.split("/")[-1])
    return float(match.group(1)) if match else None


class RemoteModelConfig(_Section):
    """A model served by someone else (an OpenAI-compatible endpoint) or deployed locally through DMS."""

    deployment_type: Literal["local", "remote"] = "remote"
    model_name: str
    url: str | None = Field(
        default=None,
        description=(
            "For remote: the OpenAI-compatible API, as a base (https://host), a root (https://host/v1) or the "
            "full operation URL as the blueprint writes it (…/v1/chat/completions, …/v1/embeddings)"
        ),
    )
    context_length: int = Field(default=32768, ge=512)
    gpus: int | None = Field(default=None, ge=1)
    pvc_size: str | None = None
    tag: str | None = None
    # ours: the blueprint reads the key from fixed variables; the key itself never belongs in a config.
    api_key_env: str | None = Field(
        default=None,
        description=(
            "For remote: the environment variable holding the API key when the block has no secret; default "
            "as the blueprint: LLM_JUDGE_API_KEY (judge) or EMB_API_KEY (embeddings), then NVIDIA_API_KEY"
        ),
    )

    @model_validator(mode="after")
    def _url_for_remote(self) -> RemoteModelConfig:
        if self.deployment_type == "remote" and not self.url:
            raise ValueError("url is required when deployment_type is remote")
        return self

    @property
    def chat_completions_url(self) -> str | None:
        """``url`` as a chat-completions URL, however it was written (None for a local model)."""
        return chat_completions_url(self.url) if self.url else None

    @property
    def embeddings_url(self) -> str | None:
        """``url`` as an embeddings URL, however it was written (None for a local model)."""
        return embeddings_url(self.url) if self.url else None


class DataSplitConfig(_Section):
    """How records become eval / validation / train sets (blueprint ``data_split_config``).

    When records are scarce, training comes first and the evaluation set gives way, down to the minimum
    for a meaningful gate (see ``min_train_records``); below that the build stops before any job exists.
    """

    eval_size: int = Field(
        default=100,
        ge=1,
        description="Records in the evaluation set; fewer when records are scarce (see min_train_records)",
    )
    val_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    min_total_records: int = Field(default=50, ge=1)
    # ours: a fixed seed (the blueprint's is null), so a rerun on the same records builds the same split.
    random_seed: int | None = 42
    # ours: the blueprint's "null means no limit" is read as no limit.
    limit: int = Field(default=1000, ge=1, description="Records to use at most (a seeded sample); null: no limit")
    parse_function_arguments: bool = True
    # ours: the blueprint puts eval_size records into evaluation first and fine-tunes on what is left, even nothing.
    min_train_records: int = Field(
        default=50,
        ge=1,
        description=(
            "Records the train split keeps when records are scarce. The split is then: training and validation "
            "get enough records for min_train_records training records (validation is val_ratio of them); the "
            "evaluation set gets eval_size records, or the rest when fewer remain, but never fewer than the "
            "minimum for a meaningful gate: the smallest set on which a candidate wrong on one sample more than "
            "the teacher can still pass (61 at promotion_gate margin 0.05 and confidence 0.95). With fewer "
            "records than both need, the dataset build stops before any job is created and says how many it needs."
        ),
    )

    @field_validator("limit", mode="before")
    @classmethod
    def _no_limit(cls, value: Any) -> Any:
        return NO_LIMIT if value is None else value

    @model_validator(mode="after")
    def _consistent(self) -> DataSplitConfig:
        if self.limit < self.min_total_records:
            raise ValueError(f"limit ({self.limit}) must be >= min_total_records ({self.min_total_records})")
        return self


class ExampleSelection(StrEnum):
    UNIFORM = "uniform_distribution"
    SEMANTIC = "semantic_similarity"


class SimilarityConfig(_Section):
    relevance_ratio: float = Field(default=0.7, ge=0.0, le=1.0)
    embedding_nim_config: RemoteModelConfig | None = None


class ICLConfig(_Section):
    """In-context-learning example selection (blueprint ``icl_config``)."""

    max_context_length: int = Field(default=32768, ge=512)
    reserved_tokens: int = Field(default=4096, ge=0)
    max_examples: int = Field(default=3, ge=0)
    min_examples: int = Field(default=1, ge=0)
    # ours: uniform by default, because semantic selection needs an embedding NIM.
    example_selection: ExampleSelection = ExampleSelection.UNIFORM
    similarity_config: SimilarityConfig = Field(default_factory=SimilarityConfig)

    @model_validator(mode="after")
    def _consistent(self) -> ICLConfig:
        if self.min_examples > self.max_examples:
            raise ValueError(f"min_examples ({self.min_examples}) exceeds max_examples ({self.max_examples})")
        if self.reserved_tokens >= self.max_context_length:
            raise ValueError("reserved_tokens must be smaller than max_context_length")
        if self.example_selection == ExampleSelection.SEMANTIC and self.similarity_config.embedding_nim_config is None:
            raise ValueError(
                "similarity_config.embedding_nim_config is required when example_selection is semantic_similarity"
            )
        return self


class TrainingConfig(_Section):
    """Fine-tuning hyperparameters sent to NeMo Customizer (blueprint ``training_config``)."""

    training_type: Literal["sft", "distillation", "dpo", "grpo"] = "sft"
    finetuning_type: Literal["lora", "lora_merged", "all_weights"] = "lora"
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=0.0001, gt=0)


class LoRAConfig(_Section):
    """LoRA adapter shape (blueprint ``lora_config``; ``alpha`` is ours, the blueprint documents but never sends it)."""

    adapter_dim: int = Field(default=32, ge=1)
    adapter_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    alpha: int | None = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _power_of_two(self) -> LoRAConfig:
        if self.adapter_dim & (self.adapter_dim - 1):
            raise ValueError(f"adapter_dim must be a power of 2 (NeMo Customizer requires it), got {self.adapter_dim}")
        return self


class EvaluationConfig(_Section):
    """How NeMo Evaluator jobs are built (ours: the blueprint hard-codes these)."""

    # ours: "auto" rather than the blueprint's "required", so calling a tool when none is wanted is measured.
    tool_choice: Literal["auto", "required"] = "auto"
    # ours: keep records whose reference answer calls no tool (the blueprint drops them).
    include_no_call_records: bool = True
    limit: int | None = Field(default=None, ge=1, description="Samples per eval job; None means the whole eval set")
    judge_enabled: bool = True
    poll_interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=3600.0, gt=0)


EvalMode = Literal["base-eval", "icl-eval", "customized-eval"]
EVAL_MODES: tuple[EvalMode, ...] = ("base-eval", "icl-eval", "customized-eval")


class PromotionGateConfig(_Section):
    """When a candidate may replace the teacher (ours: the blueprint has no gate)."""

    metric: str = "function_name_and_args_accuracy"
    margin: float = Field(default=0.05, ge=0.0, le=1.0, description="Non-inferiority margin on the metric")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(default=2000, ge=100)
    eval_modes: list[EvalMode] = Field(default_factory=lambda: list(EVAL_MODES))
    cost_basis: Literal["size", "cost_per_1k_tokens"] = "size"
    registered_model_name: str | None = Field(
        default=None, description="MLflow registered model; default flywheel-<workload_id>"
    )


#: Records that reach the log store up to this many minutes after newer ones are still read by the next run.
DEFAULT_LATE_ARRIVAL_MINUTES = 10.0


class ExtractionConfig(_Section):
    """What to read from the log store (ours: every record since the last successful run, page by page; the
    blueprint always reads the newest 2 x limit records). ``data_split_config.limit`` bounds the dataset, not
    the read: the build takes a seeded sample of that many from everything read."""

    page_size: int = Field(default=500, ge=1, le=10000)
    max_records: int | None = Field(
        default=None,
        ge=1,
        description="Read at most this many (distinct, valid) records per run, the newest; older ones in the window "
        "are skipped for good. Default: every record since the watermark",
    )
    slices: int = Field(
        default=1,
        ge=1,
        le=32,
        description="Read the point in time as this many slices in parallel (large windows); the records are the "
        "same for any count",
    )
    since: str | None = Field(default=None, description="ISO 8601 or epoch seconds; overrides the watermark")
    until: str | None = None
    full_rebuild: bool = False
    pit_keep_alive: str = "2m"
    late_arrival_minutes: float = Field(
        default=DEFAULT_LATE_ARRIVAL_MINUTES,
        ge=0,
        description="How far back each incremental read looks for records that reached the log store late",
    )
    # ours: learn only from the teacher's answers (canary, load-test and student traffic share the index).
    teacher_only: bool = Field(default=True, description="Skip records answered by a model other than the teacher")


class _BlueprintSection(BaseModel):
    """A section of the blueprint's ``config.yaml`` that we read but do not run on: its keys are kept as given
    (a newer blueprint's extra keys included), and :meth:`FlywheelConfig.notes` says what became of them."""

    model_config = ConfigDict(extra="allow")


class NmpConfig(_BlueprintSection):
    """The blueprint's ``nmp_config``: NeMo endpoints and the namespace of everything a run creates."""

    nemo_base_url: str | None = None
    nim_base_url: str | None = None
    datastore_base_url: str | None = None
    nmp_namespace: str | None = None


class LoggingSection(_BlueprintSection):
    """The blueprint's ``logging_config``."""

    level: str | None = None


class MlflowSection(_BlueprintSection):
    """The blueprint's ``mlflow_config``."""

    enabled: bool | None = None
    tracking_uri: str | None = None
    experiment_name_prefix: str | None = None
    artifact_location: str | None = None


class FlywheelConfig(_Section):
    """Everything one flywheel run needs besides the service endpoints (which live in Prefect blocks).

    The blueprint's ``config.yaml`` loads as is: its ``nmp_config``, ``logging_config`` and ``mlflow_config``
    are accepted; ``nmp_config.nmp_namespace`` becomes ``namespace`` (unless ``namespace`` is set too), and
    :meth:`notes` says in one line each what became of the rest.
    """

    namespace: str = "dfwbp"
    teacher: TeacherConfig = Field(
        default_factory=lambda: TeacherConfig(model_name="meta/llama-3.3-70b-instruct", context_length=32768, gpus=4)
    )
    nims: list[NIMConfig] = Field(min_length=1)
    llm_judge_config: RemoteModelConfig = Field(
        default_factory=lambda: RemoteModelConfig(
            deployment_type="local", model_name="meta/llama-3.3-70b-instruct", gpus=4
        )
    )
    data_split_config: DataSplitConfig = Field(default_factory=DataSplitConfig)
    icl_config: ICLConfig = Field(default_factory=ICLConfig)
    training_config: TrainingConfig = Field(default_factory=TrainingConfig)
    lora_config: LoRAConfig = Field(default_factory=LoRAConfig)
    evaluation_config: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion_gate: PromotionGateConfig = Field(default_factory=PromotionGateConfig)
    extraction: ExtractionConfig = Field(default_factory=ExtractionConfig)
    # The blueprint's sections without an equivalent here (see notes()).
    nmp_config: NmpConfig | None = None
    logging_config: LoggingSection | None = None
    mlflow_config: MlflowSection | None = None

    @model_validator(mode="before")
    @classmethod
    def _blueprint_namespace(cls, data: Any) -> Any:
        if isinstance(data, dict) and "namespace" not in data:
            nmp = data.get("nmp_config")
            namespace = nmp.get("nmp_namespace") if isinstance(nmp, dict) else None
            if isinstance(namespace, str) and namespace:
                return {**data, "namespace": namespace}
        return data

    def notes(self) -> list[str]:
        """One line per blueprint setting that this config accepts but does not act on as the blueprint did."""
        notes: list[str] = []
        nmp = self.nmp_config
        if nmp is not None:
            if nmp.nmp_namespace and nmp.nmp_namespace != self.namespace:
                notes.append(
                    f"nmp_config.nmp_namespace {nmp.nmp_namespace!r} is not used: namespace {self.namespace!r} is set"
                )
            urls = [key for key in ("nemo_base_url", "nim_base_url", "datastore_base_url") if getattr(nmp, key)]
            if urls:
                notes.append(
                    f"nmp_config.{', nmp_config.'.join(urls)}: service URLs come from the NemoPlatform block "
                    "(its entity_store/customizer/evaluator/deployment URLs, nim_url, datastore_url), not from here"
                )
        if self.logging_config is not None:
            notes.append(
                f"logging_config.level {self.logging_config.level!r}: run logs follow Prefect's logging "
                "settings (PREFECT_LOGGING_LEVEL), not this key"
            )
        if self.mlflow_config is not None:
            notes.append(
                "mlflow_config: MLflow always records runs here, through the MlflowTracking block (its tracking "
                "URI and artifact location); experiments are named flywheel/<workload_id>"
            )
        for path, extra in self._blueprint_extras():
            notes.append(f"{path}: unknown blueprint key {extra!r} ignored")
        return notes

    def _blueprint_extras(self) -> list[tuple[str, str]]:
        extras = []
        for name in ("nmp_config", "logging_config", "mlflow_config"):
            section = getattr(self, name)
            if section is not None and section.model_extra:
                extras += [(name, key) for key in sorted(section.model_extra)]
        return extras

    @model_validator(mode="after")
    def _consistent(self) -> FlywheelConfig:
        names = [n.model_name for n in self.nims]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"nims lists {', '.join(duplicates)} more than once")
        if self.icl_config.max_examples > self.data_split_config.eval_size:
            raise ValueError("icl_config.max_examples must not exceed data_split_config.eval_size")
        return self


# --------------------------------------------------------------------------------------------------
# Scaling lifecycle
# --------------------------------------------------------------------------------------------------


class ProfileConfig(_Section):
    inputs_file: str | None = Field(default=None, description="JSONL of example inputs; default: built-in demo")
    num_requests: int = Field(default=20, ge=1)


class LoadSweepConfig(_Section):
    concurrencies: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    arrival_rates: list[float] = Field(default_factory=list, description="Open-loop Poisson rates (req/s)")
    num_passes: int = Field(default=3, ge=1)
    requests_per_level: int = Field(default=64, ge=1, description="Measured requests per level and pass")
    warmup_requests: int = Field(default=4, ge=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    processes: int = Field(
        default=1, ge=1, description="Generator processes on the sweep's machine; every level is split over them"
    )
    workers: int = Field(
        default=1, ge=1, description="Generator tasks every level is split over, run by `worker_runner`; 1: none"
    )
    worker_runner: Literal["task-workers", "processes", "threads"] = Field(
        default="task-workers",
        description="Where the generator tasks run: Prefect task workers (`prefect task serve "
        "tasks/sweep.py:load_generator --limit 1`, e.g. pods on Kubernetes), or, to try it, a process pool or "
        "threads beside the sweep",
    )
    start_lead_s: float = Field(
        default=5.0, gt=0, description="How far ahead each level's common start time is set for generator tasks"
    )

    @model_validator(mode="after")
    def _levels(self) -> LoadSweepConfig:
        if any(c < 1 for c in self.concurrencies):
            raise ValueError("concurrencies must all be >= 1")
        if any(r <= 0 for r in self.arrival_rates):
            raise ValueError("arrival_rates must all be > 0")
        if self.processes > 1 and self.workers > 1:
            raise ValueError("split the load over processes or over workers, not both")
        return self


class SizingTargets(_Section):
    target_users: int = Field(default=200, ge=1)
    target_workflow_p95_s: float = Field(default=2.0, gt=0)
    target_llm_p95_s: float | None = Field(default=None, gt=0)
    test_gpus: int = Field(default=1, ge=1, description="GPUs behind the system under test")
    gpus_per_replica: int | None = Field(
        default=None, ge=1, description="GPUs of one serving replica; default: the system under test is one replica"
    )
    sticky_sessions: bool = Field(
        default=False,
        description="Users pinned to a replica (whole users per replica); default: requests balanced over replicas",
    )
    gpu_price_per_hour: float | None = Field(default=None, ge=0)
    confidence: float = Field(default=0.90, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(default=1000, ge=100)
    confirm: bool = Field(
        default=False, description="Re-measure at the recommended load per replica and report whether the SLO held"
    )

    @model_validator(mode="after")
    def _whole_replicas(self) -> SizingTargets:
        if self.gpus_per_replica is not None and self.test_gpus % self.gpus_per_replica:
            raise ValueError(
                f"the system under test must be whole replicas: test_gpus {self.test_gpus} is not a multiple of "
                f"gpus_per_replica {self.gpus_per_replica}"
            )
        return self


class RolloutStage(_Section):
    name: str
    weight: float = Field(gt=0, le=1.0, description="Share of users sent to the canary")
    duration_s: float = Field(gt=0)


class RolloutSLO(_Section):
    availability: float = Field(default=0.99, gt=0, lt=1, description="Target share of successful requests")
    p95_latency_s: float = Field(default=2.0, gt=0, description="Workflow (whole request) p95 target")
    llm_p95_latency_s: float | None = Field(
        default=None, gt=0, description="Per-LLM-call p95 target; null: the calls' SLIs are reported, not judged"
    )
    min_quality: float | None = Field(default=None, ge=0, le=1)
    slo_period_s: float = Field(default=30 * 24 * 3600, gt=0, description="The error budget's period")


RouterKind = Literal["none", "demo-agent", "http-hook"]


class RouterConfig(_Section):
    """Who shifts users to the canary: nobody (observe only, the default), the demo agent, or an HTTP hook."""

    kind: RouterKind = Field(
        default="none",
        description="none: observe only, never route a user; demo-agent: its /admin/routing; "
        "http-hook: POST {canary_model, weight} to url",
    )
    url: str | None = Field(default=None, description="http-hook: where to POST {canary_model, weight}")
    auth_header: str = Field(default="Authorization", description="http-hook: the header that carries the secret")
    auth_secret_block: str | None = Field(
        default=None, description="http-hook: name of a Prefect Secret block holding the auth header's value"
    )
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _hook_has_url(self) -> RouterConfig:
        if self.kind == "http-hook" and not self.url:
            raise ValueError("router.kind http-hook needs router.url")
        if self.kind != "http-hook" and (self.url or self.auth_secret_block):
            raise ValueError(f"router.url and router.auth_secret_block are for kind http-hook, not {self.kind!r}")
        return self


class RolloutConfig(_Section):
    stages: list[RolloutStage] = Field(
        default_factory=lambda: [
            RolloutStage(name="canary-5", weight=0.05, duration_s=3600),
            RolloutStage(name="canary-25", weight=0.25, duration_s=3600),
            RolloutStage(name="canary-50", weight=0.5, duration_s=3600),
            RolloutStage(name="full", weight=1.0, duration_s=3600),
        ]
    )
    slo: RolloutSLO = Field(default_factory=RolloutSLO)
    baseline_model: str = "meta/llama-3.3-70b-instruct"
    canary_model: str | None = Field(default=None, description="Default: the MLflow `champion` of the workload")
    router: RouterConfig = Field(default_factory=RouterConfig)
    synthetic_traffic: bool = Field(
        default=False,
        description="Drive simulated users through the demo agent's router instead of observing real traffic "
        "(needs router.kind demo-agent; for demos and staging only)",
    )
    window_s: float = Field(
        default=3600.0, gt=0, description="Observe only: the check judges the traffic of this long a window"
    )
    check_interval_s: float = Field(
        default=60.0, gt=0, description="Routed stages: how often a running stage is judged for an early rollback"
    )
    quality_attribute: str = Field(
        default="flywheel.quality", description="Span attribute holding a per-request quality score in [0, 1]"
    )

    @model_validator(mode="after")
    def _synthetic_needs_the_demo_router(self) -> RolloutConfig:
        if self.synthetic_traffic and self.router.kind != "demo-agent":
            raise ValueError(
                "synthetic_traffic drives simulated users through the demo agent's router: set router.kind: "
                f"demo-agent (it is {self.router.kind!r}), or observe real traffic with synthetic_traffic: false"
            )
        return self


class OtlpReceiverConfig(_Section):
    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0: every interface)")
    port: int = Field(default=0, ge=0, le=65535, description="0: a free port, for the run's duration")


class SpansConfig(_Section):
    """Where the profile and the sweep read the agent's spans: their own OTLP receiver and/or a traces file."""

    otlp_receiver: OtlpReceiverConfig | None = Field(
        default_factory=OtlpReceiverConfig, description="Receiver started for each run; null: none"
    )
    traces_file: str | None = Field(
        default=None, description="OTLP JSON lines written by `flywheel otlp serve --out` or a collector"
    )
    wait_s: float = Field(default=10.0, ge=0, description="How long to wait for spans after the last answer")


class ScalingConfig(_Section):
    app: str = "demo-agent"
    spans: SpansConfig = Field(default_factory=SpansConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    load_sweep: LoadSweepConfig = Field(default_factory=LoadSweepConfig)
    sizing: SizingTargets = Field(default_factory=SizingTargets)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

ModelT = TypeVar("ModelT", bound=BaseModel)


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: ``<file>: <dotted.key>: <message> (got <value>)``."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or item["type"] == "missing" else f" (got {got!r})"
        lines.append(f"{source}: {key}: {item['msg']}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, model: type[ModelT], source: str = "<config>") -> ModelT:
    """Validate already-loaded data, raising ConfigError that names the source, key and problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_config(path: str | Path, model: type[ModelT]) -> ModelT:
    """Load a YAML file into a config model; errors name the file, the key and the problem.

    A flywheel config's :meth:`FlywheelConfig.notes` (blueprint settings accepted but not acted on) are
    logged as warnings, one line each, naming the file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    config = parse_config(data, model, str(path))
    if isinstance(config, FlywheelConfig):
        for note in config.notes():
            log.warning("%s: %s", path, note)
    return config
