"""The ``datastore`` section of ``configs/local.yaml``: strictness and upload-mode switches; files go under the
stack's state dir."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulators.settings import LocalStackConfig, parse_settings


class DatastoreSettings(BaseModel):
    """Unknown keys are an error, so a typo in the YAML is reported instead of silently ignored."""

    model_config = ConfigDict(extra="forbid")

    require_namespace: bool = Field(
        default=False,
        description="Refuse to create a repo in a namespace not created with POST /v1/datastore/namespaces",
    )
    upload_mode: Literal["regular", "lfs"] = Field(
        default="regular",
        description=(
            "What the preupload step answers for every file: regular (content inline in the commit) or lfs "
            "(content through the git-LFS batch API first, as a Data Store answers for large files)"
        ),
    )


def datastore_settings(cfg: LocalStackConfig) -> DatastoreSettings:
    """Validate ``cfg.datastore``; a bad key raises ``SettingsError`` naming it."""
    data: Any = cfg.datastore
    return parse_settings(data, DatastoreSettings, source="configs/local.yaml: datastore")
