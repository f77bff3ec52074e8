"""Writing log records into the index: bulk indexing with content ids, and importing a JSONL file."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from agent_flywheel.logstore.client import LogStoreClient
from agent_flywheel.logstore.index import ensure_index
from agent_flywheel.logstore.shape import IndexMissing, IndexShape, inspect_index
from agent_flywheel.records.documents import document_id, to_document
from agent_flywheel.records.problems import Reason
from agent_flywheel.records.quarantine import Quarantined, QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.validation import parse_jsonl_line

log = logging.getLogger(__name__)


_MAX_ERROR_SAMPLES = 10


T = TypeVar("T")


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


def _target_shape(client: LogStoreClient, index: str) -> IndexShape:
    """The shape of the index written to: its records' timestamps are written in the form it holds.

    An index that does not exist yet is created by Elasticsearch from the first documents, which map an
    ISO 8601 timestamp as a date: our form.
    """
    try:
        return inspect_index(client, index)
    except IndexMissing:
        return IndexShape.own(index)


def _bulk(
    client: LogStoreClient, index: str, items: Iterable[tuple[T, LogRecord]], chunk_size: int
) -> Iterator[tuple[T, dict[str, Any], str, tuple[str, str] | None]]:
    """Index records with content ids (``create``), yielding ``(tag, document, outcome, error)`` per record.

    Each record's timestamp is written in the form the index holds (ISO 8601 in ours; epoch seconds in a
    NeMo Agent Toolkit index or in a blueprint index of epoch seconds), so that one index never holds two
    forms. Results are matched to records by ``_id`` because a bulk write yields retried (429) items
    late; the pending map holds at most the current chunk and its retries.
    """
    pending: dict[str, deque[tuple[T, dict[str, Any]]]] = defaultdict(deque)
    shape = _target_shape(client, index)

    def actions() -> Iterator[dict[str, Any]]:
        for tag, record in items:
            document = to_document(record)
            document["timestamp"] = shape.document_timestamp(record.timestamp)
            doc_id = document_id(document, without_timestamp=record.timestamp_assigned)
            pending[doc_id].append((tag, document))
            yield {"_op_type": "create", "_index": index, "_id": doc_id, "_source": document}

    for ok, result in client.bulk(actions(), chunk_size):
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


def bulk_index(client: LogStoreClient, index: str, records: Iterable[LogRecord], chunk_size: int = 500) -> BulkReport:
    """Index validated records in bulk (``create``, chunked, ``429`` retried); a partial failure is counted, not raised.

    Each document's id is a hash of its content, so indexing the same records twice adds nothing
    (counted as ``duplicates``). Connection errors do raise: nothing is lost, the call can be repeated.
    """
    report = BulkReport()
    for position, _document, outcome, error in _bulk(client, index, enumerate(records), chunk_size):
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
    client: LogStoreClient,
    index: str,
    path: str | Path,
    *,
    workload_id: str | None = None,
    client_id: str | None = None,
    quarantine: QuarantineWriter,
    chunk_size: int = 500,
    parse_function_arguments: bool = True,
    refresh: bool = True,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ImportReport:
    """Stream a JSONL file of log records into the index (``flywheel logs import``); bounded memory.

    Each line is validated; bad lines go to ``quarantine`` with their reason and original text, and so
    do records the index refuses (``index_rejected``). ``workload_id``/``client_id`` override the
    records' own, as the blueprint's loader does for its data files. The index is created with our
    mapping if missing (an existing index keeps its own: timestamps are written in the form it holds, and
    an index the flywheel cannot read is refused before anything is written), and refreshed at the end so
    the records are searchable at once. Importing the same file again indexes nothing new (content ids).

    Lines may also be in the blueprint's messages format (``{"messages": [...], "tools": [...]}``), which
    become log records, and records may lack a ``timestamp``: such a record gets the time its line was read
    (``clock``), as the blueprint's loader stamps its conversions, so it lands after every record already
    read by a flywheel run and the next incremental run picks it up exactly once. Its content id leaves
    that time out, so re-importing the file still adds nothing.
    """
    path = Path(path)
    ensure_index(client, index)
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
                    imported_at=clock(),
                )
                if result is None:
                    report.blank += 1
                elif isinstance(result, Quarantined):
                    quarantine.write(result)
                    counts[str(result.reason)] += 1
                else:
                    yield f"{path}:{line_no}", result

    for source, document, outcome, error in _bulk(client, index, good_records(), chunk_size):
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
        client.refresh(index)
    report.quarantined = dict(counts)
    return report
