"""Typed async client for the NeMo microservices v1 API (Entity Store, Data Store, Customizer, Evaluator,
Deployment Management) and NIM: one module per service, payload builders from our config, one poller.

Functional core: no Prefect imports. See ``docs/development.md`` and ``reference/nemo-microservices-api.md``.
"""

from agent_flywheel.nemo.client import NemoClient, NemoEndpoints
from agent_flywheel.nemo.http import NemoAPIError, RetryPolicy
from agent_flywheel.nemo.idempotency import IdempotencyKey, content_hash
from agent_flywheel.nemo.poller import (
    JobBlockedError,
    JobFailedError,
    JobStalledError,
    JobTimeoutError,
    JobWaitError,
    Observation,
    PollSettings,
    ProgressCallback,
    wait_for,
)
from agent_flywheel.nemo.status import JobStatus, Phase, classify

__all__ = [
    "IdempotencyKey",
    "JobBlockedError",
    "JobFailedError",
    "JobStalledError",
    "JobStatus",
    "JobTimeoutError",
    "JobWaitError",
    "NemoAPIError",
    "NemoClient",
    "NemoEndpoints",
    "Observation",
    "Phase",
    "PollSettings",
    "ProgressCallback",
    "RetryPolicy",
    "classify",
    "content_hash",
    "wait_for",
]
