"""Blueprint bug 6: per-job settings were read from the global config. Here each run's config is used."""

from __future__ import annotations

from agent_flywheel.config import FlywheelConfig, parse_config
from agent_flywheel.nemo.payloads import eval_config_for_run
from agent_flywheel.records.quarantine import Quarantined
from agent_flywheel.records.validation import validate_record

RECORD = {
    "timestamp": 1746138417,
    "workload_id": "w",
    "client_id": "c",
    "request": {"messages": [{"role": "user", "content": "hi"}]},
    "response": {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{not json"}}],
                }
            }
        ]
    },
}


def _cfg(**sections: object) -> FlywheelConfig:
    return parse_config({"nims": [{"model_name": "meta/llama-3.2-1b-instruct"}], **sections}, FlywheelConfig)


def test_blueprint_bug_6_eval_limit_comes_from_this_runs_config() -> None:
    url = "hf://datasets/ns/eval/eval_data.jsonl"
    small = eval_config_for_run(_cfg(evaluation_config={"limit": 7}), url, tool_calling=True)
    whole = eval_config_for_run(_cfg(), url, tool_calling=True)
    assert small["tasks"]["custom-tool-calling"]["dataset"]["limit"] == 7
    assert "limit" not in whole["tasks"]["custom-tool-calling"]["dataset"]


def test_blueprint_bug_6_tool_choice_and_judge_come_from_this_runs_config() -> None:
    url = "hf://datasets/ns/eval/eval_data.jsonl"
    cfg = _cfg(evaluation_config={"tool_choice": "required", "judge_enabled": False})
    task = eval_config_for_run(cfg, url, tool_calling=True)["tasks"]["custom-tool-calling"]
    assert task["params"]["template"]["tool_choice"] == "required"
    assert set(task["metrics"]) == {"tool-calling-accuracy"}


def test_blueprint_bug_6_parse_function_arguments_is_per_call() -> None:
    strict = validate_record(RECORD, source="line 1", parse_function_arguments=True)
    lenient = validate_record(RECORD, source="line 1", parse_function_arguments=False)
    assert isinstance(strict, Quarantined)
    assert strict.reason == "arguments_not_json"
    assert not isinstance(lenient, Quarantined)
