"""Entity Store: namespaces, projects, datasets and models (``/v1/namespaces``, ``/v1/datasets``...).

Other services read it: the Customizer checks that a job's dataset is registered here and creates the
output model entity; the Evaluator resolves ``ns/name`` dataset references to their ``files_url``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from simulators.nemo.context import NemoSim
from simulators.nemo.crud import NamedKind, add_named_routes, check_name
from simulators.nemo.state import Record, public, ref

JSONDict = dict[str, Any]


class _Body(BaseModel):
    # Unknown keys are ignored (not echoed), like the real services' response models.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class NamespaceBody(_Body):
    id: str = Field(min_length=1)
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class ProjectBody(_Body):
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class DatasetBody(_Body):
    name: str | None = None
    namespace: str | None = None
    files_url: str = Field(min_length=1)
    description: str | None = None
    project: str | None = None
    format: str | None = None
    hf_endpoint: str | None = None
    limit: int | None = Field(default=None, ge=1)
    split: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class ModelBody(_Body):
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    base_model: str | JSONDict | None = None
    peft: JSONDict | None = None
    artifact: JSONDict | None = None
    spec: JSONDict | None = None
    api_endpoint: JSONDict | None = None
    prompt: JSONDict | None = None
    guardrails: JSONDict | None = None
    model_providers: list[str] | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


async def _check_namespace_id(sim: NemoSim, record: Record) -> None:
    check_name(record.get("id"), "id")


NAMESPACES = NamedKind(
    table="namespaces",
    path="/v1/namespaces",
    label="Namespace",
    model=NamespaceBody,
    keyed_by_id=True,
    before_save=_check_namespace_id,
)
PROJECTS = NamedKind(table="projects", path="/v1/projects", label="Project", model=ProjectBody, id_prefix="project")
DATASETS = NamedKind(table="datasets", path="/v1/datasets", label="Dataset", model=DatasetBody, id_prefix="dataset")
MODELS = NamedKind(table="models", path="/v1/models", label="Model", model=ModelBody, id_prefix="model")


def find_dataset(sim: NemoSim, reference: Any) -> Record | None:
    """A registered dataset from ``"ns/name"`` or ``{"namespace", "name"}``; None when there is none."""
    if isinstance(reference, str):
        namespace, _, name = reference.partition("/")
        if not name:
            namespace, name = "default", reference
    elif isinstance(reference, dict):
        namespace, name = reference.get("namespace") or "default", reference.get("name") or ""
    else:
        return None
    record = sim.store.table("datasets").get(ref(namespace, name))
    return public(record) if record else None


def seed_entity_store(sim: NemoSim, now_iso: str) -> None:
    """The namespaces a fresh platform has: ``default`` and ``meta`` (where the seeded targets live)."""
    for namespace in ("default", "meta"):
        sim.store.table("namespaces").setdefault(
            namespace,
            {
                "id": namespace,
                "description": None,
                "project": None,
                "custom_fields": {},
                "ownership": None,
                "created_at": now_iso,
                "updated_at": now_iso,
            },
        )


def build_router(sim: NemoSim) -> APIRouter:
    """The Entity Store routes."""
    router = APIRouter()
    for kind in (NAMESPACES, PROJECTS, DATASETS, MODELS):
        add_named_routes(router, sim, kind)
    return router
