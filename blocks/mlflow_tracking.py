"""Where MLflow runs and registered models go, as a Prefect block."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agent_flywheel.paths import default_mlflow_uri
from agent_flywheel.tracking import Tracker
from agent_flywheel.tracking_artifacts import store_kind, with_database_login
from agent_flywheel.tracking_credentials import MlflowCredentials


class MlflowTracking(Block):
    """MLflow tracking and registry. The default is SQLite under .flywheel/, so the registry and aliases work.

    In production: ``tracking_uri`` is the MLflow server (``https://mlflow.example``), started with
    ``--artifacts-destination`` so artifacts go through it, with ``token`` (sent as ``Authorization: Bearer``)
    or ``username``/``password`` (MLflow's ``basic-auth`` app). A database URI (``postgresql://host/db``) works
    too, with ``artifact_root`` set (``s3://bucket/flywheel``) and the database's login in ``username``/``password``.
    """

    _block_type_name: ClassVar[str] = "MLflow Tracking"
    _block_type_slug: ClassVar[str] = "mlflow-tracking"
    _description: ClassVar[str] = "MLflow tracking URI, registry and UI link for flywheel and sizing runs."

    tracking_uri: str | None = Field(default=None, description="Default: sqlite:///<project>/.flywheel/mlflow.db")
    registry_uri: str | None = None
    ui_url: str | None = Field(
        default=None,
        description="Base URL of the MLflow UI, for links (none: runs are named by their runs:/ URI, images by path)",
    )
    token: SecretStr | None = Field(default=None, description="MLFLOW_TRACKING_TOKEN for a secured server")
    username: str | None = Field(
        default=None, description="MLFLOW_TRACKING_USERNAME (basic auth); for a database URI, its user"
    )
    password: SecretStr | None = Field(
        default=None, description="MLFLOW_TRACKING_PASSWORD (basic auth); for a database URI, its password"
    )
    artifact_root: str | None = Field(
        default=None,
        description="Where new experiments keep artifacts (s3://bucket/path ...); needed with a database URI. "
        "Default: the tracking server decides (proxied with --artifacts-destination), or .flywheel/ when local",
    )

    def resolved_tracking_uri(self) -> str:
        """The tracking URI to use, falling back to the project's SQLite store."""
        return self.tracking_uri or default_mlflow_uri()

    def get_tracker(self) -> Tracker:
        """The MLflow tracker for this server; the one place the block's settings (and secrets) become a client.

        A tracking server gets the token or the username and password as MLflow's credentials; a database URI
        gets the username and password as its login. A ``tracking_uri`` that carries a password is refused:
        the password belongs in ``password``, a secret.
        """
        uri = self.resolved_tracking_uri()
        if self.tracking_uri and urlsplit(self.tracking_uri).password is not None:
            raise ValueError("MLflow block: tracking_uri carries a password; put it in the block's password field")
        password = self.password.get_secret_value() if self.password is not None else None
        if store_kind(uri) == "database":
            login_uri = with_database_login(uri, self.username, password) if password else uri
            return Tracker(login_uri, self.registry_uri, artifact_root=self.artifact_root)
        credentials = MlflowCredentials(
            token=self.token.get_secret_value() if self.token is not None else None,
            username=self.username,
            password=password,
        )
        return Tracker(uri, self.registry_uri, credentials=credentials, artifact_root=self.artifact_root)
