"""Names derived from any workload id are valid for every service, stable, distinct, and keep the id elsewhere."""

from __future__ import annotations

import re

import pytest
from huggingface_hub.utils import HFValidationError, validate_repo_id
from hypothesis import given
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_model_name

from agent_flywheel.config import NIMConfig
from agent_flywheel.nemo import names
from agent_flywheel.nemo import payloads as p
from agent_flywheel.nemo.idempotency import IdempotencyKey

DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

AWKWARD_IDS = [
    "<workflow>",  # NeMo Agent Toolkit's default workload id
    "customer-support",
    "a/b",
    "a-b",
    "a--b..c",
    "Support Bot (EU)",
    "日本語のエージェント",
    "-leading.and.trailing-",
    ".git",
    "x" * 256,
    "🙂",
]


def assert_valid_repo_name(name: str, namespace: str = "dfwbp") -> None:
    validate_repo_id(f"{namespace}/{name}")  # raises HFValidationError
    assert len(name) <= 96


@pytest.mark.parametrize("workload_id", AWKWARD_IDS)
def test_every_derived_name_is_valid_for_every_service(workload_id: str) -> None:
    label = names.workload_label(workload_id)
    assert DNS_1123_LABEL.fullmatch(label) and len(label) <= 63
    for kind in ("eval", "train", "icl"):
        name = names.dataset_name(
            kind, workload_id, "0123456789ab", "meta/llama-3.2-1b-instruct" if kind == "icl" else None
        )
        assert_valid_repo_name(name)
        assert name.startswith(f"flywheel-{kind}-")
    job = names.customization_job_name(workload_id, "meta/llama-3.2-1b-instruct", "0123456789abcdef")
    assert DNS_1123_LABEL.fullmatch(job) and len(job) <= 63
    _validate_model_name(names.registered_model_name(workload_id))  # raises MlflowException


def test_nat_default_workload_id_no_longer_breaks_the_upload() -> None:
    """The run that crashed: ``'dfwbp/flywheel-eval-<workflow>-16c0a188bf77'`` is refused by huggingface_hub."""
    with pytest.raises(HFValidationError):
        validate_repo_id("dfwbp/flywheel-eval-<workflow>-16c0a188bf77")
    name = names.dataset_name("eval", "<workflow>", "16c0a188bf77")
    assert name == f"flywheel-eval-workflow-{names.short_hash('<workflow>')}-16c0a188bf77"
    assert_valid_repo_name(name)


@given(st.text(min_size=1, max_size=300))
def test_any_text_gives_valid_stable_names(workload_id: str) -> None:
    name = names.dataset_name("icl", workload_id, "abcdef012345", workload_id)
    assert_valid_repo_name(name)
    assert names.dataset_name("icl", workload_id, "abcdef012345", workload_id) == name
    assert DNS_1123_LABEL.fullmatch(names.customization_job_name(workload_id, workload_id, "ab12"))
    assert DNS_1123_SUBDOMAIN.fullmatch(names.deployment_name(workload_id))


def test_ids_with_the_same_slug_get_different_names() -> None:
    labels = {names.workload_label(w) for w in ("a/b", "a-b", "A B", "a_b", "a.b")}
    assert len(labels) == 5
    assert all(label.startswith("a-b-") for label in labels)


def test_model_names_keep_the_blueprints_form_when_valid() -> None:
    assert names.deployment_name("meta/llama-3.2-1b-instruct") == "meta-llama-3.2-1b-instruct"
    assert names.output_model_name("meta/llama-3.2-1b-instruct") == "customized-meta-llama-3.2-1b-instruct"
    odd = names.deployment_name("nvidia/Llama-3.1-Nemotron-Nano-8B-v1")
    assert DNS_1123_SUBDOMAIN.fullmatch(odd) and odd.startswith("nvidia-llama-3-1-nemotron-nano-8b-v1-")


def test_plain_workload_ids_keep_their_registered_model_name() -> None:
    assert names.registered_model_name("customer-support") == "flywheel-customer-support"
    assert names.registered_model_name("<workflow>") == "flywheel-<workflow>"
    assert names.registered_model_name("team/bot") == f"flywheel-{names.workload_label('team/bot')}"


def test_job_bodies_keep_the_original_workload_id() -> None:
    nim = NIMConfig(
        model_name="meta/llama-3.2-1b-instruct",
        customization_enabled=True,
        customizer_configs={"target": "meta/llama-3.2-1b-instruct@2.0"},
    )
    key = IdempotencyKey("0123456789abcdef")
    body = p.customization_job_body(nim, "dfwbp", "train", idempotency=key, workload_id="<workflow>")
    assert body["name"] == f"flywheel-{names.workload_label('<workflow>')}-0123456789ab"
    assert body["custom_fields"]["flywheel_workload_id"] == "<workflow>"
    evaluation = p.evaluation_job_body({}, "m", "dfwbp", workload_id="<workflow>")
    assert evaluation["custom_fields"]["flywheel_workload_id"] == "<workflow>"
