"""``NemoClient``: every NeMo service the flywheel uses, as an async context manager.

Three base URLs as in the NeMo docs (one for Entity Store, Customizer, Evaluator and DMS; the Data
Store; NIM), each service overridable (:class:`NemoEndpoints`; the Prefect block has one URL per
service and builds the client). One ``httpx.AsyncClient`` per distinct base URL; the bearer token is
set on those clients only and is redacted from every error.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from pydantic import SecretStr

from agent_flywheel.nemo.customizer import Customizer
from agent_flywheel.nemo.datastore import DataStore, FileContent
from agent_flywheel.nemo.deployments import Deployments
from agent_flywheel.nemo.entity_store import EntityStore
from agent_flywheel.nemo.evaluator import Evaluator
from agent_flywheel.nemo.http import Redactor, RetryPolicy, ServiceHTTP, SleepFn
from agent_flywheel.nemo.models import Dataset
from agent_flywheel.nemo.nim import Nim
from agent_flywheel.nemo.payloads import dataset_body


@dataclass(frozen=True)
class NemoEndpoints:
    """The base URL of each service the client talks to (no secrets: safe to log and to key caches on)."""

    entity_store: str
    customizer: str
    evaluator: str
    deployment: str
    datastore: str
    nim: str

    @classmethod
    def shared(cls, nemo_url: str, datastore_url: str, nim_url: str) -> NemoEndpoints:
        """One URL for the four NeMo services (the platform's gateway), as the NeMo docs deploy them."""
        return cls(nemo_url, nemo_url, nemo_url, nemo_url, datastore_url, nim_url)

    def url_for(self, service: str) -> str:
        """Base URL of ``service`` (``entity-store``, ``customizer``, ``evaluator``, ``deployment``,
        ``datastore`` or ``nim``), without a trailing slash."""
        urls = {
            "entity-store": self.entity_store,
            "customizer": self.customizer,
            "evaluator": self.evaluator,
            "deployment": self.deployment,
            "datastore": self.datastore,
            "nim": self.nim,
        }
        return urls[service].rstrip("/")


class NemoClient:
    """All NeMo services: ``entity_store``, ``datastore``, ``customizer``, ``evaluator``, ``deployments``, ``nim``.

    ``api_key`` is the bearer token of the NeMo services and NIM; ``datastore_token`` the Data Store's
    (default: ``api_key``, else none). ``remote_keys`` are the API keys of remote models the run uses, by
    role (``judge``, ``embedding``): they are sent to those models only, and the judge's to the Evaluator in
    the one field NeMo needs it in (:meth:`remote_key`). ``transport`` (e.g. ``httpx.MockTransport``),
    ``sleep`` and ``rng`` are for tests; production passes none of them. Use
    ``async with NemoClient(endpoints) as nemo:`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        endpoints: NemoEndpoints,
        *,
        api_key: SecretStr | None = None,
        datastore_token: SecretStr | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        remote_keys: Mapping[str, SecretStr] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoints = endpoints
        key = api_key.get_secret_value() if api_key else None
        datastore_token = datastore_token or api_key
        self._remote_keys = {role: k for role, k in (remote_keys or {}).items() if k.get_secret_value()}
        self.redactor = Redactor(
            [s for s in (key, datastore_token.get_secret_value() if datastore_token else None) if s]
            + [k.get_secret_value() for k in self._remote_keys.values()]
        )
        retry = retry or RetryPolicy()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._clients: dict[str, httpx.AsyncClient] = {}

        def service(name: str) -> ServiceHTTP:
            base = endpoints.url_for(name)
            if base not in self._clients:
                self._clients[base] = httpx.AsyncClient(
                    base_url=base, headers=headers, timeout=timeout, transport=transport, follow_redirects=True
                )
            return ServiceHTTP(name, self._clients[base], retry=retry, sleep=sleep, rng=rng, redactor=self.redactor)

        self.entity_store = EntityStore(service("entity-store"))
        self.customizer = Customizer(service("customizer"))
        self.evaluator = Evaluator(service("evaluator"))
        self.deployments = Deployments(service("deployment"))
        self.datastore = DataStore(service("datastore"), token=datastore_token)
        self.nim = Nim(service("nim"))

    def remote_key(self, role: str) -> SecretStr | None:
        """The API key of the remote model in ``role`` (``judge``, ``embedding``), or None (none needed or set)."""
        return self._remote_keys.get(role)

    def __repr__(self) -> str:
        e = self.endpoints
        return f"NemoClient(nemo={e.customizer!r}, datastore={e.datastore!r}, nim={e.nim!r})"

    async def aclose(self) -> None:
        """Close every HTTP connection pool."""
        for client in self._clients.values():
            await client.aclose()

    async def __aenter__(self) -> NemoClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def ensure_namespace(self, namespace: str) -> dict[str, bool]:
        """Create the namespace in the Entity Store and in the Data Store (they are separate); what was created."""
        return {
            "entity_store": await self.entity_store.ensure_namespace(namespace),
            "datastore": await self.datastore.ensure_namespace(namespace),
        }

    async def upload_dataset(
        self,
        namespace: str,
        name: str,
        files: Mapping[str, FileContent],
        *,
        description: str = "",
        project: str | None = None,
        custom_fields: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """Namespaces, files (one commit) and registration: the blueprint's upload steps, each safe to repeat."""
        await self.ensure_namespace(namespace)
        files_url = await self.datastore.upload_files(namespace, name, files)
        return await self.entity_store.upsert_dataset(
            dataset_body(
                namespace,
                name,
                files_url=files_url,
                description=description,
                project=project,
                custom_fields=custom_fields,
            )
        )
