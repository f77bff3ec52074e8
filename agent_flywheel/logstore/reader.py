"""Reading a workload's records: paged scans and extraction, the flywheel's first step.

Reading is **point-in-time + search_after** (not scroll): a consistent snapshot, a page in memory at a
time (or a few per slice, when slices of the snapshot are read in parallel and merged back into one
order), ``term`` filters on the keyword ids (the blueprint's ``match`` would also hit analysed look-alikes)
and a ``range`` on ``timestamp``, all built by the index's :class:`~agent_flywheel.logstore.shape.IndexShape`
(read from its mapping on first contact), so indices that NeMo Agent Toolkit's exporter or the blueprint
created are read as correctly as ours.

Incremental reads continue after a :class:`~agent_flywheel.logstore.watermarks.Watermark`. The caller
saves the watermark of an :class:`ExtractionResult` only once the run that used its records has
succeeded, so a failed run is simply read again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from datetime import datetime, timedelta
from typing import Any

from agent_flywheel.config import DEFAULT_LATE_ARRIVAL_MINUTES
from agent_flywheel.logstore.client import LogStoreClient
from agent_flywheel.logstore.shape import IndexShape, TimeUnit, inspect_index
from agent_flywheel.logstore.watermarks import Watermark, read_bounds
from agent_flywheel.records.documents import record_digest
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import validate_record

log = logging.getLogger(__name__)


ProgressCallback = Callable[[int, int], None]

#: The most record ids a watermark keeps for its late-arrival window; beyond that the window is shortened.
MAX_WATERMARK_IDS = 50_000


def _position(sort: Any, unit: TimeUnit) -> int | None:
    """A hit's timestamp position from its sort values; None for a record without a usable timestamp (one
    missing sorts last with a sort value of ``Long.MIN_VALUE`` or ``MAX_VALUE``)."""
    if not isinstance(sort, list) or not sort:
        return None
    value = sort[0]
    if isinstance(value, bool) or not isinstance(value, int) or not unit.holds_time(value):
        return None
    return value


def _pages(
    client: LogStoreClient,
    pit: _Pit,
    body: dict[str, Any],
    page_size: int,
    part: dict[str, int] | None,
) -> Iterator[list[dict[str, Any]]]:
    """The pages of one search (one slice of it when ``part`` is a ``slice``) under the point in time."""
    search_after: list[Any] | None = None
    while True:
        page_body = {**body, "size": page_size}
        if search_after is not None:
            page_body["search_after"] = search_after
        if part is not None:
            page_body["slice"] = part
        response = client.search_pit(pit.id, pit.keep_alive, page_body)
        pit.id = response.get("pit_id") or pit.id
        hits = response["hits"]["hits"]
        if not hits:
            return
        yield hits
        if len(hits) < page_size:
            return
        search_after = hits[-1]["sort"]


@dataclasses.dataclass
class _Pit:
    """An open point in time: its latest id (a search may return a new one) and how long it is kept."""

    id: str
    keep_alive: str


_END = object()


class _Prefetch:
    """Reads one slice's pages in a thread, at most ``depth`` pages ahead of whoever consumes them."""

    def __init__(self, pages: Iterator[list[dict[str, Any]]], depth: int = 2) -> None:
        self._pages = pages
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logstore-slice", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for page in self._pages:
                if not self._put(page):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop reading ahead and wait for the thread."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._thread.join(timeout=60)


