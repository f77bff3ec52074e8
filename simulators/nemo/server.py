"""The NeMo simulator app: Entity Store, Customizer, Evaluator and Deployment Management on one port.

``create_app(cfg)`` wires the services to one store, one simulated clock and HTTP clients for the Data
Store and NIM simulators. Job state follows the clock and is computed when read; a light background
tick (``tick_interval_s``) makes sure ended jobs register their models with the NIM even when nobody
polls. State is snapshotted under ``<state_dir>/nemo`` so restarting the stack keeps every entity and job,
and on start-up the NIM is told again which adapters and deployments it serves (:mod:`.nim_sync`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from simulators.common import SimClock, create_simulator_app, utc_now_iso
from simulators.fault_switches import FaultSwitches
from simulators.nemo import admin, customization_jobs, customizer, deployments, entity_store, evaluator
from simulators.nemo.context import NemoSim
from simulators.nemo.errors import install_error_handlers
from simulators.nemo.faults import FaultMiddleware
from simulators.nemo.nim_sync import resync_nim
from simulators.nemo.settings import load_nemo_settings
from simulators.nemo.state import Store
from simulators.nemo.upstream import DataStoreClient, HttpPool, NimClient
from simulators.settings import LocalStackConfig

log = logging.getLogger("nemo-sim")


def build_sim(cfg: LocalStackConfig) -> NemoSim:
    """The shared state: settings, clock (resumed from the snapshot), store (seeded when new), clients."""
    settings = load_nemo_settings(cfg)
    clock = SimClock(cfg.clock_speed)
    store = Store(cfg.state_path() / "nemo" if settings.persist else None, clock.now)
    resumed_at = store.load()
    if resumed_at is not None:
        clock.advance(resumed_at)
    http = HttpPool()
    sim = NemoSim(
        cfg=cfg,
        settings=settings,
        clock=clock,
        store=store,
        faults=FaultSwitches(settings.faults, log),
        http=http,
        datastore=DataStoreClient(f"{cfg.url('datastore')}/v1/hf", http),
        nim=NimClient(cfg.url("nim"), http),
    )
    if resumed_at is None:
        now = utc_now_iso()
        entity_store.seed_entity_store(sim, now)
        customizer.seed_customizer(sim, now)
        sim.save()
    else:
        log.info("resumed NeMo simulator state from %s at simulated t=%.1f s", store.snapshot_path, resumed_at)
    return sim


async def _tick(sim: NemoSim) -> None:
    while True:
        await asyncio.sleep(sim.settings.tick_interval_s)
        try:
            await admin.advance_side_effects(sim)
        except Exception:
            log.exception("background tick failed")


def create_app(cfg: LocalStackConfig) -> FastAPI:
    """The NeMo v1 API (simulated) for the local stack and the tests."""
    sim = build_sim(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        evaluator.resume_evaluations(sim)
        sim.spawn("nim-resync", resync_nim(sim))
        ticker = asyncio.create_task(_tick(sim)) if sim.settings.tick_interval_s > 0 else None
        try:
            yield
        finally:
            if ticker:
                ticker.cancel()
            for key in list(sim.tasks):
                sim.cancel_task(key)
            await sim.http.close()
            sim.save()

    app = create_simulator_app("NeMo microservices (Entity Store, Customizer, Evaluator, DMS)")
    app.router.lifespan_context = lifespan
    app.state.sim = sim
    install_error_handlers(app)
    app.add_middleware(FaultMiddleware, faults=sim.faults)
    for module in (admin, entity_store, customizer, customization_jobs, evaluator, deployments):
        app.include_router(module.build_router(sim))
    return app
