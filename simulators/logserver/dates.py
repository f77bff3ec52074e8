"""Dates as Elasticsearch handles them: ``||``-separated formats, epoch numbers, date math and time units.

Every date is normalised to epoch milliseconds (an int), which is what ES stores, sorts on and returns
as a sort value; that makes range queries and ``search_after`` plain integer comparisons in SQLite.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta, timezone

DEFAULT_DATE_FORMAT = "strict_date_optional_time||epoch_millis"

_ISO_RE = re.compile(
    r"^(?P<y>[+-]?\d{4,9})(?:-(?P<mo>\d{1,2})(?:-(?P<d>\d{1,2})"
    r"(?:T(?P<h>\d{1,2})(?::(?P<mi>\d{1,2})(?::(?P<s>\d{1,2})(?:[.,](?P<f>\d{1,9}))?)?)?)?)?)?"
    r"(?P<z>Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_STRICT_ISO_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<mo>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<h>\d{2})(?::(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,](?P<f>\d{1,9}))?)?)?)?)?)?"
    r"(?P<z>Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?$")
_ISO_NAMES = {
    "strict_date_optional_time",
    "strict_date_optional_time_nanos",
    "strict_date_time",
    "strict_date_time_no_millis",
    "strict_date",
    "strict_date_hour_minute_second",
    "strict_date_hour_minute_second_millis",
    "strict_date_hour_minute_second_fraction",
}
_LENIENT_ISO_NAMES = {name.removeprefix("strict_") for name in _ISO_NAMES}
_PATTERN_TOKENS = {
    "yyyy": r"(?P<y>\d{4})",
    "uuuu": r"(?P<y>\d{4})",
    "MM": r"(?P<mo>\d{2})",
    "dd": r"(?P<d>\d{2})",
    "HH": r"(?P<h>\d{2})",
    "mm": r"(?P<mi>\d{2})",
    "ss": r"(?P<s>\d{2})",
    "SSSSSSSSS": r"(?P<f>\d{9})",
    "SSSSSS": r"(?P<f>\d{6})",
    "SSS": r"(?P<f>\d{3})",
    "XXX": r"(?P<z>Z|[+-]\d{2}:\d{2})",
    "Z": r"(?P<z>[+-]\d{4}|Z)",
    "X": r"(?P<z>Z|[+-]\d{2}(?:\d{2})?)",
}
_pattern_cache: dict[str, re.Pattern[str]] = {}
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_TIME_VALUE_RE = re.compile(r"^(\d+)(nanos|micros|ms|s|m|h|d)$")
_MATH_RE = re.compile(r"([+-]\d+[yMwdhHms])|(/[yMwdhHms])")


def split_formats(fmt: str | None) -> list[str]:
    """``"a||b"`` → ``["a", "b"]``; no format means ES's default for ``date`` fields."""
    return [part.strip() for part in (fmt or DEFAULT_DATE_FORMAT).split("||") if part.strip()]


def _java_pattern(pattern: str) -> re.Pattern[str]:
    """Translate the common Java date-pattern letters (``yyyy-MM-dd HH:mm:ss``) into a regex, once."""
    compiled = _pattern_cache.get(pattern)
    if compiled is not None:
        return compiled
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "'":
            end = pattern.index("'", i + 1)
            out.append(re.escape(pattern[i + 1 : end]))
            i = end + 1
            continue
        for token, regex in _PATTERN_TOKENS.items():
            if pattern.startswith(token, i):
                out.append(regex)
                i += len(token)
                break
        else:
            if pattern[i].isalpha():
                raise ValueError(f"unsupported date pattern letter [{pattern[i]}] in [{pattern}]")
            out.append(re.escape(pattern[i]))
            i += 1
    compiled = re.compile("^" + "".join(out) + "$")
    _pattern_cache[pattern] = compiled
    return compiled


def _zone_offset(zone: str | None, default: timezone) -> timezone:
    if not zone:
        return default
    if zone == "Z":
        return UTC
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
    return timezone(sign * timedelta(minutes=minutes))


def _from_groups(groups: dict[str, str | None], tz: timezone) -> int:
    year = int(groups.get("y") or 0)
    fraction = (groups.get("f") or "").ljust(9, "0")[:9]
    moment = datetime(
        year,
        int(groups.get("mo") or 1),
        int(groups.get("d") or 1),
        int(groups.get("h") or 0),
        int(groups.get("mi") or 0),
        int(groups.get("s") or 0),
        tzinfo=_zone_offset(groups.get("z"), tz),
    )
    seconds = calendar.timegm(moment.utctimetuple())
    return seconds * 1000 + int(fraction) // 1_000_000


