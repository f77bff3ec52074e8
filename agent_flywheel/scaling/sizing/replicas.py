"""What a replica is: from the C* of the system under test to replicas and GPUs for the target users.

The sweep ran on ``test_gpus`` GPUs, which hold ``test_gpus / gpus_per_replica`` replicas (by default the system
under test is one replica). C* per replica is the measured C* divided by that count. Then:

* **balanced** (the default): a load balancer spreads every request over the replicas, so a replica carries
  ``users / replicas`` concurrent workflows on average, a fraction as good as a whole number:
  ``replicas = ceil(users / C* per replica)``;
* **sticky sessions**: each user is pinned to one replica, so a replica serves whole users:
  ``replicas = ceil(users / floor(C* per replica))`` (a C* of 10.6 holds 10 pinned users; the 11th misses).

``GPUs = replicas × gpus_per_replica``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from agent_flywheel.config import SizingTargets

_EPS = 1e-9


@dataclass(frozen=True)
class ReplicaModel:
    """The assumptions that turn C* into GPUs: test GPUs, GPUs per replica, balanced or pinned users."""

    test_gpus: int
    gpus_per_replica: int
    sticky_sessions: bool

    @classmethod
    def from_targets(cls, targets: SizingTargets) -> ReplicaModel:
        """The model the targets describe (no ``gpus_per_replica``: the system under test is one replica)."""
        return cls(targets.test_gpus, targets.gpus_per_replica or targets.test_gpus, targets.sticky_sessions)

    @property
    def replicas_in_test(self) -> int:
        """How many replicas the system under test held."""
        return self.test_gpus // self.gpus_per_replica

    @property
    def traffic(self) -> str:
        """``balanced`` or ``sticky``."""
        return "sticky" if self.sticky_sessions else "balanced"

    def per_replica(self, c_star: float) -> float:
        """C* of one replica: the system under test's C* spread over its replicas."""
        return c_star / self.replicas_in_test

    def capacity_per_replica(self, c_star: float) -> float:
        """Concurrent workflows one replica may carry under the SLO: C* per replica, or its whole users when pinned."""
        c = self.per_replica(c_star)
        return math.floor(c + _EPS) if self.sticky_sessions else c

    def replicas_for(self, c_star: float, users: int) -> int | None:
        """Replicas for ``users`` concurrent workflows; None when one replica cannot hold even one pinned user."""
        capacity = self.capacity_per_replica(c_star)
        if capacity <= 0:
            return None
        return max(1, math.ceil(users / capacity - _EPS))

    def gpus_for(self, c_star: float, users: int) -> int | None:
        """GPUs for ``users``: replicas × GPUs per replica (None as in :meth:`replicas_for`)."""
        replicas = self.replicas_for(c_star, users)
        return None if replicas is None else replicas * self.gpus_per_replica

    def rule(self) -> str:
        """The formula in words, for reports."""
        if self.sticky_sessions:
            return "replicas = ceil(users / floor(C* per replica)) (users pinned to replicas: whole users each)"
        return "replicas = ceil(users / C* per replica) (requests balanced over the replicas)"

    def describe(self) -> str:
        """One sentence: what a replica is and how users reach it."""
        test = (
            "the system under test is one replica"
            if self.replicas_in_test == 1
            else f"the system under test held {self.replicas_in_test} replicas"
        )
        how = "users pinned to a replica (sticky sessions)" if self.sticky_sessions else "requests balanced per request"
        return (
            f"{self.test_gpus} test GPU(s); a replica has {self.gpus_per_replica} GPU(s) ({test}); {how}; "
            f"GPUs = replicas × {self.gpus_per_replica}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: the assumptions stated in ``sizing.json``."""
        return {
            "test_gpus": self.test_gpus,
            "gpus_per_replica": self.gpus_per_replica,
            "replicas_in_test": self.replicas_in_test,
            "traffic": self.traffic,
            "sticky_sessions": self.sticky_sessions,
            "rule": self.rule(),
        }
