"""Identifiers and timestamps shaped like the real NeMo services' (``cust-`` + 22 base62 characters...)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 22  # 62**22 > 2**128, so a whole uuid4 fits


def base62(number: int, length: int = ID_LENGTH) -> str:
    """``number`` in base 62, left-padded to ``length`` characters."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits)).rjust(length, "0")


def new_id(prefix: str) -> str:
    """A fresh id like ``cust-FarcM8gwhL1XFDXQ57qGLL``: clients match on the prefix, so keep it exact."""
    return f"{prefix}-{base62(uuid.uuid4().int)}"


def iso(moment: datetime) -> str:
    """ISO 8601 without a zone suffix, as NeMo services write timestamps."""
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    """Read back a timestamp written by :func:`iso` (or with a space separator, as some NeMo answers use)."""
    return datetime.fromisoformat(text.replace(" ", "T"))


def shifted_iso(start_iso: str, seconds: float) -> str:
    """``start_iso`` plus ``seconds``: how simulated job phases get wall-clock-looking timestamps."""
    return iso(parse_iso(start_iso) + timedelta(seconds=seconds))
