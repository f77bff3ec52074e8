"""What every simulator shares: the "simulated" label on every answer, a speedable clock, and a runner.

Every response carries ``X-Flywheel-Simulated: true`` so nobody mistakes a simulator for the real
service. Job state machines read time from :class:`SimClock`, which tests speed up.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response

from simulators.settings import LocalStackConfig, load_local_config

SIMULATED_HEADER = "X-Flywheel-Simulated"
SIMULATOR_LABEL = "agent-flywheel local stack (simulator)"


class SimClock:
    """Simulated time: ``speed`` simulated seconds pass per real second; the speed can change at run time."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._speed = speed
        self._real_anchor = time.monotonic()
        self._sim_anchor = 0.0

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("clock speed must be > 0")
        with self._lock:
            self._sim_anchor = self.now()
            self._real_anchor = time.monotonic()
            self._speed = speed

    def now(self) -> float:
        """Simulated seconds since the simulator started."""
        return self._sim_anchor + (time.monotonic() - self._real_anchor) * self._speed

    def advance(self, seconds: float) -> None:
        """Jump simulated time forward (tests use this to finish jobs without waiting)."""
        with self._lock:
            self._sim_anchor += seconds


def utc_now_iso() -> str:
    """Timestamps in the shape NeMo services use: ISO 8601 without a zone suffix."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat()


def create_simulator_app(title: str) -> FastAPI:
    """A FastAPI app whose every response is labelled simulated (FastAPI's error shapes match NeMo's)."""
    app = FastAPI(title=f"{title} — {SIMULATOR_LABEL}", docs_url="/docs", redoc_url=None)

    @app.middleware("http")
    async def _label_simulated(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers[SIMULATED_HEADER] = "true"
        return response

    return app


def serve_part(part: str, create_app: Callable[[LocalStackConfig], FastAPI], argv: list[str] | None = None) -> None:
    """A part's ``python -m simulators.<part> [--config FILE] [--port N]``: its app on ``ports.<part>`` (``--port``
    wins, and is in the config the app is built from), served with uvicorn until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(prog=f"python -m simulators.{part}", description=SIMULATOR_LABEL)
    parser.add_argument("--config", default=None, help="local stack YAML (default: configs/local.yaml)")
    parser.add_argument("--port", type=int, default=None, help="override the port from the config")
    args = parser.parse_args(argv)
    cfg = load_local_config(args.config)
    if args.port:
        setattr(cfg.ports, part, args.port)
    port, app = getattr(cfg.ports, part), create_app(cfg)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {part} %(levelname)s %(message)s")
    logging.getLogger(part).info("starting %s on %s:%s (%s)", part, cfg.host, port, SIMULATOR_LABEL)
    uvicorn.run(app, host=cfg.host, port=port, log_level="warning", access_log=False)