def _hits(
    client: LogStoreClient,
    index: str,
    shape: IndexShape,
    query: dict[str, Any],
    *,
    page_size: int,
    keep_alive: str,
    descending: bool,
    on_page: ProgressCallback | None,
    slices: int = 1,
) -> Generator[tuple[str, Any, int | None], None, None]:
    """Every ``(doc_id, _source, position)`` matching ``query``, in timestamp order, page by page under a PIT.

    With ``slices`` > 1 the point in time is read as that many slices in parallel threads (``slice: {id, max}``,
    each a page or two ahead), merged back into the one order by their sort values: the tiebreaker makes
    those unique, so the hits come in exactly the order one reader would give, each once.
    """
    if page_size < 1:
        raise ValueError("page_size must be >= 1")
    if slices < 1:
        raise ValueError("slices must be >= 1")
    body: dict[str, Any] = {
        "query": query,
        "sort": shape.sort("desc" if descending else "asc", client.tiebreaker()),
        "track_total_hits": False,
    }
    pit = _Pit(client.open_pit(index, keep_alive), keep_alive)  # IndexMissing names the index
    prefetched: list[_Prefetch] = []
    pages = docs = 0
    try:
        if slices == 1:
            streams: list[Iterator[list[dict[str, Any]]]] = [_pages(client, pit, body, page_size, None)]
        else:
            prefetched = [
                _Prefetch(_pages(client, pit, body, page_size, {"id": part, "max": slices})) for part in range(slices)
            ]
            streams = [iter(prefetch) for prefetch in prefetched]

        def counted(stream: Iterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
            nonlocal pages, docs
            for page in stream:
                pages += 1
                docs += len(page)
                if on_page is not None:
                    on_page(pages, docs)
                yield from page

        ordered: Iterator[dict[str, Any]] = (
            counted(streams[0])
            if len(streams) == 1
            else heapq.merge(*(counted(stream) for stream in streams), key=_sort_key, reverse=descending)
        )
        for hit in ordered:
            yield str(hit["_id"]), hit.get("_source"), _position(hit.get("sort"), shape.unit)
    finally:
        for prefetch in prefetched:
            prefetch.close()
        try:
            client.close_pit(pit.id)
        except Exception as exc:  # it expires by itself after keep_alive
            log.warning("could not close point in time on %s: %s", index, exc)


def _sort_key(hit: dict[str, Any]) -> tuple[Any, ...]:
    """A hit's place in the one order: its sort values (timestamp position, tiebreaker)."""
    return tuple(hit["sort"])


def scan_records(
    client: LogStoreClient,
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
    shape: IndexShape | None = None,
    slices: int = 1,
) -> Generator[tuple[str, Any], None, None]:
    """Every ``(es_id, _source)`` of one workload and client with ``since <= timestamp < until``.

    Point-in-time + ``search_after``, sorted by timestamp with the ``_shard_doc`` tiebreaker: a consistent
    snapshot while producers keep writing, no page read twice or skipped, one page in memory. The PIT is
    closed when the generator finishes or is closed (use ``contextlib.closing`` when stopping early).
    ``on_page(pages, docs)`` reports progress after each page. ``shape`` is read from the index when not given.
    ``slices`` > 1 reads the point in time as that many parallel slices, merged back into the same order.
    """
    shape = shape if shape is not None else inspect_index(client, index)
    if not shape.readable:
        return
    query = shape.window_query(
        workload_id,
        client_id,
        shape.position(since) if since is not None else None,
        shape.position(until) if until is not None else None,
    )
    hits = _hits(
        client,
        index,
        shape,
        query,
        page_size=page_size,
        keep_alive=keep_alive,
        descending=descending,
        on_page=on_page,
        slices=slices,
    )
    with contextlib.closing(hits):
        for doc_id, source, _ in hits:
            yield doc_id, source


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


def extract(
    client: LogStoreClient,
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
    shape: IndexShape | None = None,
    late_arrival: timedelta = timedelta(minutes=DEFAULT_LATE_ARRIVAL_MINUTES),
    slices: int = 1,
) -> ExtractionResult:
    """Read, validate and dedupe one workload's records in a time window: the flywheel's first step.

    ``since`` is a datetime (inclusive), a :class:`Watermark` (continue after it) or None (from the start);
    ``until`` is exclusive. Reading goes newest first; invalid records are quarantined (records of
    another workload or client as ``wrong_workload``), and of records with the same conversation only the
    newest is kept, as the blueprint's dedupe does.

    ``shape`` says how the index maps the record fields (:func:`~agent_flywheel.logstore.shape.inspect_index`
    reads it when not given; an index it cannot read correctly raises
    :class:`~agent_flywheel.logstore.shape.IndexShapeError` before anything is read). ``late_arrival`` is the
    window the next incremental read looks back over for records that reached the index late (see
    :mod:`~agent_flywheel.logstore.watermarks`); the returned watermark lists the records read in it.

    ``sink`` receives each valid, distinct record as soon as it is validated, newest first, with its
    dedupe digest (:func:`~agent_flywheel.records.documents.record_digest`, so a writer need not hash it again), and
    ``records`` of the result stays empty: memory then holds one page and the 32-byte digests that
    dedupe, however many records the window has (the flow writes them into the record cache with
    :meth:`~agent_flywheel.records.cache.RecordCache.replace_window`). An exception from the sink stops the
    read and propagates. Without a sink the records are collected in ``records``.

    ``limit=None`` (the flow's default) reads the whole window, page by page (without a sink, memory grows
    with it). A ``limit`` bounds the work: reading stops once ``limit`` distinct valid records are read, so
    the result is the *newest* ``limit`` distinct conversations in the window (the blueprint's only read: the
    newest ``2 * limit`` raw records). The unread older records are counted in ``skipped_older`` and are not
    read by the next incremental run either.

    ``slices`` > 1 reads the point in time as that many slices in parallel (see :func:`_hits`); the hits,
    and so the result, are exactly those of one reader.

    The hits' sources are taken to be what the client's JSON parser returned (trees of plain values),
    which lets validation check them faster (``validate_record(parsed=True)``); anything a JSON parser
    can return is still quarantined as before.
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be >= 1 or None")
    if late_arrival < timedelta(0):
        raise ValueError("late_arrival must not be negative")
    shape = shape if shape is not None else inspect_index(client, index)
    previous = since if isinstance(since, Watermark) else None
    records: list[LogRecord] = []
    digests: set[bytes] = set()
    counts: Counter[str] = Counter()
    scanned = valid = duplicates = already_read = 0
    max_timestamp: datetime | None = None
    pages = 0
    if not shape.readable:  # no record has every field yet: nothing can match
        return ExtractionResult(records, 0, 0, 0, {}, 0, 0, None, previous)
    lower, upper = read_bounds(shape, since, until)
    seen_ids = previous.ids if previous else frozenset()
    window = shape.span(late_arrival)
    newest: int | None = None  # the newest position read (reading goes newest first)
    oldest: int | None = None  # the last position read
    recent: list[tuple[int, str]] = []  # (position, id) of every hit within ``window`` of the newest

    def progress(page_count: int, docs: int) -> None:
        nonlocal pages
        pages = page_count
        if on_page is not None:
            on_page(page_count, docs)

    hits = _hits(
        client,
        index,
        shape,
        shape.window_query(workload_id, client_id, lower, upper),
        page_size=page_size if limit is None else min(page_size, limit + 1),
        keep_alive=keep_alive,
        descending=True,
        on_page=progress,
        slices=slices,
    )
    stopped = False
    with contextlib.closing(hits):
        for doc_id, source, position in hits:
            if position is not None:
                newest = position if newest is None else newest
                oldest = position
                if position >= newest - window:
                    recent.append((position, doc_id))
            if doc_id in seen_ids:
                already_read += 1
                continue
            scanned += 1
            if shape.millis_numbers and isinstance(source, dict) and "timestamp" in source:
                source = {**source, "timestamp": shape.record_timestamp(source["timestamp"])}
            result = validate_record(
                source,
                source=f"es:{index}/{doc_id}",
                parse_function_arguments=parse_function_arguments,
                expected_workload_id=workload_id,
                expected_client_id=client_id,
                parsed=True,
            )
            if isinstance(result, Quarantined):
                quarantine.write(result)
                counts[str(result.reason)] += 1
                continue
            max_timestamp = result.timestamp if max_timestamp is None else max(max_timestamp, result.timestamp)
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
    if stopped and newest is not None:
        # records up to the newest one read (newer ones may have arrived since the PIT was opened)
        query = shape.window_query(workload_id, client_id, lower, newest, upper_inclusive=True)
        in_window = client.count(index, query)
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
        watermark=next_watermark(
            shape,
            previous,
            newest,
            recent,
            lower=lower,
            window=window,
            stopped_at=oldest if skipped_older > 0 else None,
        ),
        pages=pages,
    )


def next_watermark(
    shape: IndexShape,
    previous: Watermark | None,
    newest: int | None,
    recent: list[tuple[int, str]],
    *,
    lower: int | None,
    window: int,
    stopped_at: int | None = None,
) -> Watermark | None:
    """Where the next incremental read starts, given what this one read.

    ``newest`` is the newest position read, ``recent`` the ``(position, id)`` of every record read within
    ``window`` of it (already-read ones included), ``lower`` where this read started. The next read starts
    ``window`` before the newest record (never before ``lower``: older records were read by earlier runs) and
    skips the ids listed. When older records were deliberately left unread (``limit``; ``stopped_at`` is the
    last position read), the next read starts after ``stopped_at``: the records there may be only partly read.
    """
    if newest is None:
        return previous
    behind = previous is not None and previous.unit is shape.unit and newest < (previous.position or 0)
    if behind:  # records were deleted since the last read: never go back
        return previous
    start = newest - window
    if lower is not None:
        start = max(start, lower)
    if stopped_at is not None:
        start = max(start, stopped_at + 1)
    kept = sorted(((position, doc_id) for position, doc_id in recent if position >= start), reverse=True)
    if len(kept) > MAX_WATERMARK_IDS:
        shortened = kept[MAX_WATERMARK_IDS][0] + 1
        log.warning(
            "more than %d records in the late-arrival window of %s; the next read looks back to %s only",
            MAX_WATERMARK_IDS,
            shape.index,
            shape.time_at(shortened).isoformat(),
        )
        start = shortened
        kept = [(position, doc_id) for position, doc_id in kept if position >= start]
    return Watermark.at(shape.unit, newest, frozenset(doc_id for _, doc_id in kept), start)
