"""Routers: observe only by default (refuses to route anyone), the demo agent's admin API, a generic HTTP hook."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_flywheel.config import ConfigError, RolloutConfig, RouterConfig, ScalingConfig, load_config, parse_config
from agent_flywheel.scaling.rollout.routers import (
    DemoAgentRouter,
    HttpHookRouter,
    ObserveOnly,
    RoutingError,
    RoutingRefused,
)
from agent_flywheel.transient import is_transient


class _Hook(ThreadingHTTPServer):
    """A platform's routing hook: records every POST, answers with ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []
        self.status = 200
        super().__init__(("127.0.0.1", 0), _HookHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/routes/support-agent"


class _HookHandler(BaseHTTPRequestHandler):
    server: _Hook

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append((body, dict(self.headers.items())))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[_Hook]:
    server = _Hook()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_default_router_observes_only_and_refuses_to_route() -> None:
    assert RolloutConfig().router.kind == "none" and RolloutConfig().synthetic_traffic is False
    router = ObserveOnly()
    with pytest.raises(RoutingRefused, match="observe only") as refused:
        router.route("acme/canary", 1.0)
    assert not refused.value.transient
    assert router.restore({}) == {}


def test_the_http_hook_posts_the_weight_with_the_secret_header_and_restores_weight_zero(hook: _Hook) -> None:
    router = HttpHookRouter(hook.url, auth_header="Authorization", auth_value="Bearer s3cret", timeout_s=10)
    previous = router.route("acme/canary", 0.25)
    router.restore(previous)
    assert [body for body, _ in hook.received] == [
        {"canary_model": "acme/canary", "weight": 0.25},
        {"canary_model": "acme/canary", "weight": 0.0},
    ]
    assert all(headers["Authorization"] == "Bearer s3cret" for _, headers in hook.received)
    assert "s3cret" not in router.describe() and hook.url in router.describe()


def test_a_hook_that_refuses_is_an_error_transient_only_by_the_one_retry_rule(hook: _Hook) -> None:
    router = HttpHookRouter(hook.url)
    hook.status = 403
    with pytest.raises(RoutingError, match="answered 403") as refused:
        router.route("acme/canary", 0.1)
    assert not refused.value.transient
    hook.status = 503
    with pytest.raises(RoutingError, match="answered 503") as busy:
        router.route("acme/canary", 0.1)
    assert busy.value.transient
    hook.status = 429  # rate limited: the project's one retry rule (agent_flywheel.transient) says try again
    with pytest.raises(RoutingError, match="answered 429") as limited:
        router.route("acme/canary", 0.1)
    assert limited.value.transient and is_transient(limited.value) and not is_transient(refused.value)
    assert "Authorization" not in hook.received[0][1]  # no secret configured, no header sent
    unreachable = HttpHookRouter("http://127.0.0.1:9/nothing", timeout_s=2)
    with pytest.raises(RoutingError, match="could not be reached") as down:
        unreachable.route("acme/canary", 0.1)
    assert down.value.transient


def _demo_agent(routes: dict[str, Any] | None) -> tuple[list[dict[str, Any]], DemoAgentRouter]:
    posted: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if routes is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.method == "POST":
            posted.append(json.loads(request.content))
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(200, json=routes)

    def client() -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://agent.test")

    return posted, DemoAgentRouter(client, "http://agent.test")


def test_the_demo_agent_router_returns_the_routing_before_and_puts_it_back() -> None:
    before = {"teacher_model": "m-70b", "canary_model": "old", "canary_weight": 0.1}
    posted, router = _demo_agent(before)
    assert router.state() == before
    assert router.route("acme/canary", 0.5) == before
    router.restore(before)
    assert posted == [
        {"canary_model": "acme/canary", "canary_weight": 0.5},
        {"canary_model": "old", "canary_weight": 0.1},
    ]


def test_an_agent_without_the_admin_api_is_not_routed_and_not_retried() -> None:
    _, router = _demo_agent(None)
    assert router.state() is None
    with pytest.raises(RoutingError, match="has no /admin/routing endpoint") as missing:
        router.route("acme/canary", 0.5)
    assert not missing.value.transient


def test_router_config_is_explicit() -> None:
    assert RouterConfig(kind="http-hook", url="https://gw/hook").url == "https://gw/hook"
    with pytest.raises(ValueError, match=r"needs router\.url"):
        RouterConfig(kind="http-hook")
    with pytest.raises(ValueError, match="for kind http-hook"):
        RouterConfig(kind="none", url="https://gw/hook")
    with pytest.raises(ConfigError, match="synthetic_traffic drives simulated users"):
        parse_config({"rollout": {"synthetic_traffic": True}}, ScalingConfig, "scaling.yaml")
    demo = parse_config(
        {"rollout": {"synthetic_traffic": True, "router": {"kind": "demo-agent"}}}, ScalingConfig, "scaling.yaml"
    )
    assert demo.rollout.synthetic_traffic


def test_production_config_observes_only_and_only_the_demo_config_drives_simulated_users() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    production = load_config(configs / "scaling.yaml", ScalingConfig).rollout
    assert (production.router.kind, production.synthetic_traffic) == ("none", False)
    demo = load_config(configs / "scaling-demo.yaml", ScalingConfig).rollout
    assert (demo.router.kind, demo.synthetic_traffic) == ("demo-agent", True)
