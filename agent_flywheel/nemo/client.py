"""``NemoClient``: every NeMo service the flywheel uses, from one settings object, as an async context manager.

Three base URLs as in the NeMo docs (``nemo_url`` for Entity Store, Customizer, Evaluator and DMS;
``datastore_url``; ``nim_url``), each service overridable (the Prefect block has one URL per service).
One ``httpx.AsyncClient`` per distinct base URL; the bearer token is set on those clients only and is
redacted from every error.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent_flywheel.nemo.customizer import Customizer
from agent_flywheel.nemo.datastore import DataStore, FileContent
from agent_flywheel.nemo.deployments import Deployments
from agent_flywheel.nemo.entity_store import EntityStore
from agent_flywheel.nemo.evaluator import Evaluator
from agent_flywheel.nemo.http import Redactor, RetryPolicy, ServiceHTTP, SleepFn
from agent_flywheel.nemo.models import Dataset
from agent_flywheel.nemo.nim import Nim
from agent_flywheel.nemo.payloads import dataset_body


class NemoSettings(BaseModel):
    """Where the services live and how patiently to talk to them. ``repr`` never shows the keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    nemo_url: str = "http://nemo.test"
    datastore_url: str = "http://data-store.test"
    nim_url: str = "http://nim.test"
    entity_store_url: str | None = Field(default=None, description="Default: nemo_url")
    customizer_url: str | None = Field(default=None, description="Default: nemo_url")
    evaluator_url: str | None = Field(default=None, description="Default: nemo_url")
    deployment_url: str | None = Field(default=None, description="Default: nemo_url")
    api_key: SecretStr | None = Field(default=None, description="Bearer token for the NeMo services and NIM")
    datastore_token: SecretStr | None = Field(
        default=None, description="Token for the Data Store's HF API; default: api_key, else none"
    )
    timeout_s: float = Field(default=60.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=10.0, ge=0)

    def url_for(self, service: str) -> str:
        """Base URL of a service: its own override, else the shared one."""
        own = {
            "entity-store": self.entity_store_url,
            "customizer": self.customizer_url,
            "evaluator": self.evaluator_url,
            "deployment": self.deployment_url,
        }.get(service)
        shared = {"datastore": self.datastore_url, "nim": self.nim_url}.get(service, self.nemo_url)
        return (own or shared).rstrip("/")


class NemoClient:
    """All NeMo services: ``entity_store``, ``datastore``, ``customizer``, ``evaluator``, ``deployments``, ``nim``.

    ``transport`` (e.g. ``httpx.MockTransport``), ``sleep`` and ``rng`` are for tests; production passes
    none of them. Use ``async with NemoClient(settings) as nemo:`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        settings: NemoSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        datastore_token = settings.datastore_token or settings.api_key
        self.redactor = Redactor(
            [s for s in (api_key, datastore_token.get_secret_value() if datastore_token else None) if s]
        )
        retry = RetryPolicy(
            max_retries=settings.max_retries,
            backoff_base_s=settings.backoff_base_s,
            backoff_max_s=settings.backoff_max_s,
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self._clients: dict[str, httpx.AsyncClient] = {}

        def service(name: str) -> ServiceHTTP:
            base = settings.url_for(name)
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

    def __repr__(self) -> str:
        return f"NemoClient(nemo={self.settings.nemo_url!r}, datastore={self.settings.datastore_url!r}, nim={self.settings.nim_url!r})"

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
