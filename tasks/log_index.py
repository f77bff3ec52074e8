"""What the Prefect tasks that read the log index share: saying how it is read, and not retrying a refusal."""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from agent_flywheel.logstore.shape import IndexShape, IndexShapeError


def retry_unless_unreadable(task_: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition: a log store that failed may answer next time; a mapping that cannot be read won't."""
    return not isinstance(state.data, IndexShapeError)


def log_index_shape(shape: IndexShape, logger: Any) -> None:
    """Say in the run log how the log index is read: the fields used, and what was found and handled."""
    logger.info("%s", shape.describe())
    for note in shape.notes:
        logger.info("log index %r: %s", shape.index, note)
    for warning in shape.warnings:
        logger.warning("log index %r: %s", shape.index, warning)
