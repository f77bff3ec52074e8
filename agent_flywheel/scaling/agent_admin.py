"""The demo agent's OTLP admin API, where an agent offers it: where its spans go.

``/admin/otlp`` (``GET``: where spans go; ``POST {"endpoint": url}``) lets a run point the agent's exporter
at its receiver for its duration, when the ``AgentTarget`` says the agent has it (nothing requires it). The
function takes the agent's HTTP client (``AgentTarget.get_client()``), whose base URL is the agent. (The demo
agent's canary router, ``/admin/routing``, is one of the rollout's routers: :mod:`.rollout.routers`.)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import httpx

OTLP_PATH = "/admin/otlp"
_log = logging.getLogger(__name__)


@contextlib.contextmanager
def otlp_pointed_at(http: httpx.Client, endpoint: str) -> Iterator[bool]:
    """Point the agent's OTLP export at ``endpoint`` for a block, then back where it was (also on failure).

    Yields whether it was pointed: an agent without ``/admin/otlp`` is left alone (its spans must reach the
    run some other way: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or a traces file).
    """
    try:
        current = http.get(OTLP_PATH)
        if current.status_code != 200:
            yield False
            return
        previous = current.json().get("endpoint")
        http.post(OTLP_PATH, json={"endpoint": endpoint}).raise_for_status()
    except (httpx.HTTPError, ValueError, AttributeError):
        yield False
        return
    try:
        yield True
    finally:
        try:
            http.post(OTLP_PATH, json={"endpoint": previous})
        except httpx.HTTPError as exc:
            _log.warning("could not restore the agent's OTLP endpoint %r: %s", previous, exc)
