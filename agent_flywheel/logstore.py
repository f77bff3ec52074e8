"""The Elasticsearch side of the flywheel: the log index, bulk import, paged reading, watermarks, traffic counts.

Everything goes through the official ``elasticsearch`` client (sync), so the same code runs against a
production cluster and against the local stack's log server.

Reading is **point-in-time + search_after** (not scroll): a consistent snapshot, one page in memory at a
time, ``term`` filters on the keyword ids (the blueprint's ``match`` would also hit analysed look-alikes)
and a ``range`` on ``timestamp``. Time windows are half-open, ``since <= timestamp < until``, and compared
at Elasticsearch's millisecond precision.

Incremental reads use a :class:`Watermark`: the millisecond of the newest record already read plus the
ids of the records in that millisecond. The next run asks for ``timestamp >= watermark`` and skips those
ids, so a record that shares the watermark's exact timestamp but arrived later is read once and none is
read twice. (A record logged with a timestamp *older* than the watermark after the watermark was saved is
not seen by incremental runs; ``full_rebuild`` reads everything again.) The caller saves the watermark of
an :class:`ExtractionResult` only once the run that used its records has succeeded, so a failed run is
simply read again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers

from agent_flywheel.config import ExtractionConfig
from agent_flywheel.records import (
    LogRecord,
    Quarantined,
    QuarantineWriter,
    Reason,
    document_id,
    format_timestamp,
    parse_jsonl_line,
    parse_timestamp,
    record_digest,
    to_document,
    validate_record,
)

try:  # POSIX only; without it concurrent writers of one watermark file are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOG_INDEX_MAPPING",
    "LOG_INDEX_SETTINGS",
    "BulkReport",
    "ExtractionResult",
    "FileWatermarkStore",
    "ImportReport",
    "LogStoreError",
    "MemoryWatermarkStore",
    "Watermark",
    "WatermarkStore",
    "WorkloadStats",
    "bulk_index",
    "count_since",
    "ensure_index",
    "extract",
    "extraction_window",
    "import_jsonl",
    "list_workloads",
    "scan_records",
]

log = logging.getLogger(__name__)

#: The log index mapping. Unlike the blueprint's ``"dynamic": "strict"`` (which rejects any extra
#: top-level field a producer adds), unknown fields are mapped dynamically and kept. ``timestamp`` reads
#: ISO 8601 and epoch *seconds* (the blueprint's ``date`` read epoch seconds as milliseconds).
#: ``request``/``response`` are stored, not indexed: they are only ever read back whole.
#: ``date_detection`` is off so that a string field that once looked like a date does not later reject
#: documents where it does not.
LOG_INDEX_MAPPING: dict[str, Any] = {
    "dynamic": True,
    "date_detection": False,
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "request": {"type": "object", "enabled": False},
        "response": {"type": "object", "enabled": False},
    },
}
LOG_INDEX_SETTINGS: dict[str, Any] = {"index": {"mapping": {"total_fields": {"limit": 1000}}}}

_RANGE_FORMAT = "strict_date_optional_time"
_MAX_ERROR_SAMPLES = 10
ProgressCallback = Callable[[int, int], None]
T = TypeVar("T")


class LogStoreError(RuntimeError):
    """The log store cannot do what was asked (missing index, unreadable watermark file ...)."""


# --------------------------------------------------------------------------------------------------
# Index and writing
# --------------------------------------------------------------------------------------------------


def ensure_index(es: Elasticsearch, index: str) -> bool:
    """Create the log index with :data:`LOG_INDEX_MAPPING` if it does not exist; True when created.

    Writing into a missing index would let Elasticsearch guess the mapping (``timestamp`` as a number
    or a string), after which range queries on it silently return nothing.
    """
    if es.indices.exists(index=index):
        return False
    try:
        es.indices.create(index=index, mappings=LOG_INDEX_MAPPING, settings=LOG_INDEX_SETTINGS)
    except ApiError as exc:  # another writer created it in between
        if "resource_already_exists" in str(exc):
            return False
        raise
    return True


@dataclasses.dataclass
class BulkReport:
    """What a bulk write did: per-item outcomes, error counts by Elasticsearch error type, a few samples."""

    indexed: int = 0
    duplicates: int = 0  # already present (same content id): a re-import, not an error
    failed: int = 0
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    samples: list[str] = dataclasses.field(default_factory=list)

    def _failure(self, error_type: str, text: str) -> None:
        self.failed += 1
        self.errors[error_type] += 1
        if len(self.samples) < _MAX_ERROR_SAMPLES:
            self.samples.append(text)


def _error_of(item: dict[str, Any]) -> tuple[str, str]:
    error = item.get("error")
    if isinstance(error, dict):
        kind = str(error.get("type") or "unknown")
        return kind, f"{kind}: {str(error.get('reason') or '')[:300]}"
    return "unknown", f"status {item.get('status')}: {str(error)[:300]}"


def _bulk(
    es: Elasticsearch, index: str, items: Iterable[tuple[T, LogRecord]], chunk_size: int
) -> Iterator[tuple[T, dict[str, Any], str, tuple[str, str] | None]]:
    """Index records with content ids (``create``), yielding ``(tag, document, outcome, error)`` per record.

    Results are matched to records by ``_id`` because ``streaming_bulk`` yields retried (429) items late;
    the pending map holds at most the current chunk and its retries.
    """
    pending: dict[str, deque[tuple[T, dict[str, Any]]]] = defaultdict(deque)

    def actions() -> Iterator[dict[str, Any]]:
        for tag, record in items:
            document = to_document(record)
            doc_id = document_id(document)
            pending[doc_id].append((tag, document))
            yield {"_op_type": "create", "_index": index, "_id": doc_id, "_source": document}

    results = helpers.streaming_bulk(
        es, actions(), chunk_size=chunk_size, raise_on_error=False, max_retries=3, initial_backoff=1, max_backoff=30
    )
    for ok, result in results:
        ((_, item),) = result.items()
        doc_id = str(item.get("_id"))
        queue = pending.get(doc_id)
        if not queue:  # a server that does not echo ids: nothing to match, count it anyway
            log.warning("bulk result for unknown id %r", doc_id)
            continue
        tag, document = queue.popleft()
        if not queue:
            del pending[doc_id]
        if ok:
            yield tag, document, "indexed", None
        elif item.get("status") == 409:
            yield tag, document, "duplicate", None
        else:
            yield tag, document, "rejected", _error_of(item)


def bulk_index(es: Elasticsearch, index: str, records: Iterable[LogRecord], chunk_size: int = 500) -> BulkReport:
    """Index validated records through ``helpers.streaming_bulk``; a partial failure is counted, not raised.

    Each document's id is a hash of its content, so indexing the same records twice adds nothing
    (counted as ``duplicates``). Connection errors do raise: nothing is lost, the call can be repeated.
    """
    report = BulkReport()
    for position, _document, outcome, error in _bulk(es, index, enumerate(records), chunk_size):
        if outcome == "indexed":
            report.indexed += 1
        elif outcome == "duplicate":
            report.duplicates += 1
        elif error is not None:
            report._failure(error[0], f"record {position}: {error[1]}")
    return report


@dataclasses.dataclass
class ImportReport:
    """The outcome of importing one JSONL file: ``lines == indexed + duplicates + blank + quarantined``."""

    lines: int = 0
    indexed: int = 0
    duplicates: int = 0
    blank: int = 0
    quarantined: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total_quarantined(self) -> int:
        """All quarantined lines, whatever the reason."""
        return sum(self.quarantined.values())


def import_jsonl(
    es: Elasticsearch,
    index: str,
    path: str | Path,
    *,
    workload_id: str | None = None,
    client_id: str | None = None,
    quarantine: QuarantineWriter,
    chunk_size: int = 500,
    parse_function_arguments: bool = True,
    refresh: bool = True,
) -> ImportReport:
    """Stream a JSONL file of log records into the index (``flywheel logs import``); bounded memory.

    Each line is validated; bad lines go to ``quarantine`` with their reason and original text, and so
    do records the index refuses (``index_rejected``). ``workload_id``/``client_id`` override the
    records' own, as the blueprint's loader does for its data files. The index is created with our
    mapping if missing, and refreshed at the end so the records are searchable at once. Importing the
    same file again indexes nothing new (content ids).
    """
    path = Path(path)
    ensure_index(es, index)
    report = ImportReport()
    counts: Counter[str] = Counter()

    def good_records() -> Iterator[tuple[str, LogRecord]]:
        with path.open("rb") as lines:
            for line_no, line in enumerate(lines, start=1):
                report.lines += 1
                result = parse_jsonl_line(
                    line,
                    line_no,
                    path=str(path),
                    workload_id=workload_id,
                    client_id=client_id,
                    parse_function_arguments=parse_function_arguments,
                )
                if result is None:
                    report.blank += 1
                elif isinstance(result, Quarantined):
                    quarantine.write(result)
                    counts[str(result.reason)] += 1
                else:
                    yield f"{path}:{line_no}", result

    for source, document, outcome, error in _bulk(es, index, good_records(), chunk_size):
        if outcome == "indexed":
            report.indexed += 1
        elif outcome == "duplicate":
            report.duplicates += 1
        else:
            text = error[1] if error else "refused"
            quarantine.write(
                Quarantined(
                    reason=Reason.INDEX_REJECTED,
                    message=f"{source}: the log store refused the record: {text}",
                    source=source,
                    raw=document,
                )
            )
            counts[str(Reason.INDEX_REJECTED)] += 1
    if refresh:
        es.indices.refresh(index=index)
    report.quarantined = dict(counts)
    return report


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _floor_ms(value: datetime) -> datetime:
    utc = _utc(value)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def _es_time(value: datetime) -> str:
    """A bound as Elasticsearch compares it: UTC, millisecond precision (floored)."""
    return _floor_ms(value).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _query(workload_id: str, client_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [{"term": {"workload_id": workload_id}}, {"term": {"client_id": client_id}}]
    bounds: dict[str, Any] = {}
    if since is not None:
        bounds["gte"] = _es_time(since)
    if until is not None:
        bounds["lt"] = _es_time(until)
    if bounds:
        filters.append({"range": {"timestamp": {**bounds, "format": _RANGE_FORMAT}}})
    return {"bool": {"filter": filters}}


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
    query = _query(workload_id, client_id, since, until)
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


@dataclasses.dataclass(frozen=True)
class Watermark:
    """How far a workload's logs have been read: ``timestamp`` (floored to the millisecond) and the ids of
    the records already read in that millisecond.

    The next read asks for ``timestamp >= self.timestamp`` and skips ``ids``.
    """

    timestamp: datetime
    ids: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for a watermark store."""
        return {"timestamp": format_timestamp(self.timestamp), "ids": sorted(self.ids)}

    @classmethod
    def from_json(cls, data: Any) -> Watermark:
        """Read :meth:`to_json` back; raises ``ValueError`` on anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("ids", []), list):
            raise ValueError(f"not a watermark: {data!r:.200}")
        return cls(parse_timestamp(data.get("timestamp")), frozenset(str(i) for i in data.get("ids", [])))


RecordSink = Callable[[LogRecord, bytes], None]
"""Where :func:`extract` hands each valid, distinct record and its 32-byte dedupe digest."""


@dataclasses.dataclass
class ExtractionResult:
    """What :func:`extract` read.

    ``records`` are the valid, distinct (by :func:`~agent_flywheel.records.record_hash`) records, newest
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
    dedupe digest (:func:`~agent_flywheel.records.record_digest`, so a writer need not hash it again), and
    ``records`` of the result stays empty: memory then holds one page and the 32-byte digests that
    dedupe, however many records the window has (the flow writes them into the record cache with
    :meth:`~agent_flywheel.record_cache.RecordCache.replace_window`). An exception from the sink stops the
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
                bucket = _floor_ms(timestamp)
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


