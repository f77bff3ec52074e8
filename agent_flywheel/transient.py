"""Which failures may pass if tried again, and which are answers: one rule for every retry in the project.

A service that answers ``400``, ``401``, ``403``, ``404`` or ``422`` will answer the same to the same request:
retrying only delays the error (a wrong but live URL used to be retried for 70 s). What may pass is a
connection that failed or timed out, ``408`` (request timeout), ``425`` (too early), ``429`` (rate limited)
and ``5xx``. ``409`` is left out: for NeMo it means "exists" or "in a state that forbids this", an answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from elastic_transport import ConnectionError as EsConnectionError
from elastic_transport import ConnectionTimeout as EsConnectionTimeout

from agent_flywheel.config import ConfigError
from agent_flywheel.logstore.errors import LogStoreError

RETRY_STATUSES = frozenset({408, 425, 429, *range(500, 600)})

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    EsConnectionError,
    EsConnectionTimeout,
    ConnectionError,  # the builtin: refused, reset, aborted
    TimeoutError,
)


def retryable_status(status: int) -> bool:
    """Whether an HTTP status may change if the same request is sent again."""
    return status in RETRY_STATUSES


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error carries, whatever client raised it (httpx, aiohttp, Elasticsearch, Hugging Face
    Hub, MLflow's REST client, ours), or None."""
    for attribute in ("status", "status_code"):  # NemoAPIError, aiohttp; elasticsearch.ApiError
        status = getattr(exc, attribute, None)
        if isinstance(status, int) and not isinstance(status, bool):
            return status
    response = getattr(exc, "response", None)  # httpx.HTTPStatusError, requests / huggingface_hub HTTP errors
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status
    get_status = getattr(exc, "get_http_status_code", None)  # mlflow.exceptions.MlflowException
    if callable(get_status):
        status = get_status()
        return status if isinstance(status, int) else None
    return None


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was explicitly raised from (``raise ... from``), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: a lost connection, a timeout, ``408``/``425``/``429``/``5xx``.

    The first error in the ``raise ... from`` chain that says something decides (a task's own error wrapping
    an Elasticsearch ``400`` is not transient). Bad input (``ValueError``, a config error) and what the log
    store reports (a missing index) are not; an error
    that says nothing either way is, as Prefect's retries assumed before. A NeMo call that got no answer
    carries no status; the transport error it was raised from decides.
    """
    for error in causes(exc):
        status = http_status(error)
        if status is not None:
            return retryable_status(status)
        if isinstance(error, _TRANSPORT_ERRORS):
            return True
        if isinstance(error, ConfigError | LogStoreError | ValueError | LookupError | TypeError):
            return False
    return True
