"""What a NeMo job status means for whoever is waiting on it.

Every NeMo v1 service reports the shared ``JobStatus`` enum (``created, pending, running, cancelling,
cancelled, failed, completed, ready, unknown``). A waiter only needs four answers: keep waiting, it is
making progress, it is done, or it is dead. Two rules differ from the blueprint on purpose:

- ``pending`` and ``created`` are *waiting* (``pending`` is NeMo's "waiting for GPUs"), never errors
  (blueprint bug 2: its evaluator poller failed every job that had to queue for resources);
- a status nobody knows (a newer server, a typo'd mock's ``deploying``) is *waiting* with a warning, so
  the stall timeout decides, rather than a crash on the first poll (blueprint bug 8's ``DeploymentStatus(x)``).
"""

from __future__ import annotations

import logging
from enum import StrEnum

logger = logging.getLogger(__name__)


class JobStatus(StrEnum):
    """The statuses NeMo v1 documents (SDK 1.5 ``shared.job_status``)."""

    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    READY = "ready"
    UNKNOWN = "unknown"


class Phase(StrEnum):
    """Where a job stands from a waiter's point of view."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True once the job will not change any more, so polling can stop."""
        return self in (Phase.SUCCEEDED, Phase.FAILED)


# ``cancelling`` is on its way to ``cancelled``; waiting for the final word is right.
WAITING_STATUSES: frozenset[str] = frozenset({JobStatus.CREATED, JobStatus.PENDING, JobStatus.CANCELLING})
RUNNING_STATUSES: frozenset[str] = frozenset({JobStatus.RUNNING})
SUCCEEDED_STATUSES: frozenset[str] = frozenset({JobStatus.COMPLETED, JobStatus.READY})
FAILED_STATUSES: frozenset[str] = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
# Terminal statuses after which creating the job again is the right move (idempotent lookups skip them).
DEAD_STATUSES: frozenset[str] = FAILED_STATUSES | {JobStatus.CANCELLING}

_warned: set[str] = set()


def normalize_status(status: object) -> str:
    """Lower-case, trimmed text of a status, so ``"Completed"`` and ``"completed "`` mean the same."""
    return str(status or "").strip().lower()


def classify(status: object) -> Phase:
    """The phase of a status; unknown statuses are WAITING (logged once each), never an exception."""
    text = normalize_status(status)
    if text in SUCCEEDED_STATUSES:
        return Phase.SUCCEEDED
    if text in FAILED_STATUSES:
        return Phase.FAILED
    if text in RUNNING_STATUSES:
        return Phase.RUNNING
    if text in WAITING_STATUSES:
        return Phase.WAITING
    if text not in _warned:
        _warned.add(text)
        if text != JobStatus.UNKNOWN:
            logger.warning("unrecognised NeMo job status %r: treated as waiting until the stall timeout", text)
    return Phase.WAITING


def is_waiting(status: object) -> bool:
    """True when the job has not started yet (or its status is not known): keep polling."""
    return classify(status) is Phase.WAITING


def is_terminal(status: object) -> bool:
    """True when the job is finished, well or badly."""
    return classify(status).terminal


def is_success(status: object) -> bool:
    """True for ``completed`` and ``ready``."""
    return classify(status) is Phase.SUCCEEDED


def is_failure(status: object) -> bool:
    """True for ``failed`` and ``cancelled``."""
    return classify(status) is Phase.FAILED
