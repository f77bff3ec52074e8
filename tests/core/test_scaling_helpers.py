"""The pure helpers of the scaling lifecycle: inputs, request bodies, rollout observations, JSON safety, sweep files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent_flywheel.config import LoadSweepConfig, ProfileConfig
from agent_flywheel.scaling.inputs import load_inputs, request_body
from agent_flywheel.scaling.jsonable import frame_rows, json_safe
from agent_flywheel.scaling.loadgen.sweep import sweep_timeout_s
from agent_flywheel.scaling.reports import artifact_url
from agent_flywheel.scaling.rollout.traffic import observation_of
from agent_flywheel.scaling.sizing.sweeps import sweep_data


def test_default_inputs_are_the_demo_messages() -> None:
    inputs, problems = load_inputs(ProfileConfig())
    assert problems == [] and len(inputs) >= 3 and all(isinstance(i, str) and i for i in inputs)


def test_inputs_file_takes_strings_and_objects_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text('"Where is ORD-1?"\n{"message": "hi", "user_id": "u7"}\n\nnot json\n42\n')
    inputs, problems = load_inputs(ProfileConfig(inputs_file=str(path)))
    assert inputs == ["Where is ORD-1?", {"message": "hi", "user_id": "u7"}]  # a message; a whole body
    assert [p.split(": ")[0] for p in problems] == [f"{path}:4", f"{path}:5"]


def test_inputs_file_without_a_usable_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "inputs.jsonl"
    path.write_text("nope\n")
    with pytest.raises(ValueError, match="no usable input"):
        load_inputs(ProfileConfig(inputs_file=str(path)))
    with pytest.raises(ValueError, match="cannot read"):
        load_inputs(ProfileConfig(inputs_file=str(tmp_path / "missing.jsonl")))


def test_request_body_cycles_inputs_and_adds_a_user() -> None:
    inputs: list[str | dict[str, str]] = ["a", {"message": "b", "user_id": "fixed"}, {"query": "raw body"}]
    assert request_body(inputs, 3, "p") == {"message": "a", "user_id": "p-3"}
    assert request_body(inputs, 4, "p") == {"message": "b", "user_id": "fixed"}
    assert request_body(inputs, 5, "p") == {"query": "raw body"}  # not a chat body: left as it is


@pytest.mark.parametrize(
    ("status", "body", "variant", "ok"),
    [
        (200, {"route": "canary", "model": "small"}, "canary", True),
        (200, {"route": "baseline", "model": "big"}, "baseline", True),
        (200, {"model": "small"}, "canary", True),  # no route: the model says which arm
        (502, {"model": "small", "error": {}}, "canary", False),
        (502, {"model": "big", "error": {}}, "baseline", False),
        (None, None, "canary", False),  # a timeout names no model: it counts against the canary
        (500, "oops", "canary", False),
    ],
)
def test_observation_variant_and_outcome(status: int | None, body: object, variant: str, ok: bool) -> None:
    t, v, good, latency, quality = observation_of(1.5, status, body, 0.25, "small")
    assert (t, v, good, latency, quality) == (1.5, variant, ok, 0.25, None)


def test_json_safe_replaces_non_finite_and_numpy_values() -> None:
    data = {"a": math.inf, "b": [np.float64(1.5), np.int64(2), float("nan")], "c": {"d": (1, -math.inf)}}
    assert json_safe(data) == {"a": None, "b": [1.5, 2, None], "c": {"d": [1, None]}}
    json.dumps(json_safe(data), allow_nan=False)


def test_frame_rows_round_and_drop_nan() -> None:
    rows = frame_rows(pd.DataFrame({"x": [1.234567, float("nan")], "y": ["a", "b"]}), digits=2)
    assert rows == [{"x": 1.23, "y": "a"}, {"x": None, "y": "b"}]


def test_artifact_url_needs_a_ui() -> None:
    assert artifact_url(None, "r1", "profile/gantt.png") is None
    assert artifact_url("http://m:5000/", "r1", "profile/gantt.png") == (
        "http://m:5000/get-artifact?path=profile/gantt.png&run_uuid=r1"
    )


def test_sweep_timeout_bounds_every_request_timing_out() -> None:
    cfg = LoadSweepConfig(concurrencies=[1, 4], num_passes=2, requests_per_level=8, warmup_requests=0)
    rounds = (8 + 1) + (2 + 1)
    assert sweep_timeout_s(cfg, slack_s=0) == 2 * rounds * cfg.request_timeout_s


def test_sweep_data_uses_every_llm_call_when_the_calls_file_exists(tmp_path: Path) -> None:
    requests = pd.DataFrame(
        {
            "mode": "closed",
            "concurrency": [1, 1, 2, 2],
            "pass": [0, 0, 0, 0],
            "workflow_latency_s": [1.0, 1.1, 1.5, 1.6],
            "llm_latency_s": [0.5, 0.6, 0.9, 1.0],
            "ok": True,
        }
    )
    calls = pd.DataFrame(
        {
            "mode": "closed",
            "concurrency": [1, 1, 1, 2, 2, 2, 2],
            "pass": 0,
            "request": [0, 0, 1, 2, 2, 3, 3],
            "latency_s": [0.1, 0.5, 0.6, 0.2, 0.9, 0.3, 1.0],
        }
    )
    requests.to_csv(tmp_path / "requests.csv", index=False)
    calls.to_csv(tmp_path / "llm_calls.csv", index=False)
    without = sweep_data(tmp_path / "requests.csv")
    with_calls = sweep_data(tmp_path / "requests.csv", tmp_path / "llm_calls.csv")
    assert [len(np.concatenate(lv.llm)) for lv in without.levels] == [2, 2]  # the slowest call per request
    assert [len(np.concatenate(lv.llm)) for lv in with_calls.levels] == [3, 4]  # every call
    assert sweep_data(tmp_path / "requests.csv", tmp_path / "absent.csv").levels[0].llm[0].tolist() == [0.5, 0.6]
