"""The flywheel config of the end-to-end runs: one LoRA candidate on 40 eval samples, polled fast."""

from __future__ import annotations

from typing import Any

from agent_flywheel.config import FlywheelConfig, parse_config

SMALL = "meta/llama-3.2-1b-instruct"


def small_flywheel_config(namespace: str, **sections: dict[str, Any]) -> FlywheelConfig:
    """``SMALL`` fine-tuned (LoRA) and judged on 40 eval samples in ``namespace``; each of ``sections`` is merged
    over the section of that name."""
    raw: dict[str, Any] = {
        "namespace": namespace,
        "nims": [
            {
                "model_name": SMALL,
                "customization_enabled": True,
                "customizer_configs": {"target": f"{SMALL}@2.0", "max_seq_length": 8192},
            }
        ],
        "data_split_config": {"eval_size": 40, "min_total_records": 50, "limit": 1000},
        "evaluation_config": {"poll_interval_s": 0.2, "timeout_s": 60},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return parse_config(raw, FlywheelConfig, f"test:{namespace}")
