"""Where MLflow runs and registered models go, as a Prefect block."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agent_flywheel.paths import default_mlflow_uri
from agent_flywheel.tracking import Tracker


class MlflowTracking(Block):
    """MLflow tracking and registry. The default is SQLite under .flywheel/, so the registry and aliases work."""

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

    def resolved_tracking_uri(self) -> str:
        """The tracking URI to use, falling back to the project's SQLite store."""
        return self.tracking_uri or default_mlflow_uri()

    def get_tracker(self) -> Tracker:
        """The MLflow tracker for this server; the one place the block's settings become a client."""
        return Tracker(self.resolved_tracking_uri(), self.registry_uri)
