"""The log server's HTTP face: Elasticsearch's REST paths, headers, media types and error shapes.

The official ``elasticsearch`` client (8.x and 9.x) checks ``X-Elastic-Product: Elasticsearch`` and sends
``application/vnd.elasticsearch+json; compatible-with=N``; both are honoured here so production code runs
unchanged against this simulator. Handlers run in a worker thread because SQLite calls are synchronous.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulators.common import SIMULATED_HEADER, create_simulator_app
from simulators.logserver.errors import EsError
from simulators.logserver.faults import LogServerFaults, install_faults
from simulators.logserver.service import LogService, Reply
from simulators.logserver.storage import Storage
from simulators.settings import LocalStackConfig

logger = logging.getLogger("logserver")

PRODUCT_HEADER = (b"x-elastic-product", b"Elasticsearch")
_COMPAT_RE = re.compile(r"application/vnd\.elasticsearch\+[\w-]+\s*;\s*compatible-with\s*=\s*(\d+)", re.IGNORECASE)
SUPPORTED_COMPAT = (8, 9)
_FASTAPI_PAGES = {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"}
Handler = Callable[[LogService, dict[str, Any], dict[str, str], bytes], Reply]


class LogServerSettings(BaseModel):
    """The ``logserver`` section of ``configs/local.yaml``."""

    model_config = ConfigDict(extra="forbid")

    db_path: str | None = Field(default=None, description="SQLite file; default <state_dir>/logserver.sqlite3")
    cluster_name: str = "flywheel-local"
    node_name: str = "logserver"
    auto_create_index: bool = Field(default=True, description="Index into a missing index creates it, as ES")
    max_open_scroll_context: int = Field(default=500, gt=0)
    faults: LogServerFaults = Field(default_factory=LogServerFaults, description="Fault injection (faults.py)")


def db_path_for(cfg: LocalStackConfig) -> Path:
    """Where the log server keeps its SQLite database."""
    configured = cfg.logserver.get("db_path")
    return Path(configured) if configured else cfg.state_path() / "logserver.sqlite3"


def _compat_version(value: str | None, header: str) -> int | None:
    if not value:
        return None
    match = _COMPAT_RE.search(value)
    if match is None:
        if "vnd.elasticsearch" in value.lower():
            raise _media_type_error(header, value)
        return None
    version = int(match.group(1))
    if version not in SUPPORTED_COMPAT:
        raise EsError(
            400,
            "media_type_header_exception",
            f"Invalid media-type value on headers [{header}]",
            caused_by={
                "type": "status_exception",
                "reason": f"{header} version must be either version 9 or 8, but found {version}. {header}={value}",
            },
        )
    return version


def _media_type_error(header: str, value: str) -> EsError:
    return EsError(
        400,
        "media_type_header_exception",
        f"Invalid media-type value on headers [{header}]",
        caused_by={"type": "status_exception", "reason": f"{header}={value} is not a supported media type"},
    )


def negotiate(accept: str | None, content_type: str | None) -> int | None:
    """The compatible-with version to answer with; ES's ``media_type_header_exception`` on bad or mismatched ones."""
    accept_version = _compat_version(accept, "Accept")
    content_version = _compat_version(content_type, "Content-Type")
    if accept_version and content_version and accept_version != content_version:
        raise EsError(
            400,
            "media_type_header_exception",
            "Invalid media-type value on headers [Content-Type, Accept]",
            caused_by={
                "type": "status_exception",
                "reason": "A compatible version is required on both Content-Type and Accept headers if either one "
                "has requested a compatible version and the compatible versions must match. "
                f"Accept={accept}, Content-Type={content_type}",
            },
        )
    return accept_version or content_version


