"""Clients built from Prefect blocks: the only place where block secrets are read."""

from __future__ import annotations

from agent_flywheel.nemo.client import NemoClient, NemoSettings
from agent_flywheel.tracking import Tracker
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform
from blocks.resolve import load_block


def nemo_settings(block_name: str) -> NemoSettings:
    """NeMo client settings from the ``NemoPlatform`` block ``block_name``."""
    block = load_block(NemoPlatform, block_name)
    return NemoSettings(
        nemo_url=block.customizer_url,
        entity_store_url=block.entity_store_url,
        customizer_url=block.customizer_url,
        evaluator_url=block.evaluator_url,
        deployment_url=block.deployment_url,
        datastore_url=block.datastore_url,
        nim_url=block.nim_url,
        api_key=block.api_key,
        datastore_token=block.datastore_token,
        timeout_s=block.timeout_s,
        max_retries=block.max_retries,
    )


def nemo_client(block_name: str) -> NemoClient:
    """A NeMo client for the platform in block ``block_name`` (close it with ``aclose``)."""
    return NemoClient(nemo_settings(block_name))


def is_simulated(block_name: str) -> bool:
    """Whether the platform block points at the local simulators (runs are then tagged simulated)."""
    return load_block(NemoPlatform, block_name).simulated


def tracker(block_name: str) -> tuple[Tracker, str | None]:
    """The MLflow tracker of block ``block_name`` and its UI URL for links."""
    block = load_block(MlflowTracking, block_name)
    return Tracker(block.resolved_tracking_uri(), block.registry_uri), block.ui_url
