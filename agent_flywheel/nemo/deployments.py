"""NeMo Deployment Management (DMS): deploy a NIM, reuse one that exists, wait until it serves, remove it.

- A duplicate create is "exists → reuse", whether DMS answers 409 or its known 500 "model deployment
  already exists" (the 500 is not retried: it is an answer).
- Ready means ``status_details.status == "ready"`` or ``deployed: true`` (blueprint bug 8 compared the
  status to ``"deployed"``, which never happens, so it redeployed every time).
- Waiting fails fast on ``failed``/``cancelled`` instead of sitting out the timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from agent_flywheel.nemo.http import ServiceHTTP, filter_params
from agent_flywheel.nemo.models import ModelDeployment
from agent_flywheel.nemo.poller import Observation, PollSettings, ProgressCallback, wait_for
from agent_flywheel.nemo.status import Phase, classify, normalize_status

logger = logging.getLogger(__name__)

DEPLOYMENTS = "/v1/deployment/model-deployments"
ALREADY_EXISTS = "already exists"


def _path(namespace: str, name: str) -> str:
    return f"{DEPLOYMENTS}/{quote(namespace, safe='')}/{quote(name, safe='')}"


def is_already_exists(response: httpx.Response) -> bool:
    """DMS's duplicate answer: a 500 whose body says "model deployment already exists"."""
    return response.status_code == 500 and ALREADY_EXISTS in response.text.lower()


def is_ready(deployment: ModelDeployment) -> bool:
    """Serving: status ``ready`` or ``deployed: true``."""
    return deployment.ready


def deployment_observation(deployment: ModelDeployment) -> Observation:
    """A deployment read as a poll observation; ``deployed: true`` counts as ready whatever the status says."""
    status = normalize_status(deployment.status)
    if deployment.ready:
        phase = Phase.SUCCEEDED
    elif deployment.failed:
        phase = Phase.FAILED
    else:
        phase = classify(status)
        if phase is Phase.SUCCEEDED:  # e.g. "completed" without being ready: keep waiting for "ready"
            phase = Phase.WAITING
    reason = deployment.status_details.description
    details: dict[str, Any] = {"deployed": bool(deployment.deployed)}
    if reason:
        details["description"] = reason
    return Observation(status=status, phase=phase, details=details, reason=reason)


class Deployments:
    """``/v1/deployment/model-deployments`` on the NeMo base URL."""

    def __init__(self, http: ServiceHTTP) -> None:
        self.http = http

    async def create(self, body: Mapping[str, Any]) -> tuple[ModelDeployment, bool]:
        """POST a deployment; ``(deployment, True)`` when created, ``(existing, False)`` when it already existed."""
        namespace, name = str(body["namespace"]), str(body["name"])
        response = await self.http.request(
            "POST", DEPLOYMENTS, json=dict(body), ok=(200, 201, 202, 409), accept=is_already_exists, idempotent=True
        )
        if response.status_code in (409, 500):
            existing = await self.get(namespace, name)
            if existing is None:
                raise self.http.error(
                    "POST",
                    DEPLOYMENTS,
                    response.status_code,
                    f"DMS says {namespace}/{name} already exists, but it cannot be read back",
                    hint="it may be tearing down: wait a minute and retry",
                )
            logger.info("dms deployment %s/%s already exists (status %s): reusing it", namespace, name, existing.status)
            return existing, False
        logger.info("dms deployment %s/%s created", namespace, name)
        return ModelDeployment.model_validate(self.http.parse(response, "POST", DEPLOYMENTS)), True

    async def ensure(self, body: Mapping[str, Any]) -> tuple[ModelDeployment, bool]:
        """Reuse the deployment when it exists (ready or on its way), else create it; see :meth:`create`."""
        existing = await self.get(str(body["namespace"]), str(body["name"]))
        if existing is not None:
            logger.info(
                "dms deployment %s/%s exists (status %s, ready %s): reusing it",
                body["namespace"],
                body["name"],
                existing.status,
                existing.ready,
            )
            return existing, False
        return await self.create(body)

    async def get(self, namespace: str, name: str) -> ModelDeployment | None:
        """The deployment, or None."""
        body = await self.http.get_optional(_path(namespace, name))
        return ModelDeployment.model_validate(body) if body is not None else None

    async def list_deployments(
        self, namespace: str | None = None, *, max_items: int | None = None
    ) -> list[ModelDeployment]:
        """Deployments, optionally of one namespace."""
        params = filter_params({"namespace": namespace} if namespace else None)
        items = await self.http.list_all(DEPLOYMENTS, params=params, max_items=max_items)
        return [ModelDeployment.model_validate(item) for item in items]

    async def delete(self, namespace: str, name: str) -> bool:
        """Tear the deployment down; False when it was not there."""
        deleted = await self.http.delete(_path(namespace, name))
        logger.info("dms deployment %s/%s %s", namespace, name, "deleted" if deleted else "was already gone")
        return deleted

    async def is_ready(self, namespace: str, name: str) -> bool:
        """True when the deployment exists and serves."""
        deployment = await self.get(namespace, name)
        return deployment is not None and deployment.ready

    async def wait_until_ready(
        self,
        namespace: str,
        name: str,
        *,
        settings: PollSettings | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ModelDeployment:
        """Poll until ready (returned); ``failed`` raises at once, a stall or timeout raises when due."""
        latest: list[ModelDeployment] = []

        async def fetch() -> Observation:
            deployment = ModelDeployment.model_validate(await self.http.get_json(_path(namespace, name)))
            latest[:] = [deployment]
            return deployment_observation(deployment)

        await wait_for(
            fetch,
            what=f"deployment {namespace}/{name}",
            settings=settings or PollSettings(interval_s=5.0),
            on_progress=on_progress,
            sleep=self.http.sleep,
        )
        return latest[0]
