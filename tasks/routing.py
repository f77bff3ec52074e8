"""Tasks that send a share of users to a candidate through the configured router, and put the routing back.

The router is ``rollout.router`` of the scaling config (:mod:`agent_flywheel.scaling.rollout.routers`): ``none``
(the default) routes nobody and refuses to; ``demo-agent`` and ``http-hook`` act only because the config says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prefect import get_run_logger, task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import RouterConfig
from agent_flywheel.scaling.rollout.routers import DemoAgentRouter, HttpHookRouter, ObserveOnly, Router
from blocks.agent_target import AgentTarget
from blocks.resolve import load_block
from tasks.retries import retry_if_transient


def build_router(cfg: RouterConfig, agent: AgentTarget | None = None) -> Router:
    """The router ``cfg`` names; the demo agent's needs the ``AgentTarget``, the hook's secret comes from a
    Prefect ``Secret`` block (never from the YAML)."""
    if cfg.kind == "demo-agent":
        if agent is None:
            raise ValueError("router.kind demo-agent needs the agent (an AgentTarget block)")
        return DemoAgentRouter(lambda: agent.get_client(), agent.url)
    if cfg.kind == "http-hook":
        assert cfg.url is not None  # RouterConfig refuses a hook without a URL
        secret = None
        if cfg.auth_secret_block:
            secret = str(load_block(Secret, cfg.auth_secret_block).get())
        return HttpHookRouter(cfg.url, auth_header=cfg.auth_header, auth_value=secret, timeout_s=cfg.timeout_s)
    return ObserveOnly()


@task(
    name="route-canary",
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def route_canary(router: Router, canary_model: str, weight: float) -> dict[str, Any]:
    """Send ``weight`` of users to ``canary_model`` through ``router``; returns the routing before, to restore it.

    Why a task: every change of who serves the users is a step in the flow run's history, with its retries.
    """
    before = router.route(canary_model, weight)
    get_run_logger().info("routing: %s of users on %s via %s", f"{weight:.0%}", canary_model, router.describe())
    return before


@task(
    name="restore-routing",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def restore_routing(router: Router, previous: Mapping[str, Any]) -> None:
    """Put the routing back as it was before this run."""
    sent = router.restore(previous)
    get_run_logger().info("routing restored via %s: %s", router.describe(), sent)


@contextmanager
def routed_to(router: Router, model: str | None, weight: float = 1.0) -> Iterator[dict[str, Any] | None]:
    """Within the block, ``weight`` of users get ``model`` (nothing changes when ``model`` is None); the routing is
    restored when the block ends, also on failure. The ``none`` router refuses before anything starts."""
    if not model:
        yield None
        return
    if router.kind == "none":
        router.route(model, weight)  # raises RoutingRefused: no task, no retries, nothing started
    previous = route_canary(router, model, weight)
    try:
        yield previous
    finally:
        restore_routing(router, previous)
