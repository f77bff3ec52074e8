"""Task: read a workload's new log records from Elasticsearch, validated, with bad ones quarantined."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from pydantic import BaseModel

from agent_flywheel.config import FlywheelConfig
from agent_flywheel.logstore import Watermark, extract, extraction_window
from agent_flywheel.paths import state_dir
from agent_flywheel.record_cache import RecordCache
from agent_flywheel.records import QuarantineWriter, to_document
from blocks.log_store import LogStore
from blocks.resolve import load_block
from tasks.watermarks import watermark_store


class ExtractedLogs(BaseModel):
    """What extraction read this run and what the workload has accumulated."""

    new_records: int
    cached_records: int
    scanned: int
    duplicates: int
    already_read: int
    quarantined: dict[str, int]
    quarantine_file: str | None
    watermark: dict[str, object] | None
    incremental: bool


def record_cache(workload_id: str, client_id: str) -> RecordCache:
    """The local store of this workload's validated records."""
    return RecordCache(state_dir("records"), workload_id, client_id)


@task(name="extract-logs", retries=2, retry_delay_seconds=[5, 30], timeout_seconds=3600)
def extract_logs(
    workload_id: str, client_id: str, cfg: FlywheelConfig, log_store_block: str, run_dir: Path
) -> ExtractedLogs:
    """Read records newer than the watermark (all of them on a full rebuild) into the local record cache.

    The watermark is not moved here: :func:`commit_watermark` moves it once the whole run succeeded, so a
    failed run reads the same records again.
    """
    logger = get_run_logger()
    store = load_block(LogStore, log_store_block)
    cache = record_cache(workload_id, client_id)
    if cfg.extraction.full_rebuild:
        cache.clear()
    since, until = extraction_window(cfg.extraction, watermark_store(), workload_id, client_id)
    quarantine_path = run_dir / "quarantine.jsonl"
    es = store.client()
    try:
        with QuarantineWriter(quarantine_path) as quarantine:
            result = extract(
                es,
                store.index,
                workload_id=workload_id,
                client_id=client_id,
                since=since,
                until=until,
                page_size=cfg.extraction.page_size,
                limit=2 * cfg.data_split_config.limit,
                quarantine=quarantine,
                parse_function_arguments=cfg.data_split_config.parse_function_arguments,
                keep_alive=cfg.extraction.pit_keep_alive,
                on_page=lambda pages, docs: logger.info("extract-logs: page %d, %d records read", pages, docs),
            )
    finally:
        es.close()
    _, written = cache.append((to_document(r) for r in result.records), label="run")
    quarantined = sum(result.quarantined.values())
    logger.info(
        "extract-logs: %d new valid records for %s/%s (%d scanned, %d duplicates, %d quarantined%s)",
        written,
        workload_id,
        client_id,
        result.scanned,
        result.duplicates,
        quarantined,
        f", written to {quarantine_path}" if quarantined else "",
    )
    return ExtractedLogs(
        new_records=written,
        cached_records=cache.count(),
        scanned=result.scanned,
        duplicates=result.duplicates,
        already_read=result.already_read,
        quarantined=dict(result.quarantined),
        quarantine_file=str(quarantine_path) if quarantined else None,
        watermark=result.watermark.to_json() if result.watermark else None,
        incremental=isinstance(since, Watermark),
    )


@task(name="commit-watermark")
def commit_watermark(workload_id: str, client_id: str, watermark: dict[str, object] | None) -> None:
    """Move the workload's watermark once the run has succeeded, so the next run reads only newer records."""
    if watermark is not None:
        watermark_store().set(workload_id, client_id, Watermark.from_json(watermark))