def _parse_one(text: str, fmt: str, tz: timezone) -> int | None:
    if fmt == "epoch_millis":
        return int(text.partition(".")[0]) if _NUMBER_RE.match(text) else None
    if fmt == "epoch_second":
        if not _NUMBER_RE.match(text):
            return None
        whole, _, frac = text.partition(".")
        millis = int(whole) * 1000
        if frac:
            part = int(frac.ljust(3, "0")[:3])
            millis += -part if whole.startswith("-") else part
        return millis
    if fmt in _ISO_NAMES:
        match = _STRICT_ISO_RE.match(text)
    elif fmt in _LENIENT_ISO_NAMES:
        match = _ISO_RE.match(text)
    else:
        match = _java_pattern(fmt).match(text)
    if match is None:
        return None
    return _from_groups(match.groupdict(), tz)


def parse_date(value: object, formats: list[str], tz: timezone = UTC) -> int:
    """Epoch millis of a document or query value, trying each format in order as ES does; ValueError if none fits."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"failed to parse date field [{value}] with format [{'||'.join(formats)}]")
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise ValueError(f"failed to parse date field [{value}] with format [{'||'.join(formats)}]")
    for fmt in formats:
        try:
            millis = _parse_one(text, fmt, tz)
        except (ValueError, OverflowError):
            millis = None
        if millis is not None:
            return millis
    raise ValueError(f"failed to parse date field [{text}] with format [{'||'.join(formats)}]")


def format_millis(millis: int, formats: list[str]) -> str:
    """A date as ES prints it in ``value_as_string``/``key_as_string``: in the field's first format."""
    first = formats[0] if formats else "strict_date_optional_time"
    if first == "epoch_millis":
        return str(millis)
    if first == "epoch_second":
        return str(millis // 1000)
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def time_value_seconds(text: str) -> float:
    """``"2m"``, ``"30s"``, ``"500ms"`` → seconds (keep-alive and scroll durations)."""
    match = _TIME_VALUE_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"failed to parse setting [keep_alive] with value [{text}] as a time value")
    amount, unit = int(match.group(1)), match.group(2)
    if unit == "nanos":
        return amount / 1e9
    if unit == "micros":
        return amount / 1e6
    return amount * _UNIT_MS[unit] / 1000


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def _round(moment: datetime, unit: str, up: bool) -> datetime:
    if unit == "y":
        start = moment.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        end = _add_months(start, 12)
    elif unit == "M":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = _add_months(start, 1)
    elif unit == "w":
        start = (moment - timedelta(days=moment.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=7)
    elif unit == "d":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif unit in ("h", "H"):
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif unit == "m":
        start = moment.replace(second=0, microsecond=0)
        end = start + timedelta(minutes=1)
    else:
        start = moment.replace(microsecond=0)
        end = start + timedelta(seconds=1)
    return end - timedelta(milliseconds=1) if up else start


def _apply_math(moment: datetime, expression: str, round_up: bool) -> datetime:
    position = 0
    for match in _MATH_RE.finditer(expression):
        if match.start() != position:
            raise ValueError(f"failed to parse date math [{expression}]")
        position = match.end()
        if match.group(1):
            amount, unit = int(match.group(1)[:-1]), match.group(1)[-1]
            if unit == "y":
                moment = _add_months(moment, 12 * amount)
            elif unit == "M":
                moment = _add_months(moment, amount)
            else:
                seconds = {"w": 604800, "d": 86400, "h": 3600, "H": 3600, "m": 60, "s": 1}[unit]
                moment = moment + timedelta(seconds=seconds * amount)
        else:
            moment = _round(moment, match.group(2)[1], round_up)
    if position != len(expression):
        raise ValueError(f"failed to parse date math [{expression}]")
    return moment


def parse_date_math(
    value: object, formats: list[str], *, round_up: bool = False, tz: timezone = UTC, now_ms: int | None = None
) -> int:
    """A range bound: a date in one of the formats, or ``now``/``<date>||`` followed by ``+1d``, ``-2h``, ``/d``."""
    if not isinstance(value, str):
        return parse_date(value, formats, tz)
    text = value.strip()
    if text.startswith("now"):
        anchor_ms, expression = (now_ms if now_ms is not None else int(time.time() * 1000)), text[3:]
    elif "||" in text:
        anchor_text, expression = text.split("||", 1)
        anchor_ms = parse_date(anchor_text, formats, tz)
    else:
        return parse_date(text, formats, tz)
    if not expression:
        return anchor_ms
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=anchor_ms)
    moment = _apply_math(moment.astimezone(tz), expression, round_up)
    return calendar.timegm(moment.utctimetuple()) * 1000 + moment.microsecond // 1000


def parse_time_zone(text: str | None) -> timezone:
    """``time_zone`` of a range query: ``Z``, ``+01:00`` or ``UTC`` (named zones other than UTC are not supported)."""
    if not text or text.upper() in ("UTC", "Z", "GMT"):
        return UTC
    if re.match(r"^[+-]\d{2}(:?\d{2})?$", text):
        return _zone_offset(text, UTC)
    raise ValueError(f"unsupported time_zone [{text}]")
