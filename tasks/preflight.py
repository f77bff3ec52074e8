"""The preflight as a task: every check of :mod:`agent_flywheel.preflight` before the run creates any job or
deployment; a problem fails the run at once, listing every problem (not retried: retrying cannot fix them)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.preflight import PreflightError, PreflightReport, run_preflight
from blocks.log_store import LogStore
from blocks.nemo_platform import NemoPlatform


async def check(cfg: FlywheelConfig, platform: NemoPlatform, store: LogStore | None = None) -> PreflightReport:
    """Run every check with clients built from the blocks (the NeMo client carries the remote models' keys)."""
    async with platform.get_client(cfg) as nemo:
        es = store.get_client() if store is not None else None
        try:
            return await run_preflight(cfg, nemo, es=es, index=store.index if store is not None else None)
        finally:
            if es is not None:
                es.close()


@task(name="preflight", retries=0, cache_policy=NO_CACHE)
async def preflight(cfg: FlywheelConfig, platform: NemoPlatform, store: LogStore) -> PreflightReport:
    """Check what the run needs before any GPU work; raises :class:`PreflightError` listing every problem."""
    logger = get_run_logger()
    report = await check(cfg, platform, store)
    for finding in report.findings:
        (logger.info if finding.ok else logger.error)("preflight: %s", finding.line())
    if not report.ok:
        raise PreflightError(report)
    logger.info("preflight: %d checks passed", len(report.findings))
    return report