class ElasticsearchHeaders:
    """ASGI middleware: ``X-Elastic-Product`` on every response and the compatible-with media type echoed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            version = negotiate(headers.get("accept"), headers.get("content-type"))
        except EsError as exc:
            await _send_error(send, exc)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = [(k, v) for k, v in message.get("headers", []) if k.lower() != PRODUCT_HEADER[0]]
                if version is not None:
                    media = f"application/vnd.elasticsearch+json;compatible-with={version}".encode()
                    out = [
                        (k, media if k.lower() == b"content-type" and v.startswith(b"application/json") else v)
                        for k, v in out
                    ]
                out.append(PRODUCT_HEADER)
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_error(send: Send, exc: EsError) -> None:
    body = orjson.dumps(exc.body())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        PRODUCT_HEADER,
        (SIMULATED_HEADER.lower().encode(), b"true"),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _match_segment(patterns: list[list[str]], key: str) -> tuple[bool, list[list[str]]]:
    """Whether ``key`` completes a filter_path pattern, and the patterns left for its children."""
    full, rest = False, []
    for pattern in patterns:
        if not pattern:
            continue
        head = pattern[0]
        if head == "**":
            rest.append(pattern)
            tail = pattern[1:]
            if not tail:
                full = True
            else:
                sub_full, sub_rest = _match_segment([tail], key)
                full, rest = full or sub_full, rest + sub_rest
        elif fnmatch.fnmatchcase(key, head):
            if len(pattern) == 1:
                full = True
            else:
                rest.append(pattern[1:])
    return full, rest


def _include(node: Any, patterns: list[list[str]]) -> Any:
    if isinstance(node, list):
        items = [_include(item, patterns) for item in node]
        return [i for i in items if i is not None]
    if not isinstance(node, dict):
        return None
    out = {}
    for key, value in node.items():
        full, rest = _match_segment(patterns, key)
        if full:
            out[key] = value
        elif rest and isinstance(value, dict | list):
            kept = _include(value, rest)
            if kept:
                out[key] = kept
    return out or None


def _exclude(node: Any, patterns: list[list[str]]) -> Any:
    if isinstance(node, list):
        return [_exclude(item, patterns) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        full, rest = _match_segment(patterns, key)
        if full:
            continue
        out[key] = _exclude(value, rest) if rest else value
    return out


def apply_filter_path(body: Any, spec: str) -> Any:
    """ES's ``filter_path`` response filtering: dotted patterns, ``*``, ``**`` and ``-`` exclusions."""
    body = orjson.loads(orjson.dumps(body))
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    includes = [p.split(".") for p in parts if not p.startswith("-")]
    excludes = [p[1:].split(".") for p in parts if p.startswith("-")]
    if includes:
        body = _include(body, includes) or {}
    if excludes:
        body = _exclude(body, excludes)
    return body


def render(request: Request, status: int, body: Any) -> Response:
    """Serialise a reply; HEAD gets no body, ``filter_path`` and ``pretty`` are honoured."""
    if request.method == "HEAD" or body is None:
        return Response(status_code=status, media_type="application/json")
    if isinstance(body, str):
        return Response(body, status_code=status, media_type="text/plain; charset=UTF-8")
    params = request.query_params
    if params.get("filter_path"):
        body = apply_filter_path(body, params["filter_path"])
    option = orjson.OPT_INDENT_2 if params.get("pretty") in ("", "true") else 0
    return Response(orjson.dumps(body, option=option), status_code=status, media_type="application/json")


class _Holder:
    """The service of a running app (opened at startup, closed at shutdown)."""

    def __init__(self) -> None:
        self.service: LogService | None = None


def create_app(cfg: LocalStackConfig) -> FastAPI:
    """The log server app: an Elasticsearch REST subset over SQLite, labelled simulated."""
    settings = LogServerSettings.model_validate(cfg.logserver)
    path = db_path_for(cfg)
    holder = _Holder()
    app = create_simulator_app("Log server (Elasticsearch subset)")
    # An index may be called "docs": FastAPI's own pages must not shadow Elasticsearch paths.
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") not in _FASTAPI_PAGES]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        storage = Storage(path)
        holder.service = LogService(
            storage,
            settings.cluster_name,
            settings.node_name,
            settings.auto_create_index,
            settings.max_open_scroll_context,
        )
        logger.info("log server (simulated Elasticsearch) using %s", path)
        try:
            yield
        finally:
            holder.service = None
            storage.close()

    app.router.lifespan_context = lifespan
    app.add_middleware(ElasticsearchHeaders)
    app.state.faults = install_faults(app, settings.faults)  # before the catch-all routes
    _register_routes(app, holder)
    return app


