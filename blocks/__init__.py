"""Prefect block types: where the services live and the secrets to reach them."""

from blocks.agent_target import AgentTarget
from blocks.log_store import LogStore
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform

__all__ = ["AgentTarget", "LogStore", "MlflowTracking", "NemoPlatform"]
