"""Dates as the log server parses them: ES formats, epoch numbers, date math, keep-alive values."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from simulators.logserver.dates import (
    format_millis,
    parse_date,
    parse_date_math,
    split_formats,
    time_value_seconds,
)

LOG_FORMAT = split_formats("strict_date_optional_time||epoch_second")
DEFAULT = split_formats(None)
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "formats", "expected"),
    [
        ("2023-11-14T22:13:20Z", LOG_FORMAT, T0),
        ("2023-11-14T22:13:20.123Z", LOG_FORMAT, T0 + 123),
        ("2023-11-14T22:13:20.123456789Z", LOG_FORMAT, T0 + 123),
        ("2023-11-14T22:13:20", LOG_FORMAT, T0),
        ("2023-11-15T00:13:20+02:00", LOG_FORMAT, T0),
        ("2023-11-14T17:13:20-0500", LOG_FORMAT, T0),
        ("2023-11-14", LOG_FORMAT, T0 - (22 * 3600 + 13 * 60 + 20) * 1000),
        (1_700_000_000, LOG_FORMAT, T0),
        ("1700000000", LOG_FORMAT, T0),
        (1_700_000_000.5, LOG_FORMAT, T0 + 500),
        (T0, DEFAULT, T0),
        ("2023-11-14T22:13:20Z", DEFAULT, T0),
        ("2023/11/14 22:13:20", ["yyyy/MM/dd HH:mm:ss"], T0),
    ],
)
def test_parse_date_formats(value: object, formats: list[str], expected: int) -> None:
    assert parse_date(value, formats) == expected


@pytest.mark.parametrize("value", ["yesterday", "2023-13-01", "2023-11-14T25:00:00Z", True, None, {"a": 1}])
def test_parse_date_rejects_garbage(value: object) -> None:
    with pytest.raises(ValueError):
        parse_date(value, LOG_FORMAT)


def test_epoch_seconds_are_not_millis_unless_the_format_says_so() -> None:
    # ES reads a bare number as epoch millis under the default format, as epoch seconds under epoch_second.
    assert parse_date(1_700_000_000, DEFAULT) == 1_700_000_000
    assert parse_date(1_700_000_000, ["epoch_second"]) == T0


def test_date_math_rounds_like_es() -> None:
    now = T0 + 1234
    day_start = T0 - (22 * 3600 + 13 * 60 + 20) * 1000
    assert parse_date_math("now", DEFAULT, now_ms=now) == now
    assert parse_date_math("now-1d", DEFAULT, now_ms=now) == now - 86_400_000
    assert parse_date_math("now/d", DEFAULT, now_ms=now) == day_start
    assert parse_date_math("now/d", DEFAULT, round_up=True, now_ms=now) == day_start + 86_400_000 - 1
    assert parse_date_math("2023-11-14||+1M/M", DEFAULT) == parse_date("2023-12-01", DEFAULT)
    with pytest.raises(ValueError):
        parse_date_math("now-1x", DEFAULT, now_ms=now)


def test_time_zone_applies_to_values_without_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert parse_date("2023-11-15T00:13:20", LOG_FORMAT, plus_two) == T0
    assert parse_date("2023-11-14T22:13:20Z", LOG_FORMAT, plus_two) == T0


def test_format_millis_uses_the_first_format() -> None:
    assert format_millis(T0 + 5, LOG_FORMAT) == "2023-11-14T22:13:20.005Z"
    assert format_millis(T0, ["epoch_second", "strict_date_optional_time"]) == "1700000000"
    assert format_millis(T0, ["epoch_millis"]) == str(T0)


def test_time_values() -> None:
    assert time_value_seconds("2m") == 120
    assert time_value_seconds("30s") == 30
    assert time_value_seconds("500ms") == 0.5
    assert time_value_seconds("1h") == 3600
    with pytest.raises(ValueError):
        time_value_seconds("2 minutes")
