"""The MLflow tracker of a block by name, for the scaling tasks that still resolve their blocks themselves."""

from __future__ import annotations

from agent_flywheel.tracking import Tracker
from blocks.mlflow_tracking import MlflowTracking
from blocks.resolve import load_block


def tracker(block_name: str) -> tuple[Tracker, str | None]:
    """The MLflow tracker of block ``block_name`` and its UI URL for links."""
    block = load_block(MlflowTracking, block_name)
    return block.get_tracker(), block.ui_url
