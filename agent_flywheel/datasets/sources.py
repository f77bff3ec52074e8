"""Where the build reads records again by position (0, 1, ... in input order) without holding them all."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from agent_flywheel.jsonlines import IO_BUFFER_BYTES, dump_line, load_line
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.schema import LogRecord


def as_mapping(record: Any) -> Mapping[str, Any]:
    """A plain mapping for a dict, a :class:`~agent_flywheel.records.schema.LogRecord` (its indexed document:
    canonical timestamp and arguments, the producer's extra keys) or another pydantic model."""
    if isinstance(record, Mapping):
        return record
    if isinstance(record, LogRecord):
        return to_document(record)
    dump = getattr(record, "model_dump", None)
    if callable(dump):
        result = dump(mode="json", exclude_unset=True)
        if isinstance(result, Mapping):
            return result
    raise TypeError(f"expected a mapping or a pydantic model, got {type(record).__name__}")


class RecordSource:
    """Where pass 1 left the usable records, fetched again by position (0, 1, ... in input order)."""

    def add(self, input_index: int, record: Mapping[str, Any]) -> None:
        """Pass 1 found the record at ``input_index`` usable: it gets the next position."""

    def seal(self) -> None:
        """Pass 1 is over."""

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """``(position, record)`` for the given positions, in ascending order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a spool file)."""


class SequenceSource(RecordSource):
    """The caller's sequence, read again by index."""

    def __init__(self, sequence: Sequence[Any]) -> None:
        self._sequence = sequence
        self._indexes: array[int] = array("q")

    def add(self, input_index: int, record: Mapping[str, Any]) -> None:
        self._indexes.append(input_index)

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        for p in sorted(int(p) for p in positions):
            yield p, as_mapping(self._sequence[self._indexes[p]])


class SpoolSource(RecordSource):
    """A one-shot iterator's usable records, written to a spool file in pass 1 and read back by offset."""

    def __init__(self, spool: Path) -> None:
        self._spool = spool
        self._offsets: array[int] = array("q")
        self._writer: IO[bytes] | None = open(spool, "wb")  # noqa: SIM115 (closed by seal or close)
        self._offset = 0

    def add(self, input_index: int, record: Mapping[str, Any]) -> None:
        assert self._writer is not None
        line = dump_line(record)
        self._writer.write(line)
        self._offsets.append(self._offset)
        self._offset += len(line)

    def seal(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        with open(self._spool, "rb") as handle:
            for p in sorted(int(p) for p in positions):
                handle.seek(self._offsets[p])
                yield p, load_line(handle.readline())

    def close(self) -> None:
        self.seal()
        self._spool.unlink(missing_ok=True)


class CacheSource(RecordSource):
    """Record-cache segments, read again by (segment, byte offset) as the key files give them."""

    def __init__(self, segments: Sequence[Path], segment_ids: np.ndarray, offsets: np.ndarray) -> None:
        self._segments = segments
        self._segment_ids = segment_ids
        self._offsets = offsets

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        ordered = np.unique(np.fromiter((int(p) for p in positions), dtype=np.int64))
        bounds = np.searchsorted(self._segment_ids[ordered], np.arange(len(self._segments) + 1))
        for segment_id, path in enumerate(self._segments):
            wanted = ordered[bounds[segment_id] : bounds[segment_id + 1]]
            if wanted.size:
                yield from self._fetch_segment(path, wanted)

    def _fetch_segment(self, path: Path, wanted: np.ndarray) -> Iterator[tuple[int, Mapping[str, Any]]]:
        offsets = self._offsets[wanted].tolist()
        with open(path, "rb", buffering=IO_BUFFER_BYTES) as handle:
            if len(offsets) * _SEEK_SHARE < path.stat().st_size // _TYPICAL_LINE_BYTES:  # a few: seek to each
                for position, offset in zip(wanted.tolist(), offsets, strict=True):
                    handle.seek(offset)
                    yield position, load_line(handle.readline())
                return
            # most of the segment: read it in order, which is far cheaper than a seek per line
            targets = iter(zip(wanted.tolist(), offsets, strict=True))
            position, target = next(targets)
            offset = 0
            for line in handle:
                if offset == target:
                    yield position, load_line(line)
                    following = next(targets, None)
                    if following is None:
                        return
                    position, target = following
                offset += len(line)


# A fetch of fewer than one line in _SEEK_SHARE (estimated from the file size) seeks instead of reading on.
_SEEK_SHARE = 16
_TYPICAL_LINE_BYTES = 4096
