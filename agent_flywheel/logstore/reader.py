"""Reading a workload's records: paged scans and extraction, the flywheel's first step.

Reading is **point-in-time + search_after** (not scroll): a consistent snapshot, one page in memory at a
time, ``term`` filters on the keyword ids (the blueprint's ``match`` would also hit analysed look-alikes)
and a ``range`` on ``timestamp``.

Incremental reads continue after a :class:`~agent_flywheel.logstore.watermarks.Watermark`. The caller
saves the watermark of an :class:`ExtractionResult` only once the run that used its records has
succeeded, so a failed run is simply read again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Generator
from datetime import datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.logstore.index import floor_ms, window_query
from agent_flywheel.logstore.traffic import count_since
from agent_flywheel.logstore.watermarks import Watermark
from agent_flywheel.records.documents import record_digest
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.timestamps import parse_timestamp
from agent_flywheel.records.validation import validate_record

log = logging.getLogger(__name__)


ProgressCallback = Callable[[int, int], None]


def scan_records(
    es: Elasticsearch,
    index: str,
    *,
    workload_id: str,
    client_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    page_size: int = 500,
    keep_alive: str = "2m",
    descending: bool = False,
    on_page: ProgressCallback | None = None,
) -> Generator[tuple[str, Any], None, None]:
    """Every ``(es_id, _source)`` of one workload and client with ``since <= timestamp < until``.

    Point-in-time + ``search_after``, sorted by timestamp with the ``_shard_doc`` tiebreaker: a consistent
    snapshot while producers keep writing, no page read twice or skipped, one page in memory. The PIT is
    closed when the generator finishes or is closed (use ``contextlib.closing`` when stopping early).
    ``on_page(pages, docs)`` reports progress after each page.
    """
    if page_size < 1:
        raise ValueError("page_size must be >= 1")
    order = "desc" if descending else "asc"
    query = window_query(workload_id, client_id, since, until)
    sort: list[dict[str, Any]] = [{"timestamp": {"order": order}}, {"_shard_doc": order}]
    try:
        pit_id = es.open_point_in_time(index=index, keep_alive=keep_alive)["id"]
    except NotFoundError:
        raise LogStoreError(f"log index {index!r} does not exist") from None
    pages = docs = 0
    try:
        search_after: list[Any] | None = None
        while True:
            extra: dict[str, Any] = {"search_after": search_after} if search_after is not None else {}
            response = es.search(
                pit={"id": pit_id, "keep_alive": keep_alive},
                query=query,
                sort=sort,
                size=page_size,
                track_total_hits=False,
                **extra,
            )
            pit_id = response.get("pit_id") or pit_id
            hits = response["hits"]["hits"]
            if not hits:
                break
            pages += 1
            docs += len(hits)
            if on_page is not None:
                on_page(pages, docs)
            for hit in hits:
                yield str(hit["_id"]), hit.get("_source")
            if len(hits) < page_size:
                break
            search_after = hits[-1]["sort"]
    finally:
        try:
            es.close_point_in_time(id=pit_id)
        except Exception as exc:  # it expires by itself after keep_alive
            log.warning("could not close point in time on %s: %s", index, exc)


RecordSink = Callable[[LogRecord, bytes], None]
"""Where :func:`extract` hands each valid, distinct record and its 32-byte dedupe digest."""


@dataclasses.dataclass
class ExtractionResult:
    """What :func:`extract` read.

    ``records`` are the valid, distinct (by :func:`~agent_flywheel.records.documents.record_hash`) records, newest
    first, when :func:`extract` was called without a ``sink``; with a sink, they went to the sink as they
    were read and ``records`` is empty (``valid - duplicates`` of them). ``watermark`` is where the next
    incremental read starts; save it once this run succeeded.
    """

    records: list[LogRecord]
    scanned: int  # hits read and validated (excluding those skipped as already read at the watermark)
    valid: int  # of those, valid records (before dedupe)
    duplicates: int  # valid records dropped because a newer one has the same conversation
    quarantined: dict[str, int]
    already_read: int  # hits skipped because the watermark lists them
    skipped_older: int  # records in the window not read because ``limit`` was reached (newest kept)
    max_timestamp: datetime | None
    watermark: Watermark | None
    pages: int = 0

    @property
    def limit_reached(self) -> bool:
        """Whether reading stopped at ``limit`` (older records in the window were left unread)."""
        return self.skipped_older > 0


def _raw_timestamp(source: Any) -> datetime | None:
    if not isinstance(source, dict):
        return None
    try:
        return parse_timestamp(source.get("timestamp"))
    except ValueError:
        return None


def extract(
    es: Elasticsearch,
    index: str,
    *,
    workload_id: str,
    client_id: str,
    since: datetime | Watermark | None = None,
    until: datetime | None = None,
    page_size: int = 500,
    limit: int | None = None,
    quarantine: QuarantineWriter,
    parse_function_arguments: bool = True,
    keep_alive: str = "2m",
    on_page: ProgressCallback | None = None,
    sink: RecordSink | None = None,
) -> ExtractionResult:
    """Read, validate and dedupe one workload's records in a time window: the flywheel's first step.

    ``since`` is a datetime (inclusive), a :class:`Watermark` (continue after it) or None (from the start);
    ``until`` is exclusive. Reading goes newest first; invalid records are quarantined (records of
    another workload or client as ``wrong_workload``), and of records with the same conversation only the
    newest is kept, as the blueprint's dedupe does.

    ``sink`` receives each valid, distinct record as soon as it is validated, newest first, with its
    dedupe digest (:func:`~agent_flywheel.records.documents.record_digest`, so a writer need not hash it again), and
    ``records`` of the result stays empty: memory then holds one page and the 32-byte digests that
    dedupe, however many records the window has (the flow writes them into the record cache with
    :meth:`~agent_flywheel.records.cache.RecordCache.replace_window`). An exception from the sink stops the
    read and propagates. Without a sink the records are collected in ``records``.

    ``limit`` bounds the work: reading stops once ``limit`` distinct valid records are read, so the
    result is the *newest* ``limit`` distinct conversations in the window (the blueprint keeps the newest
    ``2 * limit`` raw records and dedupes afterwards; pass ``2 * data_split_config.limit`` to keep its
    headroom for the dataset step's quality filters and random sample). The unread older records are
    counted in ``skipped_older`` and are not read by the next incremental run either. ``limit=None``
    reads the whole window (without a sink, memory grows with it).

    The hits' sources are taken to be what the client's JSON parser returned (trees of plain values),
    which lets validation check them faster (``validate_record(parsed=True)``); anything a JSON parser
    can return is still quarantined as before.
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1 or None")
    previous = since if isinstance(since, Watermark) else None
    start = since.timestamp if isinstance(since, Watermark) else since
    seen_ids = previous.ids if previous else frozenset()
    records: list[LogRecord] = []
    digests: set[bytes] = set()
    counts: Counter[str] = Counter()
    scanned = valid = duplicates = already_read = 0
    max_timestamp: datetime | None = None
    newest_ms: datetime | None = None
    newest_ids: set[str] = set()
    pages = 0

    def progress(page_count: int, docs: int) -> None:
        nonlocal pages
        pages = page_count
        if on_page is not None:
            on_page(page_count, docs)

    hits = scan_records(
        es,
        index,
        workload_id=workload_id,
        client_id=client_id,
        since=start,
        until=until,
        page_size=page_size if limit is None else min(page_size, limit + 1),
        keep_alive=keep_alive,
        descending=True,
        on_page=progress,
    )
    stopped = False
    with contextlib.closing(hits):
        for doc_id, source in hits:
            if doc_id in seen_ids:
                already_read += 1
                continue
            scanned += 1
            result = validate_record(
                source,
                source=f"es:{index}/{doc_id}",
                parse_function_arguments=parse_function_arguments,
                expected_workload_id=workload_id,
                expected_client_id=client_id,
                parsed=True,
            )
            timestamp = result.timestamp if isinstance(result, LogRecord) else _raw_timestamp(source)
            if timestamp is not None:
                max_timestamp = timestamp if max_timestamp is None else max(max_timestamp, timestamp)
                bucket = floor_ms(timestamp)
                if newest_ms is None or bucket > newest_ms:
                    newest_ms, newest_ids = bucket, {doc_id}
                elif bucket == newest_ms:
                    newest_ids.add(doc_id)
            if isinstance(result, Quarantined):
                quarantine.write(result)
                counts[str(result.reason)] += 1
                continue
            valid += 1
            digest = record_digest(result)
            if digest in digests:
                duplicates += 1
                continue
            digests.add(digest)
            if sink is None:
                records.append(result)
            else:
                sink(result, digest)
            if limit is not None and len(digests) >= limit:
                stopped = True
                break

    skipped_older = 0
    if stopped and newest_ms is not None:
        # records up to the newest one read (newer ones may have arrived since the PIT was opened)
        upper = newest_ms + timedelta(milliseconds=1)
        in_window = count_since(es, index, workload_id, client_id, start, until=upper)
        skipped_older = max(0, in_window - scanned - already_read)
    return ExtractionResult(
        records=records,
        scanned=scanned,
        valid=valid,
        duplicates=duplicates,
        quarantined=dict(counts),
        already_read=already_read,
        skipped_older=skipped_older,
        max_timestamp=max_timestamp,
        watermark=_next_watermark(previous, newest_ms, newest_ids, stopped and skipped_older > 0),
        pages=pages,
    )


def _next_watermark(
    previous: Watermark | None, newest_ms: datetime | None, newest_ids: set[str], skipped: bool
) -> Watermark | None:
    """Where the next incremental read starts, given what this one read.

    When older records were deliberately left unread (``limit``), the newest millisecond may be only
    partly read too; the watermark then moves past it, so the next run starts with new records only.
    """
    if newest_ms is None:
        return previous
    if previous is not None and newest_ms < previous.timestamp:  # a hostile index; never go back
        return previous
    if skipped:
        return Watermark(newest_ms + timedelta(milliseconds=1))
    if previous is not None and newest_ms == previous.timestamp:
        return Watermark(newest_ms, previous.ids | newest_ids)
    return Watermark(newest_ms, frozenset(newest_ids))
