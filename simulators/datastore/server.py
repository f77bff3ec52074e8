"""The Data Store simulator app: its own namespace API, the HF Hub protocol under ``/v1/hf``, and ``/health``.

Files persist under ``<stack state>/datastore`` (see :mod:`.storage`), so a restart keeps every repo.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from simulators.common import create_simulator_app
from simulators.datastore.hf import hf_router
from simulators.datastore.settings import datastore_settings
from simulators.datastore.storage import RepoStore, StoreError
from simulators.settings import LocalStackConfig


async def _namespace_from(request: Request) -> str | None:
    """``namespace`` from a form-encoded body (what the blueprint sends) or a JSON one."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if "json" in content_type or raw.lstrip().startswith(b"{"):
        try:
            body: Any = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        value = body.get("namespace") if isinstance(body, dict) else None
        return value if isinstance(value, str) else None
    values = parse_qs(raw.decode("utf-8", errors="replace")).get("namespace")
    return values[0] if values else None


def _detail(exc: StoreError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


def create_app(cfg: LocalStackConfig) -> FastAPI:
    """The Data Store simulator for one local stack."""
    settings = datastore_settings(cfg)
    store = RepoStore(cfg.state_path() / "datastore")
    app = create_simulator_app("NeMo Data Store")
    app.state.store = store

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/v1/datastore/namespaces", response_model=None)
    async def create_namespace(request: Request) -> Response:
        namespace = await _namespace_from(request)
        if not namespace:
            missing = [{"type": "missing", "loc": ["body", "namespace"], "msg": "Field required"}]
            return JSONResponse({"detail": missing}, status_code=422)
        try:
            return JSONResponse(store.create_namespace(namespace), status_code=201)
        except StoreError as exc:
            return _detail(exc)

    @app.get("/v1/datastore/namespaces")
    async def list_namespaces() -> dict[str, Any]:
        return {"object": "list", "data": store.list_namespaces()}

    @app.get("/v1/datastore/namespaces/{namespace}", response_model=None)
    async def get_namespace(namespace: str) -> Response:
        found = store.get_namespace(namespace)
        if found is None:
            return JSONResponse({"detail": f"namespace {namespace} not found"}, status_code=404)
        return JSONResponse(found)

    @app.delete("/v1/datastore/namespaces/{namespace}", response_model=None)
    async def delete_namespace(namespace: str) -> Response:
        if not store.delete_namespace(namespace):
            return JSONResponse({"detail": f"namespace {namespace} not found"}, status_code=404)
        deleted_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return JSONResponse({"message": "Resource deleted successfully.", "id": namespace, "deleted_at": deleted_at})

    app.include_router(
        hf_router(store, require_namespace=settings.require_namespace, upload_mode=settings.upload_mode),
        prefix="/v1/hf",
    )
    return app
