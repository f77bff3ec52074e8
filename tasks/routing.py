"""Tasks that point the agent's router at a candidate and put it back (the demo agent's ``/admin/routing``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.scaling.agent_admin import restore_routing, routing_state, set_routing
from blocks.agent_target import AgentTarget
from tasks.retries import retry_if_transient


def agent_routing_state(agent: AgentTarget) -> dict[str, Any] | None:
    """The agent's routing (teacher, canary, weight), or None when it has no such endpoint."""
    with agent.get_client(timeout_s=5.0) as http:
        return routing_state(http)


@task(
    name="agent-routing",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def set_agent_routing(agent: AgentTarget, canary_model: str | None, weight: float) -> dict[str, Any]:
    """Send ``weight`` of the agent's users to ``canary_model``; returns the routing before, to restore it.

    Why: the scaling lifecycle measures a candidate through the real agent, so the agent's own router picks
    the model (``POST /admin/routing``, the demo agent's staged-rollout switch).
    """
    with agent.get_client() as http:
        before = set_routing(http, canary_model, weight)
    get_run_logger().info("agent routing: %s of users on %s", f"{weight:.0%}", canary_model)
    return before


@task(
    name="agent-routing-restore",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def restore_agent_routing(agent: AgentTarget, previous: Mapping[str, Any]) -> None:
    """Put the agent's routing back as it was before this run."""
    with agent.get_client() as http:
        body = restore_routing(http, previous)
    get_run_logger().info("agent routing restored: %s", body)


@contextmanager
def routed_to(agent: AgentTarget, model: str | None, weight: float = 1.0) -> Iterator[dict[str, Any] | None]:
    """Within the block, ``weight`` of the agent's users get ``model`` (nothing changes when ``model`` is None)."""
    if not model:
        yield None
        return
    previous = set_agent_routing(agent, model, weight)
    try:
        yield previous
    finally:
        restore_agent_routing(agent, previous)
