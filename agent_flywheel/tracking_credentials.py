"""Credentials for a secured MLflow server, handed to MLflow the one way it reads them: the environment.

MLflow's REST stores and artifact repositories read ``MLFLOW_TRACKING_TOKEN`` (sent as
``Authorization: Bearer``) and ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (basic auth, as
MLflow's ``basic-auth`` app wants) from ``os.environ`` at every request; there is no per-client setting.
So a tracker's calls run inside a :class:`CredentialLease`: the variables are set for the duration of the
call and restored after it. Calls with the same credentials run concurrently (Prefect runs tasks in
threads); a call with other credentials, or with none, waits until they are done, so a secret is never
sent to a server it was not meant for. Variables set on the process by the operator are left alone when a
tracker has none of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

from mlflow.tracking import MlflowClient

from agent_flywheel.tracking_artifacts import public_uri

TOKEN_VARIABLE = "MLFLOW_TRACKING_TOKEN"
USERNAME_VARIABLE = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"


@dataclasses.dataclass(frozen=True)
class MlflowCredentials:
    """What a secured tracking server wants: a bearer token, or a username and password (basic auth)."""

    token: str | None = dataclasses.field(default=None, repr=False)
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def environment(self) -> dict[str, str]:
        """The MLflow environment variables these credentials set (only those given)."""
        values = {TOKEN_VARIABLE: self.token, USERNAME_VARIABLE: self.username, PASSWORD_VARIABLE: self.password}
        return {name: value for name, value in values.items() if value}


class CredentialLease:
    """Sets MLflow's credential variables while calls that need them run, and restores them after.

    Holders with the same variables share the lease; others wait until it is free (see the module).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._holder: tuple[tuple[str, str], ...] | None = None
        self._holders = 0
        self._saved: dict[str, str | None] = {}

    @contextmanager
    def hold(self, environment: Mapping[str, str]) -> Iterator[None]:
        """Run the block with ``environment`` set (waiting while others hold other variables)."""
        key = tuple(sorted(environment.items()))
        with self._changed:
            while self._holders and self._holder != key:
                self._changed.wait()
            if not self._holders:
                self._holder = key
                self._saved = {name: os.environ.get(name) for name in environment}
                os.environ.update(environment)
            self._holders += 1
        try:
            yield
        finally:
            with self._changed:
                self._holders -= 1
                if not self._holders:
                    for name, value in self._saved.items():
                        if value is None:
                            os.environ.pop(name, None)
                        else:
                            os.environ[name] = value
                    self._holder = None
                    self._saved = {}
                    self._changed.notify_all()


#: One lease per process: the environment is the process's.
LEASE = CredentialLease()


class _CredentialedClient:
    """An ``MlflowClient`` whose every method call runs while the lease holds its credentials."""

    def __init__(self, client: MlflowClient, environment: Mapping[str, str]) -> None:
        self._client = client
        self._environment = dict(environment)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            with LEASE.hold(self._environment):
                return attribute(*args, **kwargs)

        return call

    def __repr__(self) -> str:
        return f"<MlflowClient {public_uri(self._client.tracking_uri)} with credentials>"  # a database login masked


def credentialed_client(
    tracking_uri: str, registry_uri: str | None, credentials: MlflowCredentials | None
) -> MlflowClient:
    """An MLflow client for ``tracking_uri`` whose calls carry ``credentials`` (none: the process's own).

    The returned object is used as an ``MlflowClient`` (every method is the client's, run under the lease).
    """
    environment = credentials.environment() if credentials is not None else {}
    with LEASE.hold(environment):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    return cast(MlflowClient, _CredentialedClient(client, environment))
