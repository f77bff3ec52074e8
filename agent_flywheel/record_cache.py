"""The records a workload has accumulated across incremental runs, kept locally as JSONL segments.

Extraction is incremental (each run reads only what is new since the last watermark), but a dataset
should be built from everything collected so far. So each run appends its new records as one segment
under ``.flywheel/records/<workload>/<client>/`` and the dataset build reads all segments back; a full
rebuild clears them and reads the log store from the start.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RecordCache:
    """Append-only segments of validated records for one (workload, client)."""

    def __init__(self, root: Path, workload_id: str, client_id: str) -> None:
        self.dir = root / _SAFE.sub("_", workload_id) / _SAFE.sub("_", client_id)

    def clear(self) -> None:
        """Forget every segment (a full rebuild)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def append(self, documents: Iterable[dict[str, Any]], label: str) -> tuple[Path | None, int]:
        """Write one segment; returns its path (None when there was nothing to write) and the count."""
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.dir / f"{stamp}-{_SAFE.sub('_', label)}.jsonl"
        count = 0
        with path.open("w", encoding="utf-8") as handle:
            for document in documents:
                handle.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
                count += 1
        if count == 0:
            path.unlink()
            return None, 0
        return path, count

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.jsonl")) if self.dir.exists() else []

    def iter_documents(self) -> Iterator[dict[str, Any]]:
        """Every cached record, oldest segment first, one at a time (bounded memory)."""
        for segment in self.segments():
            with segment.open(encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield orjson.loads(line)

    def count(self) -> int:
        return sum(1 for segment in self.segments() for line in segment.open(encoding="utf-8") if line.strip())
