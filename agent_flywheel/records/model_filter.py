"""Which answering models the flywheel learns from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

from agent_flywheel.records.schema import LogRecord


class ModelFilter:
    """Keeps the records answered by one of ``models`` (or naming no model), one record at a time, and
    counts the others by model in :attr:`skipped`.

    The flywheel learns from the production model's answers only: canary, load-test and student traffic
    share the log index, and training on a student's own answers would teach it nothing true.
    """

    def __init__(self, models: Collection[str]) -> None:
        self.models = frozenset(models)
        self.skipped: Counter[str] = Counter()

    def __call__(self, record: LogRecord) -> bool:
        """Whether to keep ``record``; a record that is not kept is counted under its model."""
        model = record.request.model
        if model is None or model in self.models:
            return True
        self.skipped[str(model)] += 1
        return False
