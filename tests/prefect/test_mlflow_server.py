"""The MLflow block against a real ``mlflow server``: artifacts go through the server, credentials reach it.

The server runs with its own artifact destination (proxied artifacts, ``mlflow-artifacts:/``), in a directory
that is neither the test's nor the client's current directory; the client runs from a directory of its own, and
nothing may land there. In front of it an authenticating gateway (as a company's ingress) lets through only the
block's token or basic-auth login, so a run that completes proves the credentials went with every request,
artifact uploads included.

The server's store is PostgreSQL with a password login where PostgreSQL is installed (as companies run MLflow),
else SQLite; the tests of a worker on the PostgreSQL store itself (the block's ``tracking_uri`` a
``postgresql://`` URI) skip without it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from agent_flywheel.tracking import flywheel_experiment
from agent_flywheel.tracking_artifacts import ArtifactLocationError
from agent_flywheel.tracking_credentials import PASSWORD_VARIABLE, TOKEN_VARIABLE, USERNAME_VARIABLE
from blocks.mlflow_tracking import MlflowTracking
from tests.support import postgres
from tests.support.auth_gateway import AuthGateway
from tests.support.mlflow_server import MlflowServer, running_mlflow_server
from tests.support.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.integration

TOKEN = "mlflow-token-7f3a"
USER, PASSWORD = "flywheel", "pw-basic-91"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
DATABASE_PASSWORD = "pg-pw-5e2b"


@pytest.fixture(scope="module")
def database() -> Iterator[PostgresServer | None]:
    """The tracking server's PostgreSQL store, or None (SQLite) where PostgreSQL is not installed."""
    if postgres.missing() is not None:
        yield None
        return
    with running_postgres(DATABASE_PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, database: PostgresServer | None) -> Iterator[MlflowServer]:
    root = tmp_path_factory.mktemp("mlflow-server")
    store = database.uri() if database is not None else f"sqlite:///{root / 'mlflow.db'}"
    with running_mlflow_server(root, store) as server:
        yield server


@pytest.fixture
def postgresql(database: PostgresServer | None) -> PostgresServer:
    """The PostgreSQL store (the test skips without one)."""
    if database is None:
        pytest.skip(postgres.missing() or "no PostgreSQL")
    return database


