"""Where MLflow artifacts go for each kind of tracking URI, and credentials set only while calls run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agent_flywheel.tracking import Tracker
from agent_flywheel.tracking_artifacts import (
    ArtifactLocationError,
    artifact_root,
    check_artifact_location,
    public_uri,
    store_kind,
    with_database_login,
)
from agent_flywheel.tracking_credentials import TOKEN_VARIABLE, CredentialLease, MlflowCredentials

LOCAL = Path("/srv/flywheel/mlartifacts")
PG = "postgresql://mlflow@db.internal:5432/mlflow"


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("sqlite:////tmp/mlflow.db", "local"),
        ("/tmp/mlruns", "local"),
        ("file:///tmp/mlruns", "local"),
        (PG, "database"),
        ("postgresql+psycopg2://u@db/mlflow", "database"),
        ("mysql://u@db/mlflow", "database"),
        ("https://mlflow.example", "server"),
        ("databricks", "server"),
    ],
)
def test_store_kinds(uri: str, kind: str) -> None:
    assert store_kind(uri) == kind


def test_new_experiments_artifact_root_by_store() -> None:
    assert artifact_root("sqlite:////tmp/m.db", None, lambda: LOCAL) == LOCAL.as_uri()
    assert artifact_root("https://mlflow.example", None, lambda: LOCAL) is None  # the server decides
    assert artifact_root(PG, "s3://bucket/flywheel/", lambda: LOCAL) == "s3://bucket/flywheel"
    assert artifact_root("https://mlflow.example", "s3://b/p", lambda: LOCAL) == "s3://b/p"


def test_a_database_without_an_artifact_root_is_refused_in_one_line_without_its_password() -> None:
    with pytest.raises(ArtifactLocationError) as refused:
        artifact_root("postgresql://mlflow:s3cret@db/mlflow", None, lambda: LOCAL)
    message = str(refused.value)
    assert "\n" not in message and "./mlruns" in message and "artifact_root" in message
    assert "s3cret" not in message and "postgresql://mlflow:***@db/mlflow" in message


def test_a_servers_artifact_proxy_as_the_artifact_root_of_a_database_is_refused() -> None:
    with pytest.raises(ArtifactLocationError, match="through that server"):
        artifact_root(PG, "mlflow-artifacts://mlflow.internal:5000/flywheel", lambda: LOCAL)
    assert artifact_root("https://mlflow.example", "mlflow-artifacts:/flywheel", lambda: LOCAL) == (
        "mlflow-artifacts:/flywheel"
    )


def test_a_relative_artifact_root_is_refused() -> None:
    with pytest.raises(ArtifactLocationError, match="relative path"):
        artifact_root(PG, "mlruns", lambda: LOCAL)


def test_the_tracker_refuses_a_database_without_artifact_root_before_connecting() -> None:
    with pytest.raises(ArtifactLocationError):
        Tracker("postgresql://nobody@127.0.0.1:1/none")


@pytest.mark.parametrize(
    ("location", "tracking", "configured", "refused"),
    [
        ("file:///work/mlruns/1", "https://mlflow.example", None, True),
        ("/work/mlruns/1", PG, "s3://b/p", True),
        ("mlflow-artifacts:/1", "https://mlflow.example", None, False),
        ("s3://b/p/flywheel_w", PG, "s3://b/p", False),
        ("file:///shared/mlartifacts/flywheel_w", PG, "/shared/mlartifacts", False),
        ("file:///shared/mlartifacts-old/x", PG, "/shared/mlartifacts", True),
        ("file:///home/me/.flywheel/mlartifacts/x", "sqlite:////home/me/.flywheel/mlflow.db", None, False),
        ("mlflow-artifacts:/1", PG, "s3://b/p", True),  # a server's proxy: not reachable from the database
    ],
)
def test_experiments_with_artifacts_on_the_workers_disk(
    location: str, tracking: str, configured: str | None, refused: bool
) -> None:
    if refused:
        with pytest.raises(ArtifactLocationError):
            check_artifact_location("flywheel/w", location, tracking, configured)
    else:
        check_artifact_location("flywheel/w", location, tracking, configured)


def test_database_login_and_public_uri() -> None:
    uri = with_database_login(PG, None, "p@ss:w/rd")
    assert uri == "postgresql://mlflow:p%40ss%3Aw%2Frd@db.internal:5432/mlflow"
    assert public_uri(uri) == "postgresql://mlflow:***@db.internal:5432/mlflow"
    assert with_database_login("postgresql://db/m", "svc", "x") == "postgresql://svc:x@db/m"


def test_credentials_are_set_while_held_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, "operator-token")
    lease = CredentialLease()
    credentials = MlflowCredentials(token="block-token", username="u", password="p")
    assert "block-token" not in repr(credentials) and "'p'" not in repr(credentials)
    with lease.hold(credentials.environment()):
        assert os.environ[TOKEN_VARIABLE] == "block-token"
        with lease.hold(credentials.environment()):  # the same credentials share it
            assert os.environ["MLFLOW_TRACKING_USERNAME"] == "u"
    assert os.environ[TOKEN_VARIABLE] == "operator-token" and "MLFLOW_TRACKING_USERNAME" not in os.environ
    with lease.hold({}):  # none of its own: the operator's variables stay
        assert os.environ[TOKEN_VARIABLE] == "operator-token"


def test_other_credentials_wait_until_the_lease_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    lease = CredentialLease()
    held, release, seen = threading.Event(), threading.Event(), []

    def holder() -> None:
        with lease.hold({TOKEN_VARIABLE: "a"}):
            held.set()
            release.wait(30)
            seen.append(("a-done", os.environ.get(TOKEN_VARIABLE)))

    def other() -> None:
        with lease.hold({}):  # no token: must never run while "a" is set
            seen.append(("none", os.environ.get(TOKEN_VARIABLE)))

    first = threading.Thread(target=holder)
    first.start()
    assert held.wait(30)
    second = threading.Thread(target=other)
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting for the holder
    release.set()
    first.join(30)
    second.join(30)
    assert seen == [("a-done", "a"), ("none", None)]