# --------------------------------------------------------------------------------------------------
# Watermarks
# --------------------------------------------------------------------------------------------------


class WatermarkStore(Protocol):
    """Where the last read position of each (workload, client) is kept between flywheel runs."""

    def get(self, workload_id: str, client_id: str) -> Watermark | None:
        """The saved watermark, or None before the first successful run."""
        ...

    def set(self, workload_id: str, client_id: str, watermark: Watermark) -> None:
        """Save the watermark (after the run that read up to it has succeeded)."""
        ...


class MemoryWatermarkStore:
    """A watermark store in a dict: for tests and one-off runs."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], Watermark] = {}

    def get(self, workload_id: str, client_id: str) -> Watermark | None:
        """The saved watermark, or None."""
        return self._marks.get((workload_id, client_id))

    def set(self, workload_id: str, client_id: str, watermark: Watermark) -> None:
        """Save the watermark."""
        self._marks[(workload_id, client_id)] = watermark


class FileWatermarkStore:
    """Watermarks in one JSON file, ``{"version": 1, "watermarks": {workload: {client: {...}}}}``.

    Writes are atomic (temporary file + ``os.replace``), so a crash leaves the old or the new file,
    never half of one; a lock file serialises concurrent flows updating different workloads. An
    unreadable file raises rather than reading as "no watermark", which would silently re-read everything.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"version": 1, "watermarks": {}}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise LogStoreError(f"{self.path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("watermarks"), dict):
            raise LogStoreError(f"{self.path}: not a watermark file (no 'watermarks' object)")
        return data

    def get(self, workload_id: str, client_id: str) -> Watermark | None:
        """The saved watermark, or None when this workload and client have none yet."""
        entry = self._load()["watermarks"].get(workload_id, {}).get(client_id)
        if entry is None:
            return None
        try:
            return Watermark.from_json(entry)
        except ValueError as exc:
            raise LogStoreError(f"{self.path}: watermark of {workload_id}/{client_id}: {exc}") from None

    def set(self, workload_id: str, client_id: str, watermark: Watermark) -> None:
        """Save the watermark, keeping every other workload's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            data = self._load()
            entry = {**watermark.to_json(), "updated_at": format_timestamp(datetime.now(UTC))}
            data["watermarks"].setdefault(workload_id, {})[client_id] = entry
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(data, handle, indent=1, sort_keys=True)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def extraction_window(
    config: ExtractionConfig, store: WatermarkStore | None, workload_id: str, client_id: str
) -> tuple[datetime | Watermark | None, datetime | None]:
    """``(since, until)`` for :func:`extract` from the config and the saved watermark.

    An explicit ``config.since`` wins; otherwise ``full_rebuild`` reads from the start; otherwise the
    saved watermark (None on the first run) continues where the last successful run stopped.
    """
    until = parse_timestamp(config.until) if config.until else None
    if config.since:
        return parse_timestamp(config.since), until
    if config.full_rebuild or store is None:
        return None, until
    return store.get(workload_id, client_id), until


# --------------------------------------------------------------------------------------------------
# Traffic (for the watcher)
# --------------------------------------------------------------------------------------------------


def count_since(
    es: Elasticsearch,
    index: str,
    workload_id: str,
    client_id: str,
    since: datetime | Watermark | None,
    *,
    until: datetime | None = None,
) -> int:
    """How many records one workload and client logged since a time or watermark (0 if no index yet).

    The traffic watcher asks this every few minutes to decide whether enough new data has come in. With
    a watermark, the records it lists are subtracted (exact unless some were deleted since).
    """
    start = since.timestamp if isinstance(since, Watermark) else since
    try:
        count = int(es.count(index=index, query=_query(workload_id, client_id, start, until))["count"])
    except NotFoundError:
        return 0
    if isinstance(since, Watermark):
        count = max(0, count - len(since.ids))
    return count


@dataclasses.dataclass(frozen=True)
class WorkloadStats:
    """One (workload, client) pair in the log index: how many records and the newest timestamp."""

    workload_id: str
    client_id: str
    count: int
    latest: datetime | None


def _agg_time(bucket: dict[str, Any]) -> datetime | None:
    text = bucket.get("value_as_string")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return parse_timestamp(text)
    value = bucket.get("value")
    if isinstance(value, int | float):
        with contextlib.suppress(ValueError, OverflowError, OSError):
            return datetime.fromtimestamp(value / 1000, UTC)
    return None


def list_workloads(
    es: Elasticsearch, index: str, *, since: datetime | None = None, max_buckets: int = 1000
) -> list[WorkloadStats]:
    """Every (workload, client) with its record count and newest timestamp, in one terms aggregation.

    The traffic watcher uses it to discover workloads it was not told about. An index that does not
    exist yet has none. More than ``max_buckets`` workloads (or clients per workload) are logged as a
    warning, not silently cut.
    """
    aggs = {
        "workloads": {
            "terms": {"field": "workload_id", "size": max_buckets},
            "aggs": {
                "clients": {
                    "terms": {"field": "client_id", "size": max_buckets},
                    "aggs": {"latest": {"max": {"field": "timestamp"}}},
                }
            },
        }
    }
    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        query = {"range": {"timestamp": {"gte": _es_time(since), "format": _RANGE_FORMAT}}}
    try:
        response = es.search(index=index, size=0, query=query, aggs=aggs)
    except NotFoundError:
        return []
    workloads = response["aggregations"]["workloads"]
    if workloads.get("sum_other_doc_count"):
        log.warning("more than %d workloads in %s; the rest are not listed", max_buckets, index)
    stats = []
    for workload in workloads.get("buckets", []):
        clients = workload["clients"]
        if clients.get("sum_other_doc_count"):
            log.warning("workload %s has more than %d clients; the rest are not listed", workload["key"], max_buckets)
        for client in clients.get("buckets", []):
            stats.append(
                WorkloadStats(
                    workload_id=str(workload["key"]),
                    client_id=str(client["key"]),
                    count=int(client["doc_count"]),
                    latest=_agg_time(client.get("latest") or {}),
                )
            )
    return sorted(stats, key=lambda s: (s.workload_id, s.client_id))
