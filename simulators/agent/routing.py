"""Staged rollouts: which model a user gets, decided by a stable hash of the user id.

A user stays on the same arm for the whole canary stage (the hash does not depend on the process or the
time), so per-user experience is consistent and the baseline and canary populations do not mix. Raising the
weight only moves users from the teacher to the canary, never back: the canary set at 10 % is a subset of the
canary set at 25 %.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

BASELINE = "baseline"
CANARY = "canary"


def user_bucket(user_id: str) -> float:
    """A number in [0, 1) fixed for each user id (the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(f"flywheel-routing:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Route:
    """The model chosen for one request and the arm it belongs to."""

    model: str
    arm: str


class Router:
    """The teacher for everyone, except a ``canary_weight`` share of users who get ``canary_model``."""

    def __init__(self, teacher_model: str, canary_model: str | None = None, canary_weight: float = 0.0) -> None:
        self.teacher_model = teacher_model
        self._lock = threading.Lock()
        self._canary_model: str | None = None
        self._canary_weight = 0.0
        self.configure(canary_model, canary_weight)

    def configure(self, canary_model: str | None, canary_weight: float) -> None:
        """Set (or, with ``canary_model=None``, clear) the canary; the weight must be in [0, 1]."""
        if not 0.0 <= canary_weight <= 1.0:
            raise ValueError("canary_weight must be between 0 and 1")
        if canary_model is not None and not canary_model.strip():
            raise ValueError("canary_model must be a model name or null")
        with self._lock:
            self._canary_model = canary_model
            self._canary_weight = canary_weight if canary_model else 0.0

    def route(self, user_id: str) -> Route:
        """The model for this user under the current split."""
        with self._lock:
            canary, weight = self._canary_model, self._canary_weight
        if canary and user_bucket(user_id) < weight:
            return Route(canary, CANARY)
        return Route(self.teacher_model, BASELINE)

    def state(self) -> dict[str, object]:
        """The current split, as ``GET /admin/routing`` shows it."""
        with self._lock:
            return {
                "teacher_model": self.teacher_model,
                "canary_model": self._canary_model,
                "canary_weight": self._canary_weight,
            }
