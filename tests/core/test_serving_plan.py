"""Which models a run needs served besides its candidates, in which phase, and which it deploys itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_flywheel.config import FlywheelConfig, parse_config
from agent_flywheel.nemo.cleanup import CleanupScope, parse_age
from agent_flywheel.nemo.serving import required_models

TEACHER = "meta/llama-3.3-70b-instruct"
EMBEDDER = "nvidia/llama-3.2-nv-embedqa-1b-v2"


def cfg(**sections: Any) -> FlywheelConfig:
    return parse_config({"nims": [{"model_name": "meta/llama-3.2-1b-instruct"}], **sections}, FlywheelConfig, "test")


def test_the_default_judge_is_the_teachers_model_and_is_deployed_once() -> None:
    (model,) = required_models(cfg())
    assert (model.model_name, model.roles, model.deploy, model.phase) == (
        TEACHER,
        ("teacher", "judge"),
        True,
        "evaluation",
    )
    assert model.gpus == 4
    body = model.deployment_body("ns", "for a test")
    assert body["config"]["model"] == TEACHER and body["config"]["nim_deployment"]["gpu"] == 4
    assert body["config"]["nim_deployment"]["additional_envs"] == {"NIM_GUIDED_DECODING_BACKEND": "outlines"}


def test_a_served_teacher_with_a_remote_judge_must_be_served_already() -> None:
    remote = {"deployment_type": "remote", "model_name": "j", "url": "https://judge.test"}
    (model,) = required_models(cfg(llm_judge_config=remote))
    assert (model.model_name, model.roles, model.deploy) == (TEACHER, ("teacher",), False)
    (deployed,) = required_models(
        cfg(llm_judge_config=remote, teacher={"model_name": TEACHER, "deployment_type": "local", "tag": "1.8.5"})
    )
    assert deployed.deploy and deployed.tag == "1.8.5"


def test_a_local_embedding_model_is_deployed_for_the_dataset_build() -> None:
    icl = {
        "example_selection": "semantic_similarity",
        "similarity_config": {"embedding_nim_config": {"deployment_type": "local", "model_name": EMBEDDER, "gpus": 1}},
    }
    config = cfg(icl_config=icl)
    (embedding,) = required_models(config, "datasets")
    assert (embedding.model_name, embedding.deploy, embedding.model_type) == (EMBEDDER, True, "embedding")
    assert "additional_envs" not in embedding.deployment_body("ns", "x")["config"]["nim_deployment"]
    assert [m.model_name for m in required_models(config, "evaluation")] == [TEACHER]
    assert len(required_models(config)) == 2


def test_the_judge_is_left_out_only_when_nothing_needs_it() -> None:
    judge = {"deployment_type": "local", "model_name": "other/judge"}
    off = cfg(llm_judge_config=judge, evaluation_config={"judge_enabled": False})
    assert [m.model_name for m in required_models(off, tool_calling=True)] == [TEACHER]
    assert [m.model_name for m in required_models(off, tool_calling=False)] == [TEACHER, "other/judge"]  # similarity
    assert [m.model_name for m in required_models(off)] == [TEACHER, "other/judge"]  # not known yet: checked


def test_ages_and_cleanup_scopes() -> None:
    assert parse_age("7d") == timedelta(days=7) and parse_age("12h") == timedelta(hours=12)
    assert parse_age(" 1.5w ") == timedelta(weeks=1.5) and parse_age("90s") == timedelta(seconds=90)
    for bad in ("7", "d", "7 days", "-1d"):
        with pytest.raises(ValueError, match="not an age"):
            parse_age(bad)
    with pytest.raises(ValueError, match="say what to clean up"):
        CleanupScope("ns")
    now = datetime(2025, 6, 10, tzinfo=UTC)
    by_age = CleanupScope("ns", older_than=timedelta(days=7), now=now)
    assert by_age.reason("2025-06-01T00:00:00", "run-a") is not None
    assert by_age.reason("2025-06-05T00:00:00Z", "run-a") is None
    assert by_age.reason(None, "run-a") is None  # no age known: never picked by age
    by_run = CleanupScope("ns", run_id="run-a", now=now)
    assert by_run.reason("2025-06-09T00:00:00", "run-a") == "created by run run-a"
    assert by_run.reason("2025-06-09T00:00:00", "run-b") is None
    both = CleanupScope("ns", run_id="run-a", older_than=timedelta(days=7), now=now)
    assert both.reason("2025-06-09T00:00:00", "run-a") is None
    assert both.reason("2025-06-01T00:00:00", "run-a") is not None
