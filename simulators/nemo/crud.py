"""Create / list / get / patch / delete for entities addressed as ``/{namespace}/{name}``.

Namespaces, projects, datasets, models, customization targets and configs, evaluation targets and
configs and deployment configs all behave the same: POST answers the entity (200) or 409 when the
``namespace/name`` exists, GET lists with the NeMo envelope, PATCH merges, DELETE answers the delete
message. Each kind only declares its body model and, where needed, a hook that checks references.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from simulators.common import utc_now_iso
from simulators.nemo.context import NemoSim
from simulators.nemo.errors import conflict, not_found, unprocessable
from simulators.nemo.ids import new_id
from simulators.nemo.pagination import DEFAULT_SORTABLE, Resolver, list_page
from simulators.nemo.state import Record, public, ref

Hook = Callable[[NemoSim, Record], Awaitable[None]]


def validate_body(
    model: type[BaseModel], payload: Any, *, fill_defaults: bool = False, loc: tuple[str, ...] = ("body",)
) -> dict[str, Any]:
    """Validate a JSON body against ``model``; failures are FastAPI's own 422 (``loc`` starts with ``body``).

    ``fill_defaults`` echoes every declared field (``null`` when absent), as the Entity Store does;
    ``loc`` places a nested object's errors (``("body", "config")``).
    """
    try:
        return model.model_validate(payload).model_dump(exclude_unset=not fill_defaults, mode="json")
    except ValidationError as exc:
        errors = [{**e, "loc": (*loc, *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(errors, body=payload) from None


def check_name(value: Any, field_name: str = "name") -> None:
    """Names become URL path segments, so they may not contain ``/``."""
    if isinstance(value, str) and ("/" in value or not value.strip()):
        raise unprocessable(["body", field_name], "must be non-empty and may not contain '/'", value)


def delete_message(entity_id: str) -> dict[str, str]:
    """The body every NeMo DELETE answers."""
    return {"message": "Resource deleted successfully.", "id": entity_id, "deleted_at": utc_now_iso()}


@dataclass
class NamedKind:
    """One kind of ``/{namespace}/{name}`` entity."""

    table: str
    path: str
    label: str
    model: type[BaseModel]
    id_prefix: str | None = None
    keyed_by_id: bool = False  # namespaces: ``/v1/namespaces/{id}``
    resolvers: Mapping[str, Resolver] = field(default_factory=dict)
    sortable: frozenset[str] = DEFAULT_SORTABLE
    fill_defaults: bool = True
    before_save: Hook | None = None  # checks references and fills derived fields (create and patch)
    after_delete: Hook | None = None


def create_record(sim: NemoSim, kind: NamedKind, body: dict[str, Any]) -> Record:
    """A new entity from a validated body, with id and timestamps; not yet stored."""
    now = utc_now_iso()
    record: Record = {}
    if kind.id_prefix:
        record["id"] = new_id(kind.id_prefix)
    record.update(body)
    if not kind.keyed_by_id:
        record["namespace"] = body.get("namespace") or "default"
        record["name"] = body.get("name") or record.get("id") or new_id(kind.table.rstrip("s"))
        check_name(record["name"])
    if record.get("custom_fields") is None:
        record["custom_fields"] = {}
    record["created_at"] = now
    record["updated_at"] = now
    return record


def key_of(kind: NamedKind, record: Record) -> str:
    """The store key: the id for namespaces, ``namespace/name`` otherwise."""
    return str(record["id"]) if kind.keyed_by_id else ref(record["namespace"], record["name"])


def add_named_routes(router: APIRouter, sim: NemoSim, kind: NamedKind) -> None:
    """Register POST/GET on ``kind.path`` and GET/PATCH/DELETE on the entity path."""
    table = sim.store.table(kind.table)
    item_path = f"{kind.path}/{{namespace}}" if kind.keyed_by_id else f"{kind.path}/{{namespace}}/{{name}}"

    def lookup(namespace: str, name: str | None) -> tuple[str, Record]:
        key = namespace if kind.keyed_by_id else ref(namespace, name or "")
        record = table.get(key)
        if record is None:
            raise not_found(f"{kind.label} {key}")
        return key, record

    async def create(payload: Any = Body(...)) -> Record:
        body = validate_body(kind.model, payload, fill_defaults=kind.fill_defaults)
        record = create_record(sim, kind, body)
        key = key_of(kind, record)
        if key in table:
            raise conflict(f"{kind.label} {key} already exists")
        if kind.before_save:
            await kind.before_save(sim, record)
        table[key] = record
        sim.save()
        return public(record)

    async def list_all(request: Request) -> dict[str, Any]:
        records = [public(r) for r in table.values()]
        return list_page(
            records,
            request.query_params.multi_items(),
            default_page_size=sim.settings.default_page_size,
            resolvers=kind.resolvers,
            sortable=kind.sortable,
        )

    async def get_one(namespace: str, name: str | None = None) -> Record:
        return public(lookup(namespace, name)[1])

    async def patch_one(namespace: str, name: str | None = None, payload: Any = Body(...)) -> Record:
        key, record = lookup(namespace, name)
        if not isinstance(payload, dict):
            raise unprocessable(["body"], "Input should be a valid dictionary", payload, "dict_type")
        fixed = {"namespace", "name", "id", "created_at", "updated_at"}
        changes = {k: v for k, v in payload.items() if k not in fixed}
        merged = {**{k: v for k, v in public(record).items() if k not in ("created_at", "updated_at")}, **changes}
        body = validate_body(kind.model, merged, fill_defaults=kind.fill_defaults)
        updated = {**record, **body, "updated_at": utc_now_iso()}
        if not kind.keyed_by_id:
            updated["namespace"], updated["name"] = record["namespace"], record["name"]
        if kind.before_save:
            await kind.before_save(sim, updated)
        table[key] = updated
        sim.save()
        return public(updated)

    async def delete_one(namespace: str, name: str | None = None) -> dict[str, str]:
        key, record = lookup(namespace, name)
        del table[key]
        if kind.after_delete:
            await kind.after_delete(sim, record)
        sim.save()
        return delete_message(str(record.get("id") or key))

    tag = kind.label
    router.add_api_route(kind.path, create, methods=["POST"], tags=[tag], summary=f"Create a {kind.label}")
    router.add_api_route(kind.path, list_all, methods=["GET"], tags=[tag], summary=f"List {kind.label}s")
    router.add_api_route(item_path, get_one, methods=["GET"], tags=[tag], summary=f"Get a {kind.label}")
    router.add_api_route(item_path, patch_one, methods=["PATCH"], tags=[tag], summary=f"Update a {kind.label}")
    router.add_api_route(item_path, delete_one, methods=["DELETE"], tags=[tag], summary=f"Delete a {kind.label}")
