"""Where the flywheel keeps its per-workload watermarks (shared by the flywheel and the traffic watch)."""

from __future__ import annotations

from agent_flywheel.logstore.watermarks import FileWatermarkStore
from agent_flywheel.paths import flywheel_home


def watermark_store() -> FileWatermarkStore:
    """The watermark file under the flywheel home."""
    return FileWatermarkStore(flywheel_home() / "watermarks.json")
