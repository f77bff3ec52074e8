"""The ``nim`` section of ``configs/local.yaml``: which models are servable, the quality and latency models.

Every key has a default, so ``nim: {}`` gives the documented behaviour (see ``docs/simulators.md``).
Unknown keys are an error, so a typo in the YAML is reported instead of silently ignored.

```yaml
nim:
  preloaded: [meta/llama-3.3-70b-instruct, nvidia/llama-3.2-nv-embedqa-1b-v2]
  teacher: meta/llama-3.3-70b-instruct
  log_index: flywheel
  quality: {icl_gap_fraction: 0.2, lora_ceiling: 0.985, lora_records_scale: 150}
  models:
    meta/llama-3.2-1b-instruct: {p_base: 0.55}
  latency:
    time_scale: 1.0
    default: {max_batch: 16, replicas: 1}
    models:
      meta/llama-3.3-70b-instruct: {decode_s_per_token: 0.006}
```
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulators.settings import LocalStackConfig, parse_settings

TEACHER_MODEL = "meta/llama-3.3-70b-instruct"
EMBEDDING_MODEL = "nvidia/llama-3.2-nv-embedqa-1b-v2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QualityParams(_Section):
    """How often a model answers like the teacher (see :mod:`simulators.nim.quality`)."""

    # Piecewise-linear in log(size in billions of parameters), clamped at both ends.
    size_anchors: dict[float, float] = Field(default_factory=lambda: {1.0: 0.60, 3.0: 0.70, 8.0: 0.80, 70.0: 0.99})
    default_size_b: float = Field(default=8.0, gt=0, description="Size assumed when the name has none")
    icl_gap_fraction: float = Field(default=0.2, ge=0, le=1, description="Share of the gap to 1 closed by ICL")
    icl_saturation: int = Field(default=3, ge=1, description="Examples at which ICL gives its full effect")
    lora_ceiling: float = Field(default=0.985, ge=0, le=1, description="p a LoRA adapter approaches")
    lora_records_scale: float = Field(default=150.0, gt=0, description="n in 1 - exp(-records / n)")
    lora_epoch_saturation: int = Field(default=1, ge=1, description="Epochs at which the records count fully")

    @field_validator("size_anchors")
    @classmethod
    def _anchors_valid(cls, anchors: dict[float, float]) -> dict[float, float]:
        if not anchors:
            raise ValueError("size_anchors needs at least one point")
        for size, p in anchors.items():
            if size <= 0 or not 0 <= p <= 1:
                raise ValueError(f"size_anchors: size must be > 0 and p in [0, 1], got {size}: {p}")
        return anchors


class ModelOverride(_Section):
    """Per-model quality knobs; a LoRA model also inherits its root's entry."""

    size_b: float | None = Field(default=None, gt=0)
    p_base: float | None = Field(default=None, ge=0, le=1, description="p before ICL and LoRA")


class LatencyOverride(_Section):
    """Per-model latency parameters; unset fields come from ``latency.default``."""

    overhead_s: float | None = Field(default=None, ge=0)
    prefill_s_per_token: float | None = Field(default=None, ge=0)
    decode_s_per_token: float | None = Field(default=None, ge=0)
    decode_s_per_token_per_request: float | None = Field(default=None, ge=0)
    max_batch: int | None = Field(default=None, ge=1)
    replicas: int | None = Field(default=None, ge=1)


class LatencyDefaults(_Section):
    """The continuous-batching server of every model unless overridden (simulated seconds)."""

    overhead_s: float = Field(default=0.01, ge=0, description="Fixed cost per request, inside the batch slot")
    prefill_s_per_token: float = Field(default=0.0002, ge=0)
    decode_s_per_token: float = Field(default=0.0035, ge=0, description="d0 in d0 + d1 * batch")
    decode_s_per_token_per_request: float = Field(default=0.0014, ge=0, description="d1 in d0 + d1 * batch")
    max_batch: int = Field(default=16, ge=1, description="Requests decoded together per replica")
    replicas: int = Field(default=1, ge=1)


class LatencySettings(_Section):
    """``time_scale`` multiplies every sleep (0: answer at once, for fast tests)."""

    time_scale: float = Field(default=1.0, ge=0)
    default: LatencyDefaults = Field(default_factory=LatencyDefaults)
    models: dict[str, LatencyOverride] = Field(default_factory=dict)


class NimSettings(_Section):
    """The whole ``nim`` section."""

    preloaded: list[str] = Field(default_factory=lambda: [TEACHER_MODEL, EMBEDDING_MODEL])
    persist: bool = Field(
        default=True, description="Keep registered models in <state_dir>/nim so a restart serves them"
    )
    teacher: str = TEACHER_MODEL
    reference_models: list[str] | None = Field(
        default=None, description="Models whose logged answers are references (default: [teacher]; [] = any)"
    )
    log_index: str = "flywheel"
    log_page_size: int = Field(default=500, ge=1, le=10000)
    log_refresh_min_interval_s: float = Field(
        default=1.0, ge=0, description="Real seconds between _count checks on a reference miss"
    )
    log_timeout_s: float = Field(default=5.0, gt=0)
    embedding_dim: int = Field(default=2048, ge=8, le=16384)
    quality: QualityParams = Field(default_factory=QualityParams)
    models: dict[str, ModelOverride] = Field(default_factory=dict)
    latency: LatencySettings = Field(default_factory=LatencySettings)

    def reference_model_ids(self) -> set[str] | None:
        """The models whose logged answers count as the teacher's; ``None`` means any model."""
        if self.reference_models is None:
            return {self.teacher}
        return set(self.reference_models) or None


def nim_settings(cfg: LocalStackConfig) -> NimSettings:
    """Validate ``cfg.nim``; a bad key raises ``SettingsError`` naming it."""
    data: Any = cfg.nim
    return parse_settings(data, NimSettings, source="configs/local.yaml: nim")
