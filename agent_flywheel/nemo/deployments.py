"""NeMo Deployment Management (DMS): deploy a NIM, reuse one that exists, wait until it serves, remove it.

- A duplicate create is "exists → reuse", whether DMS answers 409 or its known 500 "model deployment
  already exists" (the 500 is not retried: it is an answer).
- Ready means ``status_details.status == "ready"`` or ``deployed: true`` (blueprint bug 8 compared the
  status to ``"deployed"``, which never happens, so it redeployed every time).
- Waiting fails fast on ``failed``/``cancelled``, and on a ``pending`` deployment whose description names a
  Kubernetes error that waiting cannot fix (:data:`BLOCKED_MARKERS`), instead of sitting out the timeout.
- **Users**: several flywheel runs (of different workloads) may evaluate on one deployment, since its name
  depends only on the model. A deployment agent-flywheel created carries, in ``custom_fields``,
  ``flywheel_managed: "true"``, the creating run (``flywheel_run_id``) and the flow run ids of the runs
  using it (``flywheel_users``, comma-separated). A run adds itself before using it (:meth:`Deployments.use`)
  and removes itself when done (:meth:`Deployments.release`); the deployment is deleted only when no live
  run is left on the list. A deployment without ``flywheel_managed`` (the platform team's) is used, never
  deleted. The caller serialises ``use`` and ``release`` (they read, then write the list).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from agent_flywheel.nemo.http import ServiceHTTP, filter_params
from agent_flywheel.nemo.models import ModelDeployment
from agent_flywheel.nemo.poller import Observation, PollSettings, ProgressCallback, wait_for_answer
from agent_flywheel.nemo.status import Phase, classify, normalize_status

logger = logging.getLogger(__name__)

DEPLOYMENTS = "/v1/deployment/model-deployments"
ALREADY_EXISTS = "already exists"
MANAGED_FIELD = "flywheel_managed"
CREATOR_FIELD = "flywheel_run_id"
USERS_FIELD = "flywheel_users"

#: Words of a pending deployment's description that mean it will never become ready by waiting: the NIM
#: image cannot be pulled or its container keeps crashing (Kubernetes' reasons, as DMS passes them on).
BLOCKED_MARKERS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff", "CreateContainerError")

IsOver = Callable[[str], Awaitable[bool]]
"""Whether a flow run (by id) is over, so it can no longer use a deployment."""


def _path(namespace: str, name: str) -> str:
    return f"{DEPLOYMENTS}/{quote(namespace, safe='')}/{quote(name, safe='')}"


def is_already_exists(response: httpx.Response) -> bool:
    """DMS's duplicate answer: a 500 whose body says "model deployment already exists"."""
    return response.status_code == 500 and ALREADY_EXISTS in response.text.lower()


def is_ready(deployment: ModelDeployment) -> bool:
    """Serving: status ``ready`` or ``deployed: true``."""
    return deployment.ready


def is_managed(deployment: ModelDeployment) -> bool:
    """True when agent-flywheel created the deployment (and so may delete it once nobody uses it)."""
    return str((deployment.custom_fields or {}).get(MANAGED_FIELD, "")).lower() == "true"


def deployment_users(deployment: ModelDeployment) -> list[str]:
    """The flow run ids listed as using the deployment, in order, without repeats."""
    raw = (deployment.custom_fields or {}).get(USERS_FIELD) or ""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    return list(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))


def managed_fields(run_id: str, users: list[str] | None = None) -> dict[str, str]:
    """The ``custom_fields`` of a deployment a run creates: managed, by whom, used by whom."""
    return {MANAGED_FIELD: "true", CREATOR_FIELD: run_id, USERS_FIELD: ",".join(users or [run_id])}


@dataclass(frozen=True)
class Use:
    """A run's use of a deployment: whether the run created it, and whether agent-flywheel manages it."""

    deployment: ModelDeployment
    created: bool
    managed: bool
    users: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Release:
    """What releasing a deployment did: deleted, or left for the runs still using it (or not ours)."""

    existed: bool
    managed: bool
    deleted: bool
    users: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


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
    blocked = phase is Phase.WAITING and any(marker in (reason or "") for marker in BLOCKED_MARKERS)
    return Observation(status=status, phase=phase, details=details, reason=reason, blocked=blocked)


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

    async def use(self, body: Mapping[str, Any], run_id: str) -> Use:
        """Deploy for run ``run_id``, or join the deployment that exists: the run is added to its users.

        A managed deployment that failed is replaced (its users carried over: they cannot use a failed one
        either). An unmanaged one is used as it is and never written to.
        """
        namespace, name = str(body["namespace"]), str(body["name"])
        existing = await self.get(namespace, name)
        if existing is not None and is_managed(existing) and existing.failed:
            logger.warning("dms deployment %s/%s failed; replacing it", namespace, name)
            users = [u for u in deployment_users(existing) if u != run_id] + [run_id]
            await self.delete(namespace, name)
            existing = None
        else:
            users = [run_id]
        if existing is None:
            deployment, created = await self.create(
                {**body, "custom_fields": {**dict(body.get("custom_fields") or {}), **managed_fields(run_id, users)}}
            )
            if created:
                return Use(deployment, created=True, managed=True, users=users)
            existing = deployment  # created by someone else meanwhile
        if not is_managed(existing):
            logger.info("dms deployment %s/%s was not made by agent-flywheel: used, never deleted", namespace, name)
            return Use(existing, created=False, managed=False)
        users = deployment_users(existing)
        if run_id not in users:
            users.append(run_id)
            existing = await self._set_users(existing, namespace, name, users)
        return Use(existing, created=False, managed=True, users=users)

    async def release(self, namespace: str, name: str, run_id: str, *, is_over: IsOver) -> Release:
        """Run ``run_id`` is done with the deployment: remove it from the users, drop users that are over,
        and delete the deployment when none is left (only a managed one)."""
        deployment = await self.get(namespace, name)
        if deployment is None:
            return Release(existed=False, managed=False, deleted=False)
        if not is_managed(deployment):
            return Release(existed=True, managed=False, deleted=False)
        others = [u for u in deployment_users(deployment) if u != run_id]
        dropped = [u for u in others if await is_over(u)]
        users = [u for u in others if u not in dropped]
        if not users:
            deleted = await self.delete(namespace, name)
            return Release(existed=True, managed=True, deleted=deleted, dropped=dropped)
        await self._set_users(deployment, namespace, name, users)
        logger.info("dms deployment %s/%s left running for %s", namespace, name, ", ".join(users))
        return Release(existed=True, managed=True, deleted=False, users=users, dropped=dropped)

    async def _set_users(
        self, deployment: ModelDeployment, namespace: str, name: str, users: list[str]
    ) -> ModelDeployment:
        fields = {**(deployment.custom_fields or {}), USERS_FIELD: ",".join(users)}
        path = _path(namespace, name)
        response = await self.http.request("PATCH", path, json={"custom_fields": fields}, ok=(200,), idempotent=True)
        body = self.http.parse(response, "PATCH", path)
        return ModelDeployment.model_validate(body) if isinstance(body, dict) and body else deployment

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

        async def get() -> ModelDeployment:
            return ModelDeployment.model_validate(await self.http.get_json(_path(namespace, name)))

        return await wait_for_answer(
            get,
            deployment_observation,
            what=f"deployment {namespace}/{name}",
            settings=settings or PollSettings(interval_s=5.0),
            on_progress=on_progress,
            sleep=self.http.sleep,
        )
