"""The traffic watch's decisions, its event, its cooldown documents, and that prefect.yaml's trigger fits the event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

import agent_flywheel.traffic_watch as tw
from agent_flywheel.logstore.shape import IndexShape
from agent_flywheel.logstore.traffic import WorkloadStats
from agent_flywheel.logstore.watermarks import MemoryWatermarkStore, Watermark
from agent_flywheel.state import FileStateStore
from agent_flywheel.traffic_watch import (
    EVENT_NAME,
    Action,
    EmitLog,
    LastEmit,
    TrafficCount,
    decide,
    event_payload,
    event_resource,
    survey,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MARK = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def count(new: int, *, workload: str = "support", client: str = "web", since: datetime | None = MARK) -> TrafficCount:
    return TrafficCount(workload, client, new_records=new, total_records=new + 500, since=since, latest=NOW)


def one(c: TrafficCount, **kwargs: Any) -> tw.WatchDecision:
    options: dict[str, Any] = {"threshold": 200, "cooldown": HOUR, "last_emits": {}, "now": NOW, **kwargs}
    (decision,) = decide([c], **options)
    return decision


# --------------------------------------------------------------------------------------------------
# decide
# --------------------------------------------------------------------------------------------------


def test_emits_exactly_at_the_threshold_and_not_below() -> None:
    assert one(count(200)).action is Action.EMIT
    below = one(count(199))
    assert below.action is Action.BELOW_THRESHOLD
    assert "199" in below.reason and "200" in below.reason


def test_first_run_without_watermark_counts_everything() -> None:
    assert one(count(250, since=None)).action is Action.EMIT


def test_cooldown_holds_back_the_same_watermark_then_lets_it_go() -> None:
    recent = {("support", "web"): LastEmit(at=NOW - timedelta(minutes=20), since=MARK, new_records=210)}
    held = one(count(400), last_emits=recent)
    assert held.action is Action.COOLDOWN
    assert "40.0 min" in held.reason  # 60 min cooldown - 20 min elapsed

    old = {("support", "web"): LastEmit(at=NOW - timedelta(minutes=61), since=MARK, new_records=210)}
    assert one(count(400), last_emits=old).action is Action.EMIT


def test_a_moved_watermark_means_new_records_and_skips_the_cooldown() -> None:
    last = {("support", "web"): LastEmit(at=NOW - timedelta(minutes=5), since=MARK - HOUR, new_records=300)}
    assert one(count(300), last_emits=last).action is Action.EMIT
    # the first run ever after an emit without a watermark: the watermark appeared, so it moved too
    first = {("support", "web"): LastEmit(at=NOW - timedelta(minutes=5), since=None, new_records=300)}
    assert one(count(300), last_emits=first).action is Action.EMIT


def test_cooldown_is_per_workload_and_client() -> None:
    last = {("support", "web"): LastEmit(at=NOW, since=MARK, new_records=300)}
    decisions = decide(
        [count(300), count(300, client="mobile"), count(300, workload="billing")],
        threshold=200,
        cooldown=HOUR,
        last_emits=last,
        now=NOW,
    )
    assert [d.action for d in decisions] == [Action.COOLDOWN, Action.EMIT, Action.EMIT]


def test_an_active_run_holds_back_the_event_even_without_cooldown() -> None:
    decision = one(count(1000), cooldown=timedelta(0), active={("support", "web")})
    assert decision.action is Action.RUN_ACTIVE
    assert one(count(1000), active={("support", "mobile")}).action is Action.EMIT


def test_zero_cooldown_always_re_emits() -> None:
    last = {("support", "web"): LastEmit(at=NOW, since=MARK, new_records=300)}
    assert one(count(300), cooldown=timedelta(0), last_emits=last).action is Action.EMIT


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        decide([], threshold=0, cooldown=HOUR, last_emits={}, now=NOW)
    with pytest.raises(ValueError, match="cooldown"):
        decide([], threshold=1, cooldown=-HOUR, last_emits={}, now=NOW)


# --------------------------------------------------------------------------------------------------
# the event
# --------------------------------------------------------------------------------------------------


def test_event_resource_and_payload() -> None:
    decision = one(count(240))
    resource = event_resource(decision.count)
    assert resource["prefect.resource.id"] == "flywheel.workload.support"
    assert resource["flywheel.client_id"] == "web"
    assert all(isinstance(v, str) for v in resource.values())
    payload = event_payload(decision, NOW)
    assert payload == {
        "workload_id": "support",
        "client_id": "web",
        "new_records": 240,
        "total_records": 740,
        "threshold": 200,
        "window": {"since": "2026-03-01T09:00:00Z", "until": "2026-03-01T12:00:00Z"},
        "detected_at": "2026-03-01T12:00:00Z",
    }
    assert decision.as_row()["action"] == "emit"


def _deployment(flow_file: str, name: str) -> dict[str, Any]:
    data = yaml.safe_load(PREFECT_YAML.read_text())
    matches = [d for d in data["deployments"] if d["name"] == name and d["entrypoint"].startswith(flow_file)]
    assert len(matches) == 1, (flow_file, name)
    return dict(matches[0])


def test_prefect_yaml_trigger_matches_the_event_and_fills_the_flywheel_parameters() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.events.schemas.events import Resource, ResourceSpecification

    deployment = _deployment("flows/flywheel.py", "on-new-traffic")
    (spec,) = deployment["triggers"]
    trigger = DeploymentEventTrigger.model_validate(spec)  # Prefect's own schema accepts it
    decision = one(count(300))
    resource = event_resource(decision.count)
    assert EVENT_NAME in trigger.expect
    assert ResourceSpecification(spec["match"]).matches(Resource(resource))
    assert all(label in resource for label in trigger.for_each)  # one bucket per workload and client
    assert trigger.within >= timedelta(minutes=15)  # longer than a watch interval: a repeat is dropped

    event = {"payload": event_payload(decision, NOW), "resource": resource}
    rendered = {k: jinja2.Template(v).render(event=event) for k, v in (trigger.parameters or {}).items()}
    assert rendered == {"workload_id": "support", "client_id": "web"}


def test_prefect_yaml_deployments_and_concurrency_choices() -> None:
    data = yaml.safe_load(PREFECT_YAML.read_text())
    found = {(d["entrypoint"].split(":")[1], d["name"]): d for d in data["deployments"]}
    assert set(found) == {
        ("flywheel", "nightly"),
        ("flywheel", "on-new-traffic"),
        ("traffic_watch", "every-15m"),
        ("rollout_check", "on-promotion"),
        ("scaling", "manual"),
        ("rollout_check", "manual"),
        ("reaper", "every-10m"),
        ("flywheel_cleanup", "weekly"),
        ("flywheel_cleanup", "manual"),
    }
    strategy = {key: d["concurrency_limit"]["collision_strategy"] for key, d in found.items()}
    assert all(d["concurrency_limit"]["limit"] == 1 for d in found.values())
    # repeatable signals drop the extra run, one-off signals queue it (docs/operations.md)
    assert strategy[("flywheel", "nightly")] == strategy[("traffic_watch", "every-15m")] == "CANCEL_NEW"
    assert strategy[("flywheel", "on-new-traffic")] == strategy[("rollout_check", "on-promotion")] == "ENQUEUE"
    assert strategy[("flywheel_cleanup", "weekly")] == "CANCEL_NEW"
    assert strategy[("flywheel_cleanup", "manual")] == "ENQUEUE"
    assert found[("flywheel_cleanup", "weekly")]["parameters"]["older_than"] == "30d"
    assert found[("flywheel_cleanup", "manual")]["parameters"]["apply_changes"] is False  # a dry run unless asked
    assert {d["work_pool"]["name"] for d in found.values()} == {"flywheel-local"}
    assert found[("flywheel", "nightly")]["schedules"][0]["cron"]
    assert found[("traffic_watch", "every-15m")]["schedules"][0]["interval"] == 900
    assert strategy[("reaper", "every-10m")] == "CANCEL_NEW"
    assert found[("reaper", "every-10m")]["schedules"][0]["interval"] == 600
    # the reaper tells a dead run by its stopped heartbeats: every run of the pool sends them
    assert all(d["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] for d in found.values())
    for d in found.values():
        config = d["parameters"].get("config_path")
        assert config is None or (PREFECT_YAML.parent / config).is_file()


def test_traffic_watch_deployment_parameters_exist_on_the_flow() -> None:
    import inspect

    from flows.traffic_watch import traffic_watch

    parameters = inspect.signature(traffic_watch.fn).parameters
    assert traffic_watch.name == "traffic-watch"
    assert set(_deployment("flows/traffic_watch.py", "every-15m")["parameters"]) <= set(parameters)


# --------------------------------------------------------------------------------------------------
# survey and the emit log
# --------------------------------------------------------------------------------------------------


def test_survey_counts_since_each_watermark(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = [
        WorkloadStats("support", "web", 900, NOW),
        WorkloadStats("support", "mobile", 40, NOW),
        WorkloadStats("billing", "web", 300, NOW - HOUR),
    ]
    asked: list[tuple[str, str, Any]] = []

    shape = IndexShape.own("flywheel")

    def fake_count(es: Any, index: str, workload_id: str, client_id: str, since: Any, shape: Any) -> int:
        asked.append((workload_id, client_id, since))
        return 120

    monkeypatch.setattr(tw, "list_workloads", lambda es, index, shape: stats)
    monkeypatch.setattr(tw, "count_since", fake_count)
    marks = MemoryWatermarkStore()
    marks.set("support", "web", Watermark(MARK, frozenset({"a"})))

    counts = survey(object(), "flywheel", marks, shape=shape)  # type: ignore[arg-type]
    assert [(c.workload_id, c.client_id, c.new_records, c.since) for c in counts] == [
        ("support", "web", 120, MARK),  # since the watermark
        ("support", "mobile", 40, None),  # never read: everything is new
        ("billing", "web", 300, None),
    ]
    assert asked == [("support", "web", Watermark(MARK, frozenset({"a"})))]
    assert [c.workload_id for c in survey(object(), "flywheel", marks, ["billing"], shape)] == ["billing"]  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _default_state_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """State names as an installation without FLYWHEEL_STATE_PREFIX makes them (the tests' harness sets one)."""
    monkeypatch.delenv("FLYWHEEL_STATE_PREFIX", raising=False)


def test_emit_log_round_trip_keeps_other_pairs(tmp_path: Path) -> None:
    log = EmitLog(FileStateStore(tmp_path / "state"))
    keys = [("support", "web"), ("billing", "web")]
    assert log.load(keys) == {}
    first = LastEmit(at=NOW, since=MARK, new_records=250)
    log.record({("support", "web"): first})
    second = LastEmit(at=NOW + HOUR, since=None, new_records=9)
    log.record({("billing", "web"): second})
    again = EmitLog(FileStateStore(tmp_path / "state"))  # another worker, the same state
    assert again.load(keys) == {("support", "web"): first, ("billing", "web"): second}
    assert again.load([("support", "web")]) == {("support", "web"): first}
    log.record({})  # nothing emitted: nothing written
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "flywheel-cooldown-billing--web.json",
        "flywheel-cooldown-support--web.json",
    ]


def test_emit_log_unreadable_documents_read_as_no_event(tmp_path: Path) -> None:
    state = FileStateStore(tmp_path)
    log = EmitLog(state)
    (tmp_path / f"{log.name(('support', 'web'))}.json").write_text("{not json")
    state.set(log.name(("support", "api")), {"at": "garbage"})
    state.set(log.name(("support", "mobile")), {"at": "2026-03-01T12:00:00Z"})
    keys = [("support", "web"), ("support", "api"), ("support", "mobile")]
    assert log.load(keys) == {("support", "mobile"): LastEmit(at=NOW, since=None, new_records=0)}
