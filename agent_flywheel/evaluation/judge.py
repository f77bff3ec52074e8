"""The judge's replies: the patterns we ask the Evaluator to read them with, parsing a score, scaling similarity.

Differences from the blueprint, on purpose:
- judge patterns capture whole numbers, so a similarity reply of ``10`` is 10, not 1 (blueprint bug 1);
- similarity (1–10) is scaled to 0–1 so every metric lives on the same scale.
"""

from __future__ import annotations

import math
import re

# Judge reply patterns we send to the Evaluator; each captures a whole number in group 1.
JUDGE_RATING_PATTERN = r"RATING:\s*(\d+)"
JUDGE_SIMILARITY_PATTERN = r"(\d+)"
SIMILARITY_MIN = 1.0
SIMILARITY_MAX = 10.0


def parse_judge_score(text: str, pattern: str, cast: str = "int") -> float | None:
    """The judge's score: the pattern's first capture group (or whole match), cast; None when unparseable.

    ``cast="int"`` accepts integral numbers only (``"8"``, ``"8.0"``; ``"8.5"`` is None). None, not 0, so a judge that rambles is counted as a parse failure rather than as a bad answer.
    """
    if not isinstance(text, str):
        return None
    match = re.search(pattern, text)
    if match is None:
        return None
    raw = match.group(1) if match.re.groups else match.group(0)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or (cast == "int" and not value.is_integer()):
        return None
    return value


def scale_similarity(value: float) -> float:
    """A 1–10 similarity rating on 0–1: ``(v - 1) / 9``, clamped; linear, so it commutes with the mean."""
    scaled = (value - SIMILARITY_MIN) / (SIMILARITY_MAX - SIMILARITY_MIN)
    return min(1.0, max(0.0, scaled))
