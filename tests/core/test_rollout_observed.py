"""The rollout check on observed spans: requests split by the model that served them, judged by the stage rules.

The traffic is written as OTLP JSON and read back through the profile's reader (``tests/support/rollout_traffic``),
with the responder's model under each convention: OpenInference ``llm.model_name``, GenAI ``gen_ai.request.model``
and a GenAI span that only records ``gen_ai.response.model``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agent_flywheel.config import RolloutSLO
from agent_flywheel.scaling.profiling.spans import Span, Trace
from agent_flywheel.scaling.rollout.check import ObservedCheck, check_observed, worst
from agent_flywheel.scaling.rollout.observed import observe, trace_arm, trace_ok
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.window import parse_duration, parse_instant, resolve_window
from tests.support.rollout_traffic import BASELINE, CANARY, PLANNER, T0, Request, traces_of, traffic

SLO = RolloutSLO(availability=0.99, p95_latency_s=2.0)
WINDOW = (T0, T0 + 600.0)


def _check(requests: list[Request], slo: RolloutSLO = SLO, **kwargs: Any) -> ObservedCheck:
    return check_observed(traces_of(requests), BASELINE, CANARY, slo, *WINDOW, **kwargs)


def test_requests_are_split_by_the_model_that_served_them_under_every_convention() -> None:
    requests = traffic(0, canary_share=0.3)
    seen = observe(traces_of(requests), BASELINE, CANARY, *WINDOW)
    canary = [r for r in requests if r.model == CANARY]
    assert {r.style for r in canary} == {"openinference", "genai-request", "genai-response"}
    assert (seen.counts.canary, seen.counts.baseline) == (len(canary), len(requests) - len(canary))
    assert seen.counts.unattributed == 0 and seen.counts.in_window == len(requests)
    assert seen.counts.other_models == {PLANNER: len(requests)}  # the planner's calls belong to neither arm
    assert (seen.counts.canary_llm_calls, seen.counts.baseline_llm_calls) == (len(canary), len(requests) - len(canary))
    for o, r in zip(sorted(seen.workflows, key=lambda o: o.t_s), requests, strict=True):  # requests by start
        assert o.t_s == pytest.approx(r.start_s - T0, abs=1e-5)
        assert o.variant == ("canary" if r.model == CANARY else "baseline")
        assert o.latency_s == pytest.approx(r.latency_s, abs=1e-6)


def test_a_request_with_any_canary_call_is_the_canarys() -> None:
    # the planner is the baseline model here: a canary request makes one baseline call and one canary call
    requests = [Request(T0 + i, CANARY if i % 2 else BASELINE) for i in range(10)]
    traces = traces_of(requests)
    arms = [trace_arm(t, PLANNER, CANARY) for t in sorted(traces, key=lambda t: t.root.start_s)]
    assert arms == ["baseline", "canary"] * 5
    seen = observe(traces, PLANNER, CANARY, *WINDOW)
    assert (seen.counts.canary, seen.counts.baseline) == (5, 5)
    assert (seen.counts.canary_llm_calls, seen.counts.baseline_llm_calls) == (5, 10)


def test_requests_naming_neither_model_are_counted_apart() -> None:
    requests = [Request(T0 + i, "other/model", ok=i % 3 != 0) for i in range(9)] + [Request(T0 + 20, CANARY)]
    seen = observe(traces_of(requests), BASELINE, CANARY, *WINDOW)
    assert (seen.counts.canary, seen.counts.baseline, seen.counts.unattributed) == (1, 0, 9)
    assert seen.counts.unattributed_failed == 3
    assert len(seen.workflows) == 1


def test_only_requests_started_in_the_window_count_and_times_run_from_the_origin() -> None:
    requests = [Request(T0 - 5, CANARY), Request(T0 + 10, CANARY), Request(T0 + 600, BASELINE)]
    seen = observe(traces_of(requests), BASELINE, CANARY, *WINDOW, origin_s=T0 - 100)
    assert seen.counts.traces == 3 and seen.counts.in_window == 1
    assert [o.t_s for o in seen.workflows] == pytest.approx([110.0])


def test_a_request_fails_by_its_top_span_its_http_status_or_any_top_span_without_a_root() -> None:
    def span(sid: str, parent: str | None, start: float, end: float, ok: bool = True, **attrs: object) -> Span:
        return Span("t", sid, parent, sid, start, end, ok=ok, attributes=attrs)

    assert trace_ok(Trace("t", [span("root", None, 0, 1), span("llm", "root", 0.1, 0.9, ok=False)]))  # retried
    assert not trace_ok(Trace("t", [span("root", None, 0, 1, ok=False)]))
    assert not trace_ok(Trace("t", [span("root", None, 0, 1, **{"http.response.status_code": 503})]))
    assert trace_ok(Trace("t", [span("root", None, 0, 1, **{"http.response.status_code": 404})]))
    two_tops = Trace("t", [span("a", None, 0, 1), span("b", None, 2, 3, ok=False)])
    assert not trace_ok(two_tops)


def test_a_healthy_canary_is_promoted() -> None:
    result = _check(traffic(1, rate=2.0, canary_share=0.3))
    assert result.decision == "promote", result.reasons
    assert result.workflow.stage == "observed" and result.workflow.weight == pytest.approx(0.3, abs=0.05)
    assert result.llm_calls is None  # no LLM-call SLO: the calls' SLIs are reported, not judged
    assert result.llm_slis["canary"].requests == result.traffic.canary_llm_calls > 50


def test_a_failing_canary_is_rolled_back_on_its_burn_rate() -> None:
    result = _check(traffic(2, rate=2.0, canary_share=0.3, canary_errors=0.3))
    assert result.decision == "rollback"
    assert any("burning too fast" in r for r in result.reasons), result.reasons
    assert result.workflow.canary.error_rate == pytest.approx(0.3, abs=0.07)


def test_a_canary_far_over_the_latency_slo_is_rolled_back_a_slower_one_within_it_holds() -> None:
    slow = _check(traffic(3, rate=2.0, canary_share=0.3, canary_latency_factor=6.0))
    assert slow.decision == "rollback"
    assert any("exceeds the 2 s SLO beyond doubt" in r for r in slow.reasons), slow.reasons
    slower = _check(
        traffic(4, rate=2.0, canary_share=0.3, canary_latency_factor=1.6), SLO.model_copy(update={"p95_latency_s": 5.0})
    )
    assert slower.decision == "hold" and any("canary slower" in r for r in slower.reasons), slower.reasons


def test_too_little_canary_traffic_holds_with_the_reason() -> None:
    few = _check(traffic(5, rate=0.5, canary_share=0.05))
    assert few.decision == "hold"
    assert any("not enough data" in r and "need at least 50" in r for r in few.reasons), few.reasons
    none = _check(traffic(6, canary_share=0.0))
    assert none.decision == "hold"
    assert none.reasons[0].startswith(f"no request in the window was served by {CANARY}")
    assert PLANNER in none.reasons[0]
    enough = _check(traffic(5, rate=0.5, canary_share=0.05), policy=RolloutPolicy(min_requests=5))
    assert enough.traffic.canary >= 5 and not any("not enough data" in r for r in enough.reasons)


def test_llm_calls_are_judged_against_their_own_slo_when_one_is_set() -> None:
    # workflow SLO loose, LLM-call SLO tight: the canary's responder calls (about 0.6 x 3 s) break it
    slo = RolloutSLO(availability=0.99, p95_latency_s=30.0, llm_p95_latency_s=0.8)
    result = _check(traffic(7, rate=2.0, canary_share=0.3, canary_latency_factor=3.0), slo)
    assert [s.stage for s in result.stages] == ["observed", "observed/llm-calls"]
    assert result.workflow.decision != "rollback"
    assert result.llm_calls is not None and result.llm_calls.decision == "rollback"
    assert result.decision == "rollback"
    assert any(r.startswith("LLM calls: ") for r in result.reasons)


def test_quality_scores_on_spans_are_judged() -> None:
    slo = SLO.model_copy(update={"min_quality": 0.8})
    worse = _check(
        traffic(8, rate=2.0, canary_share=0.3, quality=(0.5, 0.95)), slo, quality_attribute="flywheel.quality"
    )
    assert worse.decision == "rollback"
    assert any("quality" in r and "below the 0.8 minimum beyond doubt" in r for r in worse.reasons), worse.reasons
    assert worse.workflow.canary.quality_samples == worse.traffic.canary
    unscored = _check(traffic(8, rate=2.0, canary_share=0.3), slo, quality_attribute="flywheel.quality")
    assert unscored.workflow.canary.quality_samples == 0
    assert any(c.name == "slo:quality" and c.status == "skip" for c in unscored.workflow.checks)


def test_the_json_leads_with_the_decision_and_carries_both_arms_slis() -> None:
    result = _check(traffic(9, rate=2.0, canary_share=0.3))
    body = json.loads(json.dumps(result.to_dict()))
    assert next(iter(body)) == "decision" and body["decision"] == result.decision
    assert body["window"]["start"] == datetime.fromtimestamp(T0, UTC).isoformat().replace("+00:00", "Z")
    assert body["window"]["seconds"] == 600.0
    assert set(body["slis"]) == {"baseline", "canary"}
    for arm in ("baseline", "canary"):
        assert set(body["slis"][arm]) == {"workflow", "llm_calls"}
        assert body["slis"][arm]["workflow"]["p95_latency_s"] > 0
    assert body["traffic"]["canary"] == result.traffic.canary
    assert body["stages"][0]["stage"] == "observed"
    assert "# Rollout check (observed traffic)" in result.to_markdown()


def test_same_model_for_both_arms_and_a_reversed_window_are_refused() -> None:
    with pytest.raises(ValueError, match="same model"):
        check_observed([], CANARY, CANARY, SLO, *WINDOW)
    with pytest.raises(ValueError, match="ends"):
        check_observed([], BASELINE, CANARY, SLO, T0, T0)
    assert worst(["promote", "hold"]) == "hold" and worst(["hold", "rollback", "promote"]) == "rollback"


def test_windows_and_instants() -> None:
    assert [parse_duration(t) for t in ("600", "30s", "10m", "10min", "1.5h", "1d")] == [
        600.0,
        30.0,
        600.0,
        600.0,
        5400.0,
        86400.0,
    ]
    for bad in ("", "ten minutes", "0", "-5m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_instant("1750000000") == T0
    assert parse_instant("2025-06-15T15:06:40Z") == T0 == parse_instant("2025-06-15T15:06:40")
    with pytest.raises(ValueError, match="not a time"):
        parse_instant("yesterday")
    traces = traces_of([Request(T0 + 10, CANARY), Request(T0 + 50, BASELINE, latency_s=2.0)])
    assert resolve_window(traces, 60.0, None, T0 + 100) == (T0 + 40, T0 + 100)
    assert resolve_window(traces, 60.0, T0 + 70, T0 + 100) == (T0 + 10, T0 + 70)
    start, end = resolve_window(traces, None, None, T0 + 1000)
    assert start == pytest.approx(T0 + 10) and end == pytest.approx(T0 + 52, abs=1e-3)
    assert resolve_window([], None, None, T0) == (T0 - 1.0, T0)
