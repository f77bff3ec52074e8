"""Timestamps of log records: epoch seconds or ISO 8601 in, timezone-aware UTC out, ISO 8601 with ``Z`` indexed."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from agent_flywheel.records.problems import shown

_MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold


_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)(?P<fraction>[.,]\d+)?)?"
    r"(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


def _epoch_to_datetime(seconds: float) -> datetime:
    if not math.isfinite(seconds):
        raise ValueError(f"timestamp must be a finite number, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"epoch seconds before 1970 ({seconds!r})")
    if seconds > _MAX_TIMESTAMP_S:
        raise ValueError(f"epoch seconds out of range ({seconds!r}); epoch milliseconds are not accepted")
    return datetime.fromtimestamp(seconds, UTC)


def parse_timestamp(value: Any) -> datetime:
    """A UTC datetime from epoch seconds (number or numeric string), ISO 8601 or a datetime.

    Producers write both forms (the blueprint's docs use epoch seconds, its tests ISO strings), and
    Elasticsearch compares them only once they are one type. A naive ISO string or datetime is taken as
    UTC. Raises ``ValueError`` with a readable message otherwise.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool) or value is None:
        raise ValueError(f"timestamp must be epoch seconds or ISO 8601, got {shown(value)}")
    if isinstance(value, int | float):
        try:
            return _epoch_to_datetime(float(value))
        except OverflowError:
            raise ValueError(f"epoch seconds out of range ({shown(value)})") from None
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be epoch seconds or ISO 8601, got {type(value).__name__}")
    text = value.strip()
    if len(text) > 64:
        raise ValueError(f"timestamp string too long ({len(value)} characters)")
    if _NUMERIC.fullmatch(text):
        try:
            return _epoch_to_datetime(float(text))
        except OverflowError:
            raise ValueError(f"epoch seconds out of range ({shown(value)})") from None
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(f"not ISO 8601 or epoch seconds: {shown(value)}")
    fraction = (match["fraction"] or "").replace(",", ".")[:7]  # datetime keeps microseconds; drop the rest
    zone = match["zone"] or ""
    zone = "+00:00" if zone in ("Z", "z", "") else zone
    iso = f"{match['date']}T{match['time'] or '00:00'}{fraction}{zone}"
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError as exc:
        raise ValueError(f"invalid date or time in {shown(value)}: {exc}") from None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range: {shown(value)}") from None


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (what we index, so Elasticsearch reads one unambiguous format)."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")
