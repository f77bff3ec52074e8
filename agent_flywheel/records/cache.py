"""The records a workload has accumulated across incremental runs, kept locally as JSONL segments.

Extraction is incremental (each run reads only what is new since the last watermark), but a dataset
should be built from everything collected so far. So each run appends its new records as one segment
under ``.flywheel/records/<workload>/<client>/`` and the dataset build reads all segments back; a full
rebuild clears them and reads the log store from the start.

A segment holds one record per line as :func:`cache_line` writes it: the document of the validated
record with the request's tool-call arguments as JSON strings, the form every dataset line needs, so no
build re-encodes them. Beside each segment lies its key file (:mod:`agent_flywheel.records.keys`): the
hash, label and the other columns the build needs, computed once as the records are written, so a build
does not recompute them for every record ever collected.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypeVar

from agent_flywheel.jsonlines import IO_BUFFER_BYTES, dump_line, load_line
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.keys import (
    KeyColumns,
    SegmentKeys,
    iter_lines,
    key_file,
    key_file_rows,
    read_key_file,
    record_keys,
    scan_lines,
    write_key_file,
)
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.tool_arguments import request_with_string_arguments

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
T = TypeVar("T")


def cache_line(document: dict[str, Any]) -> bytes:
    """The line a segment holds for a document: compact JSON, the request's tool-call arguments as the
    strings every dataset line needs (:func:`~agent_flywheel.records.tool_arguments.request_with_string_arguments`)."""
    return dump_line(request_with_string_arguments(document))


class SegmentWriter:
    """Writes the documents of one segment and collects their keys (see :meth:`RecordCache.writer`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.columns = KeyColumns()
        self._handle: IO[bytes] = open(path, "wb", buffering=IO_BUFFER_BYTES)  # noqa: SIM115 (closed by RecordCache.writer)
        self._offset = 0

    def write(self, document: dict[str, Any], digest: bytes | None = None) -> None:
        """Append one document (a JSON-able record, as :func:`~agent_flywheel.records.documents.to_document` gives).

        ``digest``: its conversation hash when the caller has it already (extraction dedupes on it).
        The line is :func:`cache_line`.
        """
        line = cache_line(document)
        self._handle.write(line)
        self.columns.add(record_keys(document, digest), self._offset)
        self._offset += len(line)
        self.count += 1

    def close(self) -> None:
        self._handle.close()


def _directory_name(text: str) -> str:
    """``text`` when it is a safe directory name, else its safe form plus a hash, so that ``a/b`` and
    ``a_b`` (or NAT's ``<workflow>`` and ``(workflow)``) never share a directory."""
    safe = _SAFE.sub("_", text)
    if safe == text and text not in (".", ".."):
        return text
    return f"{safe}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


#: The file beside the segments that records what each read saw and filtered (:meth:`RecordCache.read_summary`).
READS_FILE = "reads.json"
#: How records that name no model are counted among the models seen.
NO_MODEL = "(no model named)"


@dataclass
class ReadSummary:
    """What the reads into a record cache saw: hits validated, conversations dropped as duplicates, records
    quarantined by reason, valid distinct records by answering model, and those the model filter skipped."""

    windows: int = 0
    scanned: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    skipped_models: Counter[str] = field(default_factory=Counter)


def cache_directory(workload_id: str, client_id: str) -> PurePosixPath:
    """The cache's directory of one (workload, client) relative to the root of all record caches (the same
    path in a local directory and in the result storage)."""
    return PurePosixPath(_directory_name(workload_id), _directory_name(client_id))


class RecordCache:
    """Append-only segments of validated records for one (workload, client)."""

    def __init__(self, root: Path, workload_id: str, client_id: str) -> None:
        self.dir = root.joinpath(*cache_directory(workload_id, client_id).parts)

    def clear(self) -> None:
        """Forget every segment (a full rebuild)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    @contextmanager
    def writer(self, label: str) -> Iterator[SegmentWriter]:
        """A new segment to write documents into, one at a time (memory stays flat however many).

        On leaving, the segment's key file is written; an empty segment is removed. If the block raises,
        the partial segment is removed too, so a failed run leaves the cache as it found it.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        writer = SegmentWriter(self.dir / f"{stamp}-{_SAFE.sub('_', label)}.jsonl")
        try:
            yield writer
        except BaseException:
            writer.close()
            writer.path.unlink(missing_ok=True)
            raise
        writer.close()
        if writer.count == 0:
            writer.path.unlink()
        else:
            write_key_file(writer.path, writer.columns.finish())

    def append(self, documents: Iterable[dict[str, Any]], label: str) -> tuple[Path | None, int]:
        """Write one segment; returns its path (None when there was nothing to write) and the count."""
        with self.writer(label) as writer:
            for document in documents:
                writer.write(document)
        return (writer.path if writer.count else None), writer.count

    def replace_window(
        self,
        label: str,
        read: Callable[[Callable[[LogRecord, bytes], None]], T],
        keep: Callable[[LogRecord], bool] | None = None,
    ) -> tuple[T, int]:
        """Write what ``read(sink)`` (an :func:`~agent_flywheel.logstore.reader.extract` call) passes to its sink into a
        new segment labelled ``label``, record by record; returns what ``read`` returned and how many were written.

        Memory stays flat however many records there are. ``keep`` decides which records are written (all
        when None). A segment of the same label that an earlier run left (one that died before committing
        its watermark read the same window) is replaced, not added to, and only once the new one is
        complete: if the read fails, the partial segment is deleted and the earlier one stays.
        """
        earlier = [segment for segment in self.segments() if segment.stem.endswith(f"-{_SAFE.sub('_', label)}")]
        offered: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        with self.writer(label) as writer:

            def sink(record: LogRecord, digest: bytes) -> None:
                model = str(record.request.model) if record.request.model is not None else NO_MODEL
                offered[model] += 1
                if keep is None or keep(record):
                    writer.write(to_document(record), digest)
                else:
                    skipped[model] += 1

            result = read(sink)
        for segment in earlier:
            self.remove(segment)
        self._save_read(label, result, offered, skipped, writer.count)
        return result, writer.count

    def _save_read(self, label: str, result: Any, offered: Counter[str], skipped: Counter[str], written: int) -> None:
        """Remember what one window's read saw and filtered, for the message when too few records remain."""
        entry = {
            "read_at": datetime.now(UTC).isoformat(),
            "scanned": int(getattr(result, "scanned", 0) or 0),
            "duplicates": int(getattr(result, "duplicates", 0) or 0),
            "quarantined": dict(getattr(result, "quarantined", {}) or {}),
            "models": dict(offered),
            "skipped_models": dict(skipped),
            "written": written,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        reads = self._load_reads()
        reads[label] = entry
        tmp = self.dir / f".{READS_FILE}.tmp"
        tmp.write_text(json.dumps(reads, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.dir / READS_FILE)

    def _load_reads(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / READS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def read_summary(self) -> ReadSummary:
        """What every read into this cache saw and filtered, summed over windows (since the last full rebuild)."""
        summary = ReadSummary()
        for entry in self._load_reads().values():
            if not isinstance(entry, dict):
                continue
            summary.windows += 1
            summary.scanned += int(entry.get("scanned", 0))
            summary.duplicates += int(entry.get("duplicates", 0))
            summary.quarantined.update({str(k): int(v) for k, v in (entry.get("quarantined") or {}).items()})
            summary.models.update({str(k): int(v) for k, v in (entry.get("models") or {}).items()})
            summary.skipped_models.update({str(k): int(v) for k, v in (entry.get("skipped_models") or {}).items()})
        return summary

    def remove(self, segment: Path) -> None:
        """Remove one segment and its key file."""
        segment.unlink(missing_ok=True)
        key_file(segment).unlink(missing_ok=True)

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl")) if self.dir.exists() else []

    def iter_documents(self) -> Iterator[dict[str, Any]]:
        """Every cached record, oldest segment first, one at a time (bounded memory)."""
        for segment in self.segments():
            with segment.open("rb", buffering=IO_BUFFER_BYTES) as handle:
                for line in handle:
                    if line.strip():
                        yield load_line(line)

    def keys(self, segment: Path) -> SegmentKeys:
        """The keys of a segment's records: from its key file, or computed from its lines when the file is
        missing or stale (written by an older version, or the segment changed); those are then saved."""
        saved = read_key_file(segment)
        if saved is not None:
            return saved
        with segment.open("rb", buffering=IO_BUFFER_BYTES) as handle:
            scanned = scan_lines(iter_lines(handle))
        try:
            write_key_file(segment, scanned)
        except OSError:
            pass  # a read-only cache still builds; it is scanned again next time
        return scanned

    def count(self) -> int:
        """How many records the cache holds (from the key files' headers; a segment without one is counted)."""
        total = 0
        for segment in self.segments():
            rows = key_file_rows(segment)
            if rows is None:
                with segment.open("rb", buffering=IO_BUFFER_BYTES) as handle:
                    rows = sum(1 for _ in iter_lines(handle))
            total += rows
        return total
