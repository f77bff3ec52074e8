"""The ``nemo`` section of ``configs/local.yaml``: phase durations, behaviour switches and faults.

Durations are in *simulated* seconds (they pass ``clock_speed`` times faster than real seconds), so a
test can run a two-epoch fine-tune in milliseconds while a demo at speed 1 feels like the real service.
Unknown keys are an error, so a typo in the YAML is reported instead of silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulators.settings import LocalStackConfig, parse_settings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CustomizationTiming(_Section):
    """How long each phase of a customization job lasts (simulated seconds)."""

    created_s: float = Field(default=2.0, ge=0)
    pending_s: float = Field(default=5.0, ge=0)
    # A real 1B LoRA run on ~1,000 records x 2 epochs takes about 25 minutes: ~0.75 s per record-epoch.
    seconds_per_record_epoch: float = Field(default=0.75, ge=0)
    min_running_s: float = Field(default=20.0, ge=0)
    default_epochs: int = Field(default=1, ge=1)
    default_batch_size: int = Field(default=8, ge=1)


class EvaluationSettings(_Section):
    """Evaluator timing and how it talks to the NIM simulator."""

    created_s: float = Field(default=1.0, ge=0)
    default_parallelism: int = Field(default=8, ge=1)
    request_timeout_s: float = Field(default=60.0, gt=0, description="Real seconds per NIM call")
    max_retries: int = Field(default=3, ge=0, description="Retries of connection errors and 5xx per NIM call")
    retry_backoff_s: float = Field(default=0.2, ge=0, description="Real seconds, doubled per retry")
    results_layout: Literal["root", "nested", "per-task", "no-samples"] = Field(
        default="root",
        description=(
            "The download-results ZIP: root = results.json {task: [rows]} at the root (what the blueprint reads); "
            "nested = <job>/results/results.json {task: {samples: [rows]}} beside the aggregate and a log; "
            "per-task = results/<task>.jsonl, one row per line; no-samples = the aggregate only (a fault)"
        ),
    )


class DeploymentTiming(_Section):
    """How long a DMS deployment stays ``pending`` before it is ``ready`` (simulated seconds)."""

    ready_after_s: float = Field(default=30.0, ge=0)


class Faults(_Section):
    """Fault injection; everything off by default. Job-level switches apply to jobs created after they are set."""

    # HTTP level, keyed by path prefix (the longest matching prefix wins); /admin and /health are exempt.
    error_rate: dict[str, float] = Field(default_factory=dict, description="prefix -> probability of a 5xx")
    error_status: int = Field(default=503, ge=500, le=599)
    latency_s: dict[str, float] = Field(default_factory=dict, description="prefix -> added real seconds")
    drop_rate: dict[str, float] = Field(
        default_factory=dict, description="prefix -> probability of a dropped connection"
    )
    seed: int | None = Field(default=None, description="Seed of the fault dice (None: unseeded)")
    # Customizer.
    customization_not_enough_resources: bool = False
    not_enough_resources_fail_after_s: float | None = Field(
        default=None, ge=0, description="Fail a NotEnoughResources job after this long pending (None: pend forever)"
    )
    customization_stall_pending: bool = False
    customization_failed: bool = False
    adapter_visible_after_s: float = Field(default=0.0, ge=0, description="NIM lists a new adapter this much later")
    # Evaluator.
    evaluation_pending_s: float = Field(default=0.0, ge=0, description="Insert a pending phase this long")
    evaluation_failed: bool = False
    # Deployment Management.
    deployment_failed: bool = False
    deployment_stall_pending: bool = False


class NemoSimSettings(_Section):
    """Everything under ``nemo:`` in ``configs/local.yaml``."""

    persist: bool = Field(default=True, description="Keep state in <state_dir>/nemo so a restart keeps jobs")
    tick_interval_s: float = Field(
        default=0.5, ge=0, description="Real seconds between background advances of job side effects (0: only on reads)"
    )
    dms_duplicate_500: bool = Field(
        default=True, description="A duplicate deployment answers 500 'model deployment already exists' like real DMS"
    )
    default_page_size: int = Field(default=10, ge=1)
    customization: CustomizationTiming = Field(default_factory=CustomizationTiming)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    deployment: DeploymentTiming = Field(default_factory=DeploymentTiming)
    faults: Faults = Field(default_factory=Faults)


def load_nemo_settings(cfg: LocalStackConfig) -> NemoSimSettings:
    """Validate ``cfg.nemo``; a bad key raises SettingsError naming it."""
    data: dict[str, Any] = dict(cfg.nemo)
    return parse_settings(data, NemoSimSettings, "local stack config: nemo")
