"""Fault injection for the log server: answer errors, slow down, or refuse everything, on purpose.

The flywheel's first step reads Elasticsearch; in production that cluster rejects requests when it is
overloaded (``429``), has no shard available (``503``) or is simply slow. These switches let tests and
demos make the local log server behave that way without touching its storage:

| key | effect |
| --- | --- |
| ``error_rate`` | answer ``error_status`` with this probability (0-1) |
| ``error_status`` | the status of those answers: 429 or 5xx (default 503) |
| ``latency_s`` | real seconds added before every request is handled |
| ``refuse`` | answer 503 to everything (the cluster is down for good) |
| ``seed`` | seed of the dice, for reproducible fault sequences |

Set them in ``configs/local.yaml`` (``logserver.faults``) or at run time with ``POST /admin/faults``
(merged into the current ones; an unknown key or a bad value is a 422), read them with
``GET /admin/faults`` (with counters of what was injected) and reset them with ``DELETE /admin/faults``.
``/admin`` itself is never faulted. Error bodies have Elasticsearch's shape and headers, so the official
client raises and retries exactly as it does against a real cluster.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from simulators.fault_switches import FaultSwitches, send_fault_answer
from simulators.logserver.errors import EsError

log = logging.getLogger("logserver")

ADMIN_PREFIX = "/admin"
_ERROR_TYPES = {
    429: "es_rejected_execution_exception",
    500: "exception",
    502: "bad_gateway_exception",
    503: "unavailable_shards_exception",
    504: "timeout_exception",
}


class LogServerFaults(BaseModel):
    """The fault switches of the log server (all off by default)."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Probability of answering error_status")
    error_status: int = Field(default=503, description="429 or a 5xx status")
    latency_s: float = Field(default=0.0, ge=0.0, le=600.0, description="Real seconds added to every request")
    refuse: bool = Field(default=False, description="Answer 503 to every request")
    seed: int | None = Field(default=None, description="Seed of the dice")

    @field_validator("error_status")
    @classmethod
    def _transient_status(cls, value: int) -> int:
        if value != 429 and not 500 <= value <= 599:
            raise ValueError("error_status must be 429 or a 5xx status (a 4xx is an answer, not a fault)")
        return value


class FaultMiddleware:
    """Applies the faults to every HTTP request outside ``/admin``, before it reaches a handler."""

    def __init__(self, app: ASGIApp, faults: FaultSwitches[LogServerFaults]) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        current = self.faults.current
        method, path = scope.get("method"), scope.get("path")
        if current.latency_s > 0:
            self.faults.count("delayed")
            await asyncio.sleep(current.latency_s)
        if current.refuse:
            self.faults.count("refused")
            log.warning("fault: refusing %s %s (503)", method, path)
            await _send_es_error(send, 503, "the log server refuses every request (fault injection: refuse)")
            return
        if self.faults.roll(current.error_rate):
            self.faults.count("error")
            log.warning("fault: answering %s to %s %s", current.error_status, method, path)
            await _send_es_error(send, current.error_status, f"simulated fault: answered {current.error_status}")
            return
        await self.app(scope, receive, send)


async def _send_es_error(send: Send, status: int, reason: str) -> None:
    body = orjson.dumps(EsError(status, _ERROR_TYPES.get(status, "exception"), reason).body())
    await send_fault_answer(send, status, body, [(b"x-elastic-product", b"Elasticsearch")])


def _validation_response(exc: ValidationError) -> JSONResponse:
    detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def install_faults(app: FastAPI, configured: LogServerFaults) -> FaultSwitches[LogServerFaults]:
    """Add the fault middleware and ``GET|POST|DELETE /admin/faults`` to the log server app.

    Call it before the catch-all Elasticsearch routes are registered, so ``/admin/faults`` is matched first.
    """
    faults = FaultSwitches(configured, log, "log server fault injection")
    app.add_middleware(FaultMiddleware, faults=faults)

    async def get_faults(request: Request) -> JSONResponse:
        return JSONResponse(faults.snapshot())

    async def set_faults(request: Request) -> JSONResponse:
        try:
            patch = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return JSONResponse({"detail": "the body must be a JSON object of fault settings"}, status_code=422)
        if not isinstance(patch, dict):
            return JSONResponse({"detail": "the body must be a JSON object of fault settings"}, status_code=422)
        try:
            faults.update(patch)
        except ValidationError as exc:
            return _validation_response(exc)
        return JSONResponse(faults.snapshot())

    async def reset_faults(request: Request) -> JSONResponse:
        faults.reset()
        return JSONResponse(faults.snapshot())

    app.add_route(f"{ADMIN_PREFIX}/faults", get_faults, methods=["GET"], include_in_schema=False)
    app.add_route(f"{ADMIN_PREFIX}/faults", set_faults, methods=["POST"], include_in_schema=False)
    app.add_route(f"{ADMIN_PREFIX}/faults", reset_faults, methods=["DELETE"], include_in_schema=False)
    return faults
