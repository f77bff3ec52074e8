"""The demo agent's admin API, where an agent offers it: its OTLP export target and its canary router.

``/admin/otlp`` (``GET``: where spans go; ``POST {"endpoint": url}``) lets a run point the agent's exporter
at its receiver for its duration, when the ``AgentTarget`` says the agent has it (nothing requires it);
``/admin/routing`` (``GET``: teacher, canary, weight; ``POST {"canary_model", "canary_weight"}``) lets a run
send a share of the agent's users to a candidate.
Every function takes the agent's HTTP client (``AgentTarget.get_client()``), whose base URL is the agent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

ROUTING_PATH = "/admin/routing"
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


def routing_state(http: httpx.Client) -> dict[str, Any] | None:
    """The agent's routing (teacher, canary, weight), or None when it has no such endpoint."""
    try:
        answer = http.get(ROUTING_PATH)
        return dict(answer.json()) if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, TypeError):
        return None


def set_routing(http: httpx.Client, canary_model: str | None, weight: float) -> dict[str, Any]:
    """Send ``weight`` of the agent's users to ``canary_model``; returns the routing before, to restore it.

    An agent without the endpoint cannot be pointed at a candidate; that is an error, not a silent
    measurement of the wrong model.
    """
    before = http.get(ROUTING_PATH)
    if before.status_code == 404:
        raise RuntimeError(
            f"the agent at {str(http.base_url).rstrip('/')} has no {ROUTING_PATH} endpoint, so it cannot be routed to "
            f"{canary_model!r}; deploy the candidate behind the agent yourself and run without a candidate"
        )
    before.raise_for_status()
    answer = http.post(ROUTING_PATH, json={"canary_model": canary_model, "canary_weight": weight})
    answer.raise_for_status()
    return dict(before.json())


def restore_routing(http: httpx.Client, previous: Mapping[str, Any]) -> dict[str, Any]:
    """Put the agent's routing back as :func:`set_routing` found it; returns what was sent."""
    body = {
        "canary_model": previous.get("canary_model"),
        "canary_weight": float(previous.get("canary_weight") or 0.0) if previous.get("canary_model") else 0.0,
    }
    http.post(ROUTING_PATH, json=body).raise_for_status()
    return body
