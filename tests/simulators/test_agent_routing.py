"""Staged-rollout routing: a stable split by user id that grows monotonically with the weight."""

from __future__ import annotations

import pytest

from simulators.agent.routing import BASELINE, CANARY, Router, user_bucket

USERS = [f"user-{i:05d}" for i in range(4000)]


def test_without_a_canary_everyone_gets_the_teacher() -> None:
    router = Router("teacher")
    assert {router.route(u).model for u in USERS[:100]} == {"teacher"}
    router.configure(None, 0.7)
    assert router.state() == {"teacher_model": "teacher", "canary_model": None, "canary_weight": 0.0}


def test_split_is_stable_and_close_to_the_weight() -> None:
    router = Router("teacher", "canary", 0.25)
    first = [router.route(u) for u in USERS]
    assert first == [Router("teacher", "canary", 0.25).route(u) for u in USERS]
    share = sum(r.arm == CANARY for r in first) / len(USERS)
    assert 0.22 < share < 0.28
    assert all((r.model == "canary") == (r.arm == CANARY) for r in first)


def test_raising_the_weight_only_moves_users_to_the_canary() -> None:
    router = Router("teacher", "canary", 0.1)
    at_10 = {u for u in USERS if router.route(u).arm == CANARY}
    router.configure("canary", 0.5)
    at_50 = {u for u in USERS if router.route(u).arm == CANARY}
    assert at_10 < at_50
    router.configure("canary", 1.0)
    assert all(router.route(u).arm == CANARY for u in USERS)
    router.configure("canary", 0.0)
    assert all(router.route(u).arm == BASELINE for u in USERS)


def test_bucket_range_and_bad_settings() -> None:
    assert all(0.0 <= user_bucket(u) < 1.0 for u in USERS[:200])
    router = Router("teacher")
    with pytest.raises(ValueError):
        router.configure("canary", 1.5)
    with pytest.raises(ValueError):
        router.configure("  ", 0.5)
