"""Where bad records go: a :class:`Quarantined` names why, where from and which field, and keeps the record;
:class:`QuarantineWriter` appends it, raw record included, to a JSONL file."""

from __future__ import annotations

import dataclasses
import json
import reprlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from agent_flywheel.records.problems import Reason
from agent_flywheel.records.timestamps import format_timestamp

_MESSAGE_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """A record that did not validate: why, where from, which field, and the record itself, unchanged.

    ``raw_text`` is the original line when the record came from a file (kept byte for byte, so a fixed
    parser can replay the quarantine file); ``raw`` is the parsed value when there was one.
    """

    reason: Reason
    message: str
    source: str
    field: str | None = None
    raw: Any = dataclasses.field(default=None, repr=False, compare=False)
    raw_text: str | None = dataclasses.field(default=None, repr=False, compare=False)


def quarantined(reason: Reason, source: str, field: str | None, problem: str, raw: Any) -> Quarantined:
    """A :class:`Quarantined` whose one-line message names the record, the field and the problem."""
    where = f"{source}: {field}: " if field else f"{source}: "
    message = where + problem
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    return Quarantined(reason=reason, message=message, source=source, field=field, raw=raw)


class QuarantineWriter:
    """Appends quarantined records (reason, message, raw record in full) to a JSONL file and counts reasons.

    The file is the audit trail for "never dropped silently": each line is
    ``{"reason", "source", "field", "message", "quarantined_at", "raw" | "raw_text" | "raw_repr"}``.
    ``raw`` is the record as JSON; ``raw_text`` the original line when it came from a file (invalid UTF-8
    bytes escaped as lone surrogates, so it is recoverable); ``raw_repr`` a repr for Python objects that
    JSON cannot hold. The file is opened on the first write, so a clean run leaves none behind.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self._file: IO[str] | None = None

    @property
    def total(self) -> int:
        """How many records were quarantined through this writer."""
        return sum(self.counts.values())

    def write(self, item: Quarantined) -> None:
        """Count the reason and append the record; flushed at once, so a crash loses nothing written."""
        self.counts[str(item.reason)] += 1
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(_quarantine_line(item) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (a later write reopens it in append mode)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> QuarantineWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _quarantine_line(item: Quarantined) -> str:
    entry: dict[str, Any] = {
        "reason": str(item.reason),
        "source": item.source,
        "field": item.field,
        "message": item.message,
        "quarantined_at": format_timestamp(datetime.now(UTC)),
    }
    if item.raw_text is not None:
        entry["raw_text"] = item.raw_text
        return json.dumps(entry, ensure_ascii=True)
    try:
        return json.dumps({**entry, "raw": item.raw}, ensure_ascii=True, allow_nan=False)
    except (ValueError, TypeError, RecursionError):
        pass
    try:
        entry["raw_repr"] = json.dumps(item.raw, ensure_ascii=True, default=repr)
    except (ValueError, TypeError, RecursionError):
        shortener = reprlib.Repr()
        shortener.maxlevel, shortener.maxstring, shortener.maxother = 32, 1 << 20, 1 << 20
        entry["raw_repr"] = shortener.repr(item.raw)
    return json.dumps(entry, ensure_ascii=True)
