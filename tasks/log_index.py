"""What the Prefect tasks that read the log index share: saying how it is read (a refusal is not retried:
:func:`tasks.retries.retry_if_transient` knows an :class:`~agent_flywheel.logstore.shape.IndexShapeError`)."""

from __future__ import annotations

from typing import Any

from agent_flywheel.logstore.shape import IndexShape


def log_index_shape(shape: IndexShape, logger: Any) -> None:
    """Say in the run log how the log index is read: the fields used, and what was found and handled."""
    logger.info("%s", shape.describe())
    for note in shape.notes:
        logger.info("log index %r: %s", shape.index, note)
    for warning in shape.warnings:
        logger.warning("log index %r: %s", shape.index, warning)
