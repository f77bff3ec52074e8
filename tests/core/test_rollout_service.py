"""The rollout check over HTTP (``GET /check``): the verdict as JSON with a 200, the refusals with their codes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_flywheel.config import RolloutSLO
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.service import CheckService, CheckSettings, RolloutCheckServer
from tests.support.rollout_traffic import BASELINE, CANARY, T0, traffic, write_jsonl

NOW = T0 + 600.0
SETTINGS = CheckSettings(slo=RolloutSLO(availability=0.99, p95_latency_s=2.0), baseline_model=BASELINE, window_s=600.0)


def _query(**params: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in params.items()}


def test_the_check_judges_the_window_ending_now(tmp_path: Path) -> None:
    spans = write_jsonl(tmp_path / "spans.jsonl", traffic(0, rate=2.0, canary_share=0.3, canary_errors=0.3))
    service = CheckService(spans, SETTINGS, clock=lambda: NOW)
    status, body = service.check(_query(canary=CANARY))
    assert status == 200 and body["decision"] == "rollback"
    assert body["baseline_model"] == BASELINE and body["window"]["seconds"] == 600.0
    status, early = service.check(_query(canary=CANARY, window="60s", until=str(T0 + 60)))
    assert status == 200 and early["window"]["end_s"] == T0 + 60
    assert early["traffic"]["in_window"] < body["traffic"]["in_window"] / 5


def test_little_traffic_holds_and_min_requests_is_a_query_parameter(tmp_path: Path) -> None:
    spans = write_jsonl(tmp_path / "spans.jsonl", traffic(1, rate=0.3, canary_share=0.1))
    service = CheckService(spans, SETTINGS, clock=lambda: NOW)
    _, body = service.check(_query(canary=CANARY))
    assert body["decision"] == "hold" and any("not enough data" in r for r in body["reasons"])
    _, lowered = service.check(_query(canary=CANARY, min_requests="3"))
    assert not any("not enough data" in r for r in lowered["reasons"])
    assert SETTINGS.policy == RolloutPolicy()  # a query never changes the service's own policy


def test_an_empty_file_is_no_traffic_yet_and_a_missing_one_is_unavailable(tmp_path: Path) -> None:
    empty = tmp_path / "spans.jsonl"
    empty.write_text("")
    status, body = CheckService(empty, SETTINGS, clock=lambda: NOW).check(_query(canary=CANARY))
    assert status == 200 and body["decision"] == "hold"
    assert body["reasons"][0].startswith(f"no request in the window was served by {CANARY}")
    status, body = CheckService(tmp_path / "nowhere.jsonl", SETTINGS).check(_query(canary=CANARY))
    assert status == 503 and "nowhere.jsonl" in body["error"]


def test_bad_queries_are_400_with_the_parameter_named(tmp_path: Path) -> None:
    service = CheckService(write_jsonl(tmp_path / "s.jsonl", traffic(2, duration_s=10)), SETTINGS)
    for query, word in (
        ({}, "canary"),
        ({"canary": BASELINE}, "same model"),
        ({"canary": CANARY, "window": "soon"}, "not a duration"),
        ({"canary": CANARY, "until": "later"}, "not a time"),
        ({"canary": CANARY, "min_requests": "0"}, "min_requests"),
        ({"canary": CANARY, "min_requests": "many"}, "many"),
    ):
        status, body = service.check(_query(**query))
        assert status == 400 and word in body["error"], (query, body)


def test_the_file_is_read_again_when_it_grows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "spans.jsonl", traffic(3, rate=1.0, canary_share=0.0))
    service = CheckService(path, SETTINGS, clock=lambda: NOW)
    _, before = service.check(_query(canary=CANARY))
    assert before["traffic"]["canary"] == 0
    write_jsonl(path, traffic(4, rate=1.0, canary_share=1.0), append=True, first_index=10_000)
    _, after = service.check(_query(canary=CANARY))
    assert after["traffic"]["canary"] > 500 and after["traffic"]["baseline"] == before["traffic"]["baseline"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RolloutCheckServer]:
    spans = write_jsonl(tmp_path / "spans.jsonl", traffic(5, rate=2.0, canary_share=0.3))
    with RolloutCheckServer(CheckService(spans, SETTINGS, clock=lambda: NOW)) as running:
        yield running


def test_the_http_endpoint(server: RolloutCheckServer) -> None:
    answer = httpx.get(f"{server.url}/check", params={"baseline": BASELINE, "canary": CANARY, "window": "10m"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json()["decision"] == "promote"
    assert httpx.get(f"{server.url}/check").status_code == 400
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/metrics").status_code == 404
    refused = httpx.post(f"{server.url}/check", json={})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