def _endpoint(holder: _Holder, handlers: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        handler = handlers.get(request.method) or handlers.get("GET")
        raw = await request.body()
        params = dict(request.query_params)
        try:
            service = holder.service
            if service is None or handler is None:
                raise EsError(503, "unavailable_shards_exception", "the log server is not started")
            path = {**request.path_params, "__method__": request.method}
            status, body = await run_in_threadpool(handler, service, path, params, raw)
        except EsError as exc:
            status, body = exc.status, exc.body()
        except Exception as exc:
            logger.exception("log server failed on %s %s", request.method, request.url.path)
            error = EsError(500, "exception", f"internal error of the local log server: {type(exc).__name__}: {exc}")
            status, body = error.status, error.body()
        return render(request, status, body)

    return endpoint


def _no_handler(service: LogService, path: dict[str, Any], params: dict[str, str], raw: bytes) -> Reply:
    uri, method = path.get("rest", ""), path.get("__method__", "GET")
    raise EsError(400, "no_handler_found_exception", f"no handler found for uri [/{uri}] and method [{method}]")


def _register_routes(app: FastAPI, holder: _Holder) -> None:
    def add(path: str, **handlers: Handler) -> None:
        app.add_route(path, _endpoint(holder, handlers), methods=list(handlers), include_in_schema=False)

    add("/", GET=lambda s, p, q, b: s.root(), HEAD=lambda s, p, q, b: s.root())
    add("/_cluster/health", GET=lambda s, p, q, b: s.health(None))
    add("/_cluster/health/{index}", GET=lambda s, p, q, b: s.health(p["index"]))
    scroll: dict[str, Handler] = {
        "GET": lambda s, p, q, b: s.scroll(b, q, p.get("scroll_id")),
        "POST": lambda s, p, q, b: s.scroll(b, q, p.get("scroll_id")),
        "DELETE": lambda s, p, q, b: s.clear_scroll(b, q, p.get("scroll_id")),
    }
    add("/_search/scroll", **scroll)
    add("/_search/scroll/{scroll_id}", **scroll)
    search: Handler = lambda s, p, q, b: s.search(p.get("index"), b, q)  # noqa: E731
    count: Handler = lambda s, p, q, b: s.count(p.get("index"), b, q)  # noqa: E731
    bulk: Handler = lambda s, p, q, b: s.bulk(p.get("index"), b)  # noqa: E731
    refresh: Handler = lambda s, p, q, b: s.refresh(p.get("index"))  # noqa: E731
    add("/_search", GET=search, POST=search)
    add("/_pit", DELETE=lambda s, p, q, b: s.close_pit(b))
    add("/_search/point_in_time", DELETE=lambda s, p, q, b: s.delete_pits(b))  # OpenSearch's
    add("/_bulk", POST=bulk, PUT=bulk)
    add("/_count", GET=count, POST=count)
    add("/_refresh", GET=refresh, POST=refresh)
    add("/_mapping", GET=lambda s, p, q, b: s.get_mapping(None))
    add("/_settings", GET=lambda s, p, q, b: s.get_settings(None))
    add("/_cat/indices", GET=lambda s, p, q, b: s.cat_indices(None, q))
    add("/_cat/indices/{index}", GET=lambda s, p, q, b: s.cat_indices(p["index"], q))
    add("/{index}/_search", GET=search, POST=search)
    add("/{index}/_count", GET=count, POST=count)
    add("/{index}/_bulk", POST=bulk, PUT=bulk)
    add("/{index}/_refresh", GET=refresh, POST=refresh)
    add("/{index}/_pit", POST=lambda s, p, q, b: s.open_pit(p["index"], q))
    add("/{index}/_search/point_in_time", POST=lambda s, p, q, b: s.create_pit(p["index"], q))  # OpenSearch's
    add("/{index}/_delete_by_query", POST=lambda s, p, q, b: s.delete_by_query(p["index"], b))
    mapping_put: Handler = lambda s, p, q, b: s.put_mapping(p["index"], b)  # noqa: E731
    add("/{index}/_mapping", GET=lambda s, p, q, b: s.get_mapping(p["index"]), PUT=mapping_put, POST=mapping_put)
    add("/{index}/_settings", GET=lambda s, p, q, b: s.get_settings(p["index"]))
    add("/{index}/_doc", POST=lambda s, p, q, b: s.index_doc(p["index"], None, b, q, False))
    index_doc: Handler = lambda s, p, q, b: s.index_doc(p["index"], p["id"], b, q, False)  # noqa: E731
    create_doc: Handler = lambda s, p, q, b: s.index_doc(p["index"], p["id"], b, q, True)  # noqa: E731
    add(
        "/{index}/_doc/{id:path}",
        GET=lambda s, p, q, b: s.get_doc(p["index"], p["id"], q),
        PUT=index_doc,
        POST=index_doc,
        DELETE=lambda s, p, q, b: s.delete_doc(p["index"], p["id"], q),
    )
    add("/{index}/_create/{id:path}", PUT=create_doc, POST=create_doc)
    add("/{index}/_update/{id:path}", POST=lambda s, p, q, b: s.update_doc(p["index"], p["id"], b))
    add("/{index}/_source/{id:path}", GET=lambda s, p, q, b: s.get_doc(p["index"], p["id"], q, source_only=True))
    add(
        "/{index}",
        HEAD=lambda s, p, q, b: s.index_exists(p["index"]),
        GET=lambda s, p, q, b: s.get_index(p["index"]),
        PUT=lambda s, p, q, b: s.create_index(p["index"], b),
        DELETE=lambda s, p, q, b: s.delete_index(p["index"]),
    )
    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    add("/{rest:path}", **dict.fromkeys(methods, _no_handler))
