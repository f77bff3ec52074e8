"""Errors in FastAPI's shapes, which is what the NeMo services answer: ``{"detail": ...}``.

Handlers raise these instead of building responses, so every 404/409/422 looks the same, and a
catch-all handler turns an unexpected exception into a JSON 500 instead of a traceback page.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

log = logging.getLogger("nemo-sim")


def not_found(what: str) -> HTTPException:
    """404 ``{"detail": "<what> not found"}``."""
    return HTTPException(status_code=404, detail=f"{what} not found")


def conflict(detail: str) -> HTTPException:
    """409 for a duplicate or a state that forbids the request (e.g. cancelling a finished job)."""
    return HTTPException(status_code=409, detail=detail)


def unprocessable(loc: list[str | int], msg: str, value: Any = None, kind: str = "value_error") -> HTTPException:
    """422 in exactly FastAPI's validation shape, for checks a pydantic model cannot express."""
    return HTTPException(status_code=422, detail=[{"type": kind, "loc": loc, "msg": msg, "input": value}])


def install_error_handlers(app: FastAPI) -> None:
    """A JSON 500 for anything unexpected (logged with its traceback here, never sent to the client)."""

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"Internal server error ({type(exc).__name__})"})
