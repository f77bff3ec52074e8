"""Where the flywheel keeps its per-workload watermarks (shared by the flywheel and the traffic watch)."""

from __future__ import annotations

from agent_flywheel.logstore.watermarks import StateWatermarkStore
from tasks.state_store import state_store


def watermark_store() -> StateWatermarkStore:
    """The watermarks, where every worker sees them (Prefect Variables; see :mod:`tasks.state_store`)."""
    return StateWatermarkStore(state_store())
