"""Task: read a workload's new log records from the log store, validated, with bad ones quarantined.

The records go into the workload's record cache in the result storage (:mod:`tasks.state_store`); the task
returns the cache's manifest, which is what the dataset build reads (on whichever worker it runs).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from elasticsearch import ApiError
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.datasets.build import InsufficientRecordsError
from agent_flywheel.datasets.shortfall import SourceFilters, shortfall_report
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.logstore.reader import extract
from agent_flywheel.logstore.shape import IndexShapeError, inspect_index
from agent_flywheel.logstore.watermarks import Watermark, extraction_window
from agent_flywheel.records.model_filter import ModelFilter
from agent_flywheel.records.quarantine import QuarantineWriter
from agent_flywheel.records.stored_cache import CacheManifest, pull, push, read_manifest
from blocks.log_store import LogStore
from tasks.log_index import log_index_shape
from tasks.retries import retry_if_transient
from tasks.state_store import blob_store, record_cache
from tasks.watermarks import watermark_store


class ExtractedLogs(BaseModel):
    """What extraction read this run and what the workload has accumulated."""

    new_records: int
    cached_records: int
    scanned: int
    duplicates: int
    already_read: int
    quarantined: dict[str, int]
    other_models: dict[str, int]
    quarantine_file: str | None
    watermark: dict[str, object] | None
    incremental: bool
    records: CacheManifest


def _window_label(since: datetime | Watermark | None, until: datetime | None) -> str:
    """The record-cache segment label of one read window: the same window always writes the same segment."""
    start = since.to_json() if isinstance(since, Watermark) else (since.isoformat() if since else None)
    text = f"{start}|{until.isoformat() if until else None}"
    return "window-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _log_store_failure(store: LogStore, product: str, exc: Exception) -> RuntimeError:
    """One message naming the log store, what went wrong and what to do (no credentials in it)."""
    detail = str(exc)
    if isinstance(exc, ApiError):
        detail = f"{exc.meta.status} {exc.message}"
    return RuntimeError(
        f"Log store ({product} at {store.public_url()}, index {store.index!r}): reading the records failed: "
        f"{store.redact(detail)}. "
        f"What to do: check that {product} is up and reachable from this worker and that the LogStore block's "
        "URL and credentials are right, then run the flywheel again; nothing was lost (the watermark only moves "
        "after a successful run, so the same records are read again)"
    )


@task(
    name="extract-logs",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_if_transient,
    timeout_seconds=3600,
    cache_policy=NO_CACHE,
)
def extract_logs(
    workload_id: str,
    client_id: str,
    cfg: FlywheelConfig,
    store: LogStore,
    run_dir: Path,
    config_file: str | None = None,
) -> ExtractedLogs:
    """Read records newer than the watermark (all of them on a full rebuild) into the workload's record cache.

    The new segment is written on this worker's disk, then stored in the result storage with the cache's
    manifest (in place when that storage is this disk). The watermark is not moved here: :func:`commit_watermark` moves it once the whole run succeeded, so a
    failed run reads the same records again. The index's mapping is read first: an index the flywheel cannot
    read correctly stops the run here, in one line that says how to fix it (and is not retried). So do records
    that were read but all filtered out or quarantined when the workload has none from earlier runs: the
    :class:`InsufficientRecordsError` names each filter with its counts and the line of ``config_file`` to change.
    """
    logger = get_run_logger()
    blobs = blob_store()
    cache, prefix = record_cache(workload_id, client_id, blobs)
    stored = read_manifest(blobs, prefix)
    if cfg.extraction.full_rebuild or (stored is None and blobs.local_root() is None):
        cache.clear()  # a full rebuild, or a working copy of a storage that holds nothing (any more)
    elif stored is not None:
        pull(cache, blobs, stored)  # what earlier runs read, on whichever worker they ran
    since, until = extraction_window(cfg.extraction, watermark_store(), workload_id, client_id)
    quarantine_path = run_dir / "quarantine.jsonl"
    teacher = ModelFilter({cfg.teacher.model_name}) if cfg.extraction.teacher_only else None
    es = store.get_client()
    failures: tuple[type[Exception], ...] = (*es.failures, LogStoreError)
    try:
        shape = inspect_index(es, store.index)
        log_index_shape(shape, logger)
        with QuarantineWriter(quarantine_path) as quarantine:
            result, written = cache.replace_window(
                _window_label(since, until),
                lambda sink: extract(
                    es,
                    store.index,
                    workload_id=workload_id,
                    client_id=client_id,
                    since=since,
                    until=until,
                    page_size=cfg.extraction.page_size,
                    limit=cfg.extraction.max_records,
                    quarantine=quarantine,
                    parse_function_arguments=cfg.data_split_config.parse_function_arguments,
                    keep_alive=cfg.extraction.pit_keep_alive,
                    on_page=lambda pages, docs: logger.info("extract-logs: page %d, %d records read", pages, docs),
                    sink=sink,
                    shape=shape,
                    late_arrival=timedelta(minutes=cfg.extraction.late_arrival_minutes),
                    slices=cfg.extraction.slices,
                ),
                keep=teacher,
            )
    except IndexShapeError:
        raise
    except failures as exc:
        raise _log_store_failure(store, es.product, exc) from exc
    finally:
        es.close()
    manifest = push(cache, blobs, prefix, stored)
    other_models = teacher.skipped if teacher is not None else Counter[str]()
    if other_models:
        logger.warning(
            "extract-logs: skipped %d records answered by other models than the teacher %s (%s); "
            "set teacher.model_name, or extraction.teacher_only: false to learn from them",
            other_models.total(),
            cfg.teacher.model_name,
            ", ".join(f"{model}: {count}" for model, count in other_models.most_common()),
        )
    quarantined = sum(result.quarantined.values())
    logger.info(
        "extract-logs: %d new valid records for %s/%s (%d scanned, %d duplicates, %d quarantined%s)",
        written,
        workload_id,
        client_id,
        result.scanned,
        result.duplicates,
        quarantined,
        f" ({', '.join(f'{k} {v}' for k, v in sorted(result.quarantined.items()))}), written to {quarantine_path}"
        if quarantined
        else "",
    )
    if written == 0 and result.scanned > 0 and cache.count() == 0:
        # Records were read and every one was filtered out or quarantined, and no earlier run kept any: "no new
        # data" would hide why. Stop as a build with too few records does, naming each filter and the line to change.
        raise InsufficientRecordsError(
            shortfall_report(
                f"0 usable records for workload {workload_id!r} / client {client_id!r}",
                {},
                0,
                cache.read_summary(),
                SourceFilters.from_config(cfg, workload_id, client_id, config_file),
                build_ran=False,
            )
        )
    return ExtractedLogs(
        new_records=written,
        cached_records=cache.count(),
        scanned=result.scanned,
        duplicates=result.duplicates,
        already_read=result.already_read,
        quarantined=dict(result.quarantined),
        other_models=dict(other_models),
        quarantine_file=str(quarantine_path) if quarantined else None,
        watermark=result.watermark.to_json() if result.watermark else None,
        incremental=isinstance(since, Watermark),
        records=manifest,
    )


@task(name="commit-watermark")
def commit_watermark(workload_id: str, client_id: str, watermark: dict[str, object] | None) -> None:
    """Move the workload's watermark once the run has succeeded, so the next run reads only newer records."""
    if watermark is not None:
        watermark_store().set(workload_id, client_id, Watermark.from_json(watermark))
