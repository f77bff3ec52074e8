"""The retry condition of every Prefect task that retries: only what may pass if tried again.

Without it a task's ``retries`` resend a request the service already answered for good (a ``400`` from a
wrong but live URL was retried for 70 s before the error showed).
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun

from agent_flywheel.transient import is_transient


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's ``retry_condition_fn``: retry connection errors, timeouts, ``408``/``425``/``429``/``5xx``;
    never another ``4xx`` answer or bad input (:func:`agent_flywheel.transient.is_transient`)."""
    error = state.data if isinstance(state.data, BaseException) else None
    return error is None or is_transient(error)
