"""Blocks build their clients, and a block that was not saved is an error that says how to create it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.nemo.client import NemoEndpoints
from agent_flywheel.tracking_artifacts import ArtifactLocationError
from blocks.log_store import LogStore
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform
from blocks.resolve import BlockNotFoundError, load_block

KEY = "sk-block-test-key"


def test_the_platform_block_builds_a_client_of_its_own_services() -> None:
    platform = NemoPlatform(
        entity_store_url="http://entities.test",
        customizer_url="http://customizer.test",
        evaluator_url="http://evaluator.test/",
        deployment_url="http://dms.test",
        datastore_url="http://datastore.test",
        nim_url="http://nim.test",
        api_key=SecretStr(KEY),
        max_retries=7,
    )
    client = platform.get_client()
    assert client.endpoints == NemoEndpoints(
        "http://entities.test",
        "http://customizer.test",
        "http://evaluator.test/",
        "http://dms.test",
        "http://datastore.test",
        "http://nim.test",
    )
    assert client.evaluator.http.base_url == "http://evaluator.test"
    assert client.evaluator.http.retry.max_retries == 7
    assert client.nim.http.client.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(client) and KEY not in repr(platform)


def test_the_log_store_block_names_its_url_without_credentials_and_masks_its_secrets() -> None:
    store = LogStore(url="https://reader:pw-123@es.test:9200", password=SecretStr("pw-123"), api_key=SecretStr("k-9"))
    assert store.public_url() == "https://es.test:9200"
    assert store.redact("auth pw-123 and k-9 refused") == "auth *** and *** refused"
    client = store.get_client()
    assert isinstance(client, ElasticsearchClient)
    assert client.es.transport.node_pool.all()[0].base_url == "https://es.test:9200"


def test_the_mlflow_block_builds_a_tracker_on_its_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracking(tracking_uri=uri).get_tracker()
    assert tracker.tracking_uri == uri
    run_id = tracker.start_run("flywheel/w", "parent")
    assert tracker.client.get_run(run_id).info.run_name == "parent"


@pytest.mark.integration
def test_a_saved_block_loads_and_a_missing_one_says_how_to_create_it() -> None:
    LogStore(url="http://saved.test:9200", index="saved").save("block-test", overwrite=True)
    assert load_block(LogStore, "block-test").url == "http://saved.test:9200"
    with pytest.raises(BlockNotFoundError) as missing:
        load_block(NemoPlatform, "never-saved")
    message = str(missing.value)
    assert "nemo-platform block named 'never-saved'" in message
    assert "flywheel blocks register" in message and "NemoPlatform(...).save('never-saved')" in message


@pytest.mark.integration
def test_flywheel_run_with_a_missing_block_is_one_line_before_any_flow_run() -> None:
    from cli.main import app

    blocks = ["--nemo-block", "never-saved", "--log-store-block", "never-saved", "--mlflow-block", "never-saved"]
    result = CliRunner().invoke(app, ["run", "--workload-id", "w", "--client-id", "c", *blocks])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no "), result.output
    assert "block named 'never-saved'" in lines[0]


def test_the_mlflow_block_keeps_a_database_password_in_its_secret_field() -> None:
    with pytest.raises(ValueError, match="password field"):
        MlflowTracking(tracking_uri="postgresql://mlflow:pw@db/mlflow", artifact_root="s3://b/p").get_tracker()
    with pytest.raises(ArtifactLocationError, match="artifact_root"):
        MlflowTracking(tracking_uri="postgresql://mlflow@db/mlflow", password=SecretStr("pw")).get_tracker()
