"""NeMo Entity Store: namespaces, dataset registrations and model entities.

Everything here is safe to call twice: namespaces are create-or-exists, datasets are upserted (the
blueprint's GET, then PATCH when it exists, else POST), deletes treat "already gone" as done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from agent_flywheel.nemo.http import ServiceHTTP, filter_params
from agent_flywheel.nemo.models import Dataset, ModelEntity, Namespace
from agent_flywheel.nemo.payloads import namespace_body

logger = logging.getLogger(__name__)


def _seg(text: str) -> str:
    """One URL path segment (``@`` kept: model names like ``name@cust-x`` are addressed as is)."""
    return quote(text, safe="@")


def split_ref(ref: str) -> tuple[str, str]:
    """``"ns/name@rev"`` → ``("ns", "name@rev")``; raises on a ref without a namespace."""
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"expected 'namespace/name', got {ref!r}")
    return namespace, name


class EntityStore:
    """``/v1/namespaces``, ``/v1/datasets``, ``/v1/models`` on the NeMo base URL."""

    def __init__(self, http: ServiceHTTP) -> None:
        self.http = http

    async def ensure_namespace(self, namespace: str, description: str | None = None) -> bool:
        """Create the namespace unless it exists; True when this call created it.

        409 means it exists. Some versions answer 422 for a duplicate: then a GET decides.
        """
        response = await self.http.request(
            "POST",
            "/v1/namespaces",
            json=namespace_body(namespace, description),
            ok=(200, 201, 409, 422),
            idempotent=True,
        )
        if response.status_code == 422:
            if await self.get_namespace(namespace) is None:
                raise self.http.response_error("POST", "/v1/namespaces", response)
            return False
        created = response.status_code in (200, 201)
        logger.info("entity store namespace %s %s", namespace, "created" if created else "already exists")
        return created

    async def get_namespace(self, namespace: str) -> Namespace | None:
        """The namespace, or None when it does not exist."""
        body = await self.http.get_optional(f"/v1/namespaces/{_seg(namespace)}")
        return Namespace.model_validate(body) if body is not None else None

    async def get_dataset(self, namespace: str, name: str) -> Dataset | None:
        """A registered dataset, or None."""
        body = await self.http.get_optional(f"/v1/datasets/{_seg(namespace)}/{_seg(name)}")
        return Dataset.model_validate(body) if body is not None else None

    async def upsert_dataset(self, body: Mapping[str, Any]) -> Dataset:
        """Register a dataset, or update its registration: GET → PATCH if it exists, else POST.

        A POST that loses a race (409) falls back to PATCH, so two concurrent uploads both succeed.
        """
        namespace, name = str(body["namespace"]), str(body["name"])
        path = f"/v1/datasets/{_seg(namespace)}/{_seg(name)}"
        if await self.get_dataset(namespace, name) is None:
            response = await self.http.request(
                "POST", "/v1/datasets", json=dict(body), ok=(200, 201, 409), idempotent=True
            )
            if response.status_code != 409:
                logger.info("entity store dataset %s/%s registered", namespace, name)
                return Dataset.model_validate(self.http.parse(response, "POST", "/v1/datasets"))
        response = await self.http.request("PATCH", path, json=dict(body), ok=(200,))
        logger.info("entity store dataset %s/%s updated", namespace, name)
        return Dataset.model_validate(self.http.parse(response, "PATCH", path))

    async def list_datasets(self, namespace: str | None = None, *, max_items: int | None = None) -> list[Dataset]:
        """Registered datasets, newest first, optionally of one namespace."""
        params = {**filter_params({"namespace": namespace} if namespace else None), "sort": "-created_at"}
        items = await self.http.list_all("/v1/datasets", params=params, max_items=max_items)
        return [Dataset.model_validate(item) for item in items]

    async def delete_dataset(self, namespace: str, name: str) -> bool:
        """Remove a dataset registration (not its files); False when it was not there."""
        return await self.http.delete(f"/v1/datasets/{_seg(namespace)}/{_seg(name)}")

    async def get_model(self, namespace: str, name: str) -> ModelEntity | None:
        """A model entity (``name`` may carry ``@cust-...``), or None."""
        body = await self.http.get_optional(f"/v1/models/{_seg(namespace)}/{_seg(name)}")
        return ModelEntity.model_validate(body) if body is not None else None

    async def list_models(
        self, namespace: str | None = None, *, filters: Mapping[str, Any] | None = None, max_items: int | None = None
    ) -> list[ModelEntity]:
        """Model entities, newest first, optionally of one namespace."""
        query: dict[str, Any] = dict(filters or {})
        if namespace:
            query["namespace"] = namespace
        params = {**filter_params(query), "sort": "-created_at"}
        items = await self.http.list_all("/v1/models", params=params, max_items=max_items)
        return [ModelEntity.model_validate(item) for item in items]

    async def delete_model(self, namespace: str, name: str) -> bool:
        """Delete a model entity (e.g. a customized ``name@cust-...``); False when it was not there."""
        return await self.http.delete(f"/v1/models/{_seg(namespace)}/{_seg(name)}")

    async def delete_model_ref(self, ref: str) -> bool:
        """Delete by ``namespace/name[@rev]``, the form a customization job's ``output_model`` has."""
        namespace, name = split_ref(ref)
        return await self.delete_model(namespace, name)
