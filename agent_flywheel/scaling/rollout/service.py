"""The rollout check over HTTP, for rollout engines: ``GET /check?baseline=A&canary=B&window=10m`` → JSON.

An Argo Rollouts ``web`` metric (or any engine that polls a URL) asks it once per analysis interval. The check
reads the OTLP JSON lines file that ``flywheel otlp serve`` or a collector's file exporter writes (parsed again
only when the file changed) and answers ``{"decision": "promote" | "hold" | "rollback", "reasons": [...], ...}``
(:meth:`.check.ObservedCheck.to_dict`). Every verdict is a 200: the engine reads the decision (Argo:
``successCondition: result == "promote"``, ``failureCondition: result == "rollback"``, so a hold is
*Inconclusive* and pauses the rollout for a person). A request it cannot judge is not a verdict:

- 400: a missing or malformed parameter (``canary``, ``window``, ``until``, ``min_requests``);
- 404: another path; 405: another method than GET (or HEAD);
- 503: the traces file cannot be read (missing, unreadable) — the engine counts an error, not a failure.

An empty traces file is no traffic yet: a 200 ``hold``. Query parameters: ``canary`` (required), ``baseline``
(default: the configured baseline), ``window`` (``600``, ``10m``, ``1h``; default: the configured window) ending
at ``until`` (epoch seconds or ISO 8601; default: now), ``min_requests`` (canary requests needed to promote).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent_flywheel.config import RolloutSLO
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.profiling.files import TraceFormatError, parse_traces
from agent_flywheel.scaling.profiling.spans import Trace
from agent_flywheel.scaling.rollout.check import check_observed
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.window import parse_duration, parse_instant, resolve_window

CHECK_PATH = "/check"
HEALTH_PATH = "/health"
_log = logging.getLogger(__name__)


class TracesUnavailable(OSError):
    """The traces file cannot be read: a misconfiguration, not a verdict."""


def load_observed_traces(path: Path) -> tuple[list[Trace], list[str]]:
    """The traces of an OTLP JSON lines file (or any trace file the profile reads) and the records skipped.

    An empty file, or one without a usable span, is no traffic yet (no traces, the reason among the problems);
    a file that cannot be read at all is :class:`TracesUnavailable`.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TracesUnavailable(f"{path}: {exc.strerror or exc}") from None
    if not text.strip():
        return [], []
    try:
        parsed = parse_traces(text, str(path))
    except TraceFormatError as exc:
        return [], [str(exc)]
    return parsed.traces, parsed.problems


class _TraceCache:
    """The traces of a file, parsed again only when its size or modification time changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self._loaded: tuple[list[Trace], list[str]] = ([], [])
        self._lock = threading.Lock()

    def load(self) -> tuple[list[Trace], list[str]]:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise TracesUnavailable(f"{self.path}: {exc.strerror or exc}") from None
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key != self._key:
                self._loaded = load_observed_traces(self.path)
                self._key = key
            return self._loaded


@dataclass(frozen=True)
class CheckSettings:
    """What a check needs besides its query: the SLO, the rules' knobs, defaults for the query."""

    slo: RolloutSLO
    baseline_model: str
    window_s: float
    policy: RolloutPolicy = field(default_factory=RolloutPolicy)
    quality_attribute: str | None = None


class CheckService:
    """Answers ``/check`` queries from a traces file; independent of HTTP so it is tested directly."""

    def __init__(self, traces_path: str | Path, settings: CheckSettings, clock: Callable[[], float] = time.time):
        self._cache = _TraceCache(Path(traces_path))
        self.settings = settings
        self._clock = clock

    @property
    def traces_path(self) -> Path:
        """The file the checks read."""
        return self._cache.path

    def check(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for the query parameters of one ``GET /check``."""

        def one(name: str) -> str | None:
            values = [v for v in query.get(name, []) if v.strip()]
            return values[-1].strip() if values else None

        canary = one("canary")
        if canary is None:
            return 400, {"error": "missing query parameter: canary (the canary's model name)"}
        baseline = one("baseline") or self.settings.baseline_model
        if baseline == canary:
            return 400, {"error": f"baseline and canary are the same model: {canary!r}"}
        try:
            window_text = one("window")
            window_s = parse_duration(window_text) if window_text else self.settings.window_s
            until_text = one("until")
            until_s = parse_instant(until_text) if until_text else None
            min_text = one("min_requests")
            policy = self.settings.policy
            if min_text is not None:
                minimum = int(min_text)
                if minimum < 1:
                    raise ValueError(f"min_requests must be at least 1, got {min_text!r}")
                policy = replace(policy, min_requests=minimum)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        try:
            traces, problems = self._cache.load()
        except TracesUnavailable as exc:
            return 503, {"error": f"cannot read the traces: {exc}"}
        start, end = resolve_window(traces, window_s, until_s, self._clock())
        result = check_observed(
            traces,
            baseline,
            canary,
            self.settings.slo,
            start,
            end,
            policy=policy,
            quality_attribute=self.settings.quality_attribute,
        )
        body = result.to_dict()
        if problems:
            body["notes"] = [*body["notes"], f"{len(problems)} records of the traces file were skipped: {problems[0]}"]
        return 200, json_safe(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], service: CheckService) -> None:
        super().__init__(address, _Handler)
        self.service = service


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == CHECK_PATH:
            status, body = self.server.service.check(parse_qs(parts.query))
        elif parts.path == HEALTH_PATH:
            status, body = 200, {"status": "ok", "traces_file": str(self.server.service.traces_path)}
        else:
            status, body = 404, {"error": f"no route {parts.path}; ask GET {CHECK_PATH}?canary=MODEL"}
        self._answer(status, body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self.close_connection = True  # the body, if any, is left unread
        self._answer(405, {"error": f"{urlsplit(self.path).path} takes GET"}, {"Allow": "GET", "Connection": "close"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


class RolloutCheckServer:
    """``/check`` and ``/health`` on a standard-library HTTP server in a background thread (``port`` 0: a free one)."""

    def __init__(self, service: CheckService, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL (``http://host:port``)."""
        if self._server is None:
            raise RuntimeError("the server is not running: start it first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RolloutCheckServer:
        """Bind and serve in a daemon thread; an ``OSError`` when the port is taken."""
        self._server = _Server((self._host, self._port), self.service)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="rollout-check", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> RolloutCheckServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
