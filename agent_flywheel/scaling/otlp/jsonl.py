"""OTLP JSON lines files: one ``ExportTraceServiceRequest`` in the OTLP/JSON encoding per line.

It is what ``flywheel otlp serve --out FILE`` writes and what an OpenTelemetry Collector's ``file`` exporter
(``format: json``) writes, so a run can read spans from either while they are being written:

- :class:`JsonlSink` appends each received document as one line and flushes it, in a single write, so a reader
  tailing the file never sees half a document unless it reads mid-write;
- :class:`FileTail` reads what was appended since it started, complete lines only (a partial last line waits
  for the next read), and starts over when the file is truncated or replaced (log rotation).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from agent_flywheel.scaling.otlp.store import scopes_of
from agent_flywheel.scaling.profiling.spans import Span


class JsonlSink:
    """Appends every document a receiver takes to ``path`` as one OTLP JSON line (flushed per document).

    Keeps nothing in memory, so it can run as a long-lived service; counts what it wrote and refused.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: BinaryIO | None = self.path.open("ab")
        self._lock = threading.Lock()
        self.received = 0
        self.dropped = 0
        self.rejected = 0
        self.spans = 0

    def add(self, document: Mapping[str, Any], spans: list[Span] | None = None, origin: str = "") -> int:
        """Append one document as a line; returns how many spans it holds."""
        line = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        count = sum(len(scope.get("spans") or []) for scope in scopes_of(document))
        with self._lock:
            if self._handle is None:
                self.dropped += 1
                return count
            self._handle.write(line)
            self._handle.flush()
            self.received += 1
            self.spans += count
        return count

    def reject(self) -> None:
        """Count one request refused as a whole."""
        with self._lock:
            self.rejected += 1

    def close(self) -> None:
        """Flush and close the file; documents arriving later are counted as dropped."""
        with self._lock:
            if self._handle is not None:
                self._handle.flush()
                os.fsync(self._handle.fileno())
                self._handle.close()
                self._handle = None


class FileTail:
    """The OTLP documents appended to a JSON lines file after this object was made.

    ``from_start`` reads the file from its first byte instead. A missing file is not an error: it may be created
    later (a collector starts writing on its first batch).
    """

    def __init__(self, path: str | Path, from_start: bool = False) -> None:
        self.path = Path(path)
        self._offset = 0 if from_start else self._size()
        self._partial = b""
        self._identity = self._inode()
        self.problems: list[str] = []

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def _inode(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def read_new(self) -> list[dict[str, Any]]:
        """The complete documents appended since the last read; lines that are not OTLP JSON go to ``problems``."""
        identity = self._inode()
        if identity is None:
            return []
        if identity != self._identity or self._size() < self._offset:  # replaced or truncated: start over
            self._identity, self._offset, self._partial = identity, 0, b""
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the data ended with a newline
        docs: list[dict[str, Any]] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                self.problems.append(f"{self.path}: a line is not JSON ({exc}); skipped")
                continue
            if isinstance(doc, dict) and isinstance(doc.get("resourceSpans"), list):
                docs.append(doc)
            else:
                self.problems.append(f"{self.path}: a line is not an OTLP document (no resourceSpans); skipped")
        return docs
