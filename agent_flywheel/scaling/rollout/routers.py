"""Who shifts users to a canary: a pluggable router, chosen by ``rollout.router.kind`` in the config.

Shifting production traffic belongs to the platform (Argo Rollouts, Flagger, a gateway's weighted routes), so
the default router is ``none``: observe only, it refuses to route anyone. The others act only because the
configuration names them:

- ``demo-agent``: the demo agent's ``/admin/routing`` (``GET``: teacher, canary, weight; ``POST {"canary_model",
  "canary_weight"}``; a user keeps its arm while the weight grows);
- ``http-hook``: ``POST {"canary_model": ..., "weight": ...}`` to a URL of the platform's (a gateway's admin API,
  a small adapter in front of a service mesh), with an optional secret header; a non-2xx answer is an error.

Every router returns the routing it found before a change, and :meth:`Router.restore` puts that back. Failures
are :class:`RoutingError`, which says whether trying again may help (a refused or missing route will not).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx

from agent_flywheel.transient import retryable_status

ROUTING_PATH = "/admin/routing"


class RoutingError(RuntimeError):
    """Routing could not be changed; ``transient`` when a retry may succeed (unreachable, a 5xx answer)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class RoutingRefused(RoutingError):
    """The configured router does not send users to a candidate (observe only)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


def _failure(where: str, exc: httpx.HTTPError) -> RoutingError:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return RoutingError(f"{where} answered {status}: {exc.response.text[:200]}", transient=retryable_status(status))
    return RoutingError(f"{where} could not be reached: {exc}", transient=True)


class Router(Protocol):
    """Sends a share of users to a canary and puts the routing back."""

    kind: str

    def describe(self) -> str:
        """Where the router acts, for logs (never a secret)."""
        ...

    def route(self, canary_model: str, weight: float) -> dict[str, Any]:
        """Send ``weight`` of users to ``canary_model``; returns the routing before, for :meth:`restore`."""
        ...

    def restore(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Put the routing back as :meth:`route` found it; returns what was sent."""
        ...


class ObserveOnly:
    """``none``: routes nobody. The check judges whatever traffic the platform gives the canary."""

    kind = "none"

    def describe(self) -> str:
        """Says it routes nobody."""
        return "observe only (router none: the flywheel routes no user)"

    def route(self, canary_model: str, weight: float) -> dict[str, Any]:
        """Refuse: nothing routes users to a candidate unless the configuration says so."""
        raise RoutingRefused(
            f"not sending {weight:.0%} of users to {canary_model}: rollout.router.kind is `none` (observe only). "
            "Shift traffic with your platform (Argo Rollouts, Flagger, a gateway), or set rollout.router.kind to "
            "demo-agent or http-hook in the config to let the flywheel do it"
        )

    def restore(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Nothing was changed, nothing to restore."""
        return {}


class DemoAgentRouter:
    """``demo-agent``: the demo agent's ``/admin/routing``, through the agent's HTTP client (base URL: the agent)."""

    kind = "demo-agent"

    def __init__(self, client: Callable[[], httpx.Client], url: str) -> None:
        self._client = client
        self._url = url.rstrip("/")

    def describe(self) -> str:
        """The agent whose router this is."""
        return f"the demo agent's {ROUTING_PATH} at {self._url}"

    def state(self) -> dict[str, Any] | None:
        """The agent's routing (teacher, canary, weight), or None when it has no such endpoint."""
        try:
            with self._client() as http:
                answer = http.get(ROUTING_PATH)
            return dict(answer.json()) if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError, TypeError):
            return None

    def route(self, canary_model: str, weight: float) -> dict[str, Any]:
        """Send ``weight`` of the agent's users to ``canary_model``; returns the routing before.

        An agent without the endpoint cannot be pointed at a candidate: an error (not transient), never a
        silent measurement of the wrong model.
        """
        where = f"the agent at {self._url}"
        try:
            with self._client() as http:
                before = http.get(ROUTING_PATH)
                if before.status_code == 404:
                    raise RoutingError(
                        f"{where} has no {ROUTING_PATH} endpoint, so it cannot be routed to {canary_model!r}: it is "
                        "not the demo agent; use rollout.router.kind none (observe only) or http-hook",
                        transient=False,
                    )
                before.raise_for_status()
                http.post(ROUTING_PATH, json={"canary_model": canary_model, "canary_weight": weight}).raise_for_status()
                return dict(before.json())
        except httpx.HTTPError as exc:
            raise _failure(where, exc) from None

    def restore(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Put the agent's routing back as :meth:`route` found it; returns what was sent."""
        body = {
            "canary_model": previous.get("canary_model"),
            "canary_weight": float(previous.get("canary_weight") or 0.0) if previous.get("canary_model") else 0.0,
        }
        try:
            with self._client() as http:
                http.post(ROUTING_PATH, json=body).raise_for_status()
        except httpx.HTTPError as exc:
            raise _failure(f"the agent at {self._url}", exc) from None
        return body


class HttpHookRouter:
    """``http-hook``: ``POST {"canary_model", "weight"}`` to the platform's URL; ``weight`` 0 takes the canary out."""

    kind = "http-hook"

    def __init__(
        self, url: str, *, auth_header: str | None = None, auth_value: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.url = url
        self._headers = {auth_header: auth_value} if auth_header and auth_value else {}
        self._timeout_s = timeout_s

    def describe(self) -> str:
        """The hook's URL (the secret header is never shown)."""
        auth = " with an auth header" if self._headers else ""
        return f"the HTTP hook {self.url}{auth}"

    def _post(self, canary_model: str, weight: float) -> dict[str, Any]:
        body = {"canary_model": canary_model, "weight": weight}
        try:
            httpx.post(self.url, json=body, headers=self._headers, timeout=self._timeout_s).raise_for_status()
        except httpx.HTTPError as exc:
            raise _failure(f"the routing hook {self.url}", exc) from None
        return body

    def route(self, canary_model: str, weight: float) -> dict[str, Any]:
        """Ask the platform for ``weight`` on the canary; the routing before is taken as none (weight 0)."""
        self._post(canary_model, weight)
        return {"canary_model": canary_model, "weight": 0.0}

    def restore(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Ask the platform to take the canary back to the weight it had (0: out of rotation)."""
        return self._post(str(previous.get("canary_model") or ""), float(previous.get("weight") or 0.0))