@pytest.fixture
def client_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's own working directory, where MLflow's default would have put ``./mlruns``."""
    cwd = tmp_path / "worker"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for name in (TOKEN_VARIABLE, USERNAME_VARIABLE, PASSWORD_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    return cwd


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_artifacts_go_through_the_server_with_the_token(
    mlflow_server: MlflowServer, client_cwd: Path, tmp_path: Path
) -> None:
    with AuthGateway(mlflow_server.url, {f"Bearer {TOKEN}"}) as gateway:
        block = MlflowTracking(tracking_uri=gateway.url, token=SecretStr(TOKEN))
        tracker = block.get_tracker()
        run_id = tracker.start_run(flywheel_experiment("secured"), "parent", tags={"workload_id": "secured"})
        tracker.log(run_id, params={"teacher": "meta/llama"}, metrics={"score": 0.5})
        tracker.log_json(run_id, "manifest.json", {"records": 3})
        card = tmp_path / "card.txt"
        card.write_text("candidate card")
        tracker.log_file(run_id, card, "candidate")
        tracker.end_run(run_id)
        run = tracker.client.get_run(run_id)

    assert gateway.seen and all(header == f"Bearer {TOKEN}" for header in gateway.seen)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    landed = _files(mlflow_server.artifacts)
    assert {p.name for p in landed} >= {"manifest.json", "card.txt"}
    assert all(run_id in p.parts for p in landed if p.name in ("manifest.json", "card.txt"))
    assert _files(client_cwd) == [] and not (client_cwd / "mlruns").exists()
    assert TOKEN_VARIABLE not in os.environ  # set only while the calls ran
    assert TOKEN not in str(run.data.params) + str(run.data.tags) + repr(tracker.client)


def test_basic_auth_credentials_reach_the_server(mlflow_server: MlflowServer, client_cwd: Path) -> None:
    with AuthGateway(mlflow_server.url, {BASIC}) as gateway:
        tracker = MlflowTracking(tracking_uri=gateway.url, username=USER, password=SecretStr(PASSWORD)).get_tracker()
        run_id = tracker.start_run(flywheel_experiment("basic"), "parent")
        tracker.log_text(run_id, "hello", "notes.txt")
    assert gateway.seen and set(gateway.seen) == {BASIC}
    assert any(p.name == "notes.txt" and run_id in p.parts for p in _files(mlflow_server.artifacts))
    assert USERNAME_VARIABLE not in os.environ and PASSWORD_VARIABLE not in os.environ


def test_without_the_token_the_gateway_refuses_and_no_run_is_made(
    mlflow_server: MlflowServer, client_cwd: Path
) -> None:
    with AuthGateway(mlflow_server.url, {f"Bearer {TOKEN}"}) as gateway:
        tracker = MlflowTracking(tracking_uri=gateway.url).get_tracker()
        with pytest.raises(MlflowException) as refused:
            tracker.start_run(flywheel_experiment("refused"), "parent")
    assert "401" in str(refused.value)
    assert gateway.seen and all(header is None for header in gateway.seen)


def test_an_experiment_with_artifacts_on_the_workers_disk_is_refused_before_a_run(
    mlflow_server: MlflowServer, client_cwd: Path, tmp_path: Path
) -> None:
    tracker = MlflowTracking(tracking_uri=mlflow_server.url).get_tracker()
    local = tmp_path / "on-the-worker"
    tracker.client.create_experiment("flywheel/local-artifacts", artifact_location=local.as_uri())
    with pytest.raises(ArtifactLocationError) as refused:
        tracker.start_run("flywheel/local-artifacts", "parent")
    message = str(refused.value)
    assert "\n" not in message and "flywheel/local-artifacts" in message and "--artifacts-destination" in message
    experiment = tracker.client.get_experiment_by_name("flywheel/local-artifacts")
    assert experiment is not None and tracker.client.search_runs([experiment.experiment_id]) == []


def _runs_in(database: PostgresServer) -> set[str]:
    """The ids of the runs MLflow keeps in the PostgreSQL store."""
    with psycopg2.connect(database.uri(), connect_timeout=30) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_uuid FROM runs")
        return {str(row[0]) for row in cursor.fetchall()}


def _on_the_database(database: PostgresServer, artifact_root: Path) -> MlflowTracking:
    """The block of a worker that tracks straight into the PostgreSQL store, its login in the secret fields."""
    return MlflowTracking(
        tracking_uri=database.uri(with_login=False),
        username=database.user,
        password=SecretStr(database.password),
        artifact_root=artifact_root.as_uri(),
    )


def test_with_a_postgresql_store_artifacts_land_on_the_server(
    postgresql: PostgresServer, mlflow_server: MlflowServer, client_cwd: Path
) -> None:
    tracker = MlflowTracking(tracking_uri=mlflow_server.url).get_tracker()
    run_id = tracker.start_run(flywheel_experiment("pg-server"), "parent")
    tracker.log_json(run_id, "manifest.json", {"records": 3})
    tracker.end_run(run_id)

    assert run_id in _runs_in(postgresql)
    assert tracker.client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    assert any(p.name == "manifest.json" and run_id in p.parts for p in _files(mlflow_server.artifacts))
    assert _files(client_cwd) == []


def test_a_worker_on_the_postgresql_store_puts_artifacts_under_the_artifact_root_the_server_serves(
    postgresql: PostgresServer, mlflow_server: MlflowServer, client_cwd: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "artifact-store"  # stands for the bucket (s3://...) the server reads too
    tracker = _on_the_database(postgresql, shared).get_tracker()
    run_id = tracker.start_run(flywheel_experiment("pg-direct"), "parent")
    tracker.log_json(run_id, "manifest.json", {"records": 3})
    tracker.end_run(run_id)

    assert run_id in _runs_in(postgresql)
    assert any(p.name == "manifest.json" and run_id in p.parts for p in _files(shared))
    assert _files(client_cwd) == [] and not (client_cwd / "mlruns").exists()
    served = httpx.get(
        f"{mlflow_server.url}/get-artifact", params={"path": "manifest.json", "run_uuid": run_id}, timeout=60
    )
    assert served.status_code == 200 and served.json() == {"records": 3}
    assert postgresql.password not in repr(tracker.client)


def test_a_worker_on_the_postgresql_store_refuses_an_experiment_behind_the_servers_artifact_proxy(
    postgresql: PostgresServer, mlflow_server: MlflowServer, client_cwd: Path, tmp_path: Path
) -> None:
    name = flywheel_experiment("pg-proxied")
    MlflowTracking(tracking_uri=mlflow_server.url).get_tracker().experiment_id(name)  # made by the server
    tracker = _on_the_database(postgresql, tmp_path / "artifact-store").get_tracker()
    runs_before = _runs_in(postgresql)
    with pytest.raises(ArtifactLocationError) as refused:
        tracker.start_run(name, "parent")
    message = str(refused.value)
    assert "\n" not in message and name in message and "mlflow-artifacts:/" in message
    assert postgresql.password not in message
    assert _runs_in(postgresql) == runs_before
