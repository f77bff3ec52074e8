"""Fault injection: make the simulator fail the ways the real platform does, on purpose and on demand.

HTTP-level faults (5xx answers, added latency, dropped connections) are applied per path prefix by an
ASGI middleware, before the request reaches a handler. Job-level faults (``NotEnoughResources``, a
stall in ``pending``, failed deployments, adapters the NIM lists late) are read by each service when
it creates a job and kept in that job's plan, so changing them never rewrites a job already running.
Everything can be set in ``configs/local.yaml`` (``nemo.faults``) or at run time via ``/admin/faults``.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from simulators.fault_switches import FaultSwitches, send_fault_answer
from simulators.nemo.settings import Faults

log = logging.getLogger("nemo-sim")

EXEMPT_PREFIXES = ("/admin", "/health", "/docs", "/openapi.json")


def longest_prefix_value(table: dict[str, float], path: str) -> float:
    """The value of the longest key of ``table`` that ``path`` starts with (0 when none does)."""
    matching = [prefix for prefix in table if path.startswith(prefix)]
    return table[max(matching, key=len)] if matching else 0.0


class FaultMiddleware:
    """Applies the HTTP-level faults to every request outside ``/admin`` and ``/health``."""

    def __init__(self, app: ASGIApp, faults: FaultSwitches[Faults]) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        current = self.faults.current
        delay = longest_prefix_value(current.latency_s, path)
        if delay > 0:
            await asyncio.sleep(delay)
        if self.faults.roll(longest_prefix_value(current.drop_rate, path)):
            log.warning("fault: dropping the connection of %s %s", scope.get("method"), path)
            await _drop_connection(send)
            return
        if self.faults.roll(longest_prefix_value(current.error_rate, path)):
            log.warning("fault: answering %s to %s %s", current.error_status, scope.get("method"), path)
            await _error_response(send, current.error_status)
            return
        await self.app(scope, receive, send)


async def _error_response(send: Send, status: int) -> None:
    body = json.dumps({"detail": f"Simulated fault: the service answered {status}"}).encode()
    await send_fault_answer(send, status, body, [])


async def _drop_connection(send: Send) -> None:
    # Promise a body and deliver part of it: the server closes the connection when the app returns,
    # so the client sees the peer hang up mid-response, as when a pod dies or a proxy resets.
    headers = [(b"content-type", b"application/json"), (b"content-length", b"4096")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"object": ', "more_body": True})
