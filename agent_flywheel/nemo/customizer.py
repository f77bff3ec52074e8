"""NeMo Customizer: training configs, LoRA fine-tuning jobs, their status, and cancelling them.

- Configs are create-or-exists (200 created, 409 exists).
- Jobs are created once per idempotency key: before POSTing, the namespace's jobs are searched for one
  carrying the same content hash (and flow run id) that is not failed or cancelled; the POST expects
  exactly 200 (the Customizer's contract) and is never blindly resent after an ambiguous failure.
- A job whose latest status log is ``NotEnoughResources`` (pending or running) is *blocked*: the wait ends
  at once (:class:`~agent_flywheel.nemo.poller.JobBlockedError`) and the caller cancels the job.
- Cancel uses the real path ``/v1/customization/jobs/{id}/cancel`` (blueprint bug 3 posted to
  ``/v1/customizations/{id}/cancel``, which does not exist).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote

from agent_flywheel.nemo.http import NemoAPIError, ServiceHTTP, filter_params
from agent_flywheel.nemo.idempotency import IdempotencyKey, create_or_find
from agent_flywheel.nemo.models import CustomizationJob, CustomizationStatus
from agent_flywheel.nemo.poller import Observation, PollSettings, ProgressCallback, wait_for_answer
from agent_flywheel.nemo.status import DEAD_STATUSES, Phase, normalize_status

logger = logging.getLogger(__name__)

JOBS = "/v1/customization/jobs"
CONFIGS = "/v1/customization/configs"
TARGETS = "/v1/customization/targets"
#: Target statuses with which no job can train (the Customizer's ``TargetStatus``).
UNUSABLE_TARGET_STATUSES = frozenset({"failed", "cancelled", "deleted", "deleting", "delete_failed"})
NOT_ENOUGH_RESOURCES = "NotEnoughResources"
_RENAME_ATTEMPTS = 3


def cancel_path(job_id: str) -> str:
    """The cancel endpoint of a customization job (the SDK's path, not the blueprint's)."""
    return f"{JOBS}/{quote(job_id, safe='')}/cancel"


def customization_observation(status: CustomizationStatus) -> Observation:
    """A status read as a poll observation: percentage, epochs, steps, losses, and why it failed or waits."""
    reason = None
    blocked = False
    if status.phase is Phase.FAILED:
        reason = status.failure_reason()
    elif status.phase is not Phase.SUCCEEDED:
        last = status.last_log()
        if last is not None and last.message == NOT_ENOUGH_RESOURCES:
            # pending or running alike: the job says no node can take it, so waiting out the stall timeout
            # (an hour by default) would only hide that
            reason = f"{NOT_ENOUGH_RESOURCES}: the cluster has no free GPUs for this job ({last.detail or 'no detail'})"
            blocked = True
    details = {
        key: value
        for key, value in {
            "epochs_completed": status.epochs_completed,
            "steps_completed": status.steps_completed,
            "steps_per_epoch": status.steps_per_epoch,
            "train_loss": status.train_loss,
            "val_loss": status.val_loss,
            "elapsed_time": status.elapsed_time,
        }.items()
        if value is not None
    }
    return Observation(
        status=normalize_status(status.status),
        progress=status.percentage_done,
        details=details,
        reason=reason,
        blocked=blocked,
    )


class Customizer:
    """``/v1/customization/*`` on the NeMo base URL."""

    def __init__(self, http: ServiceHTTP) -> None:
        self.http = http

    # --- targets -----------------------------------------------------------------------------------

    async def get_target(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A customization target (``meta`` / ``llama-3.2-1b-instruct@2.0``), or None when it is not registered."""
        body = await self.http.get_optional(f"{TARGETS}/{quote(namespace, safe='')}/{quote(name, safe='@+')}")
        return body if isinstance(body, dict) else None

    async def list_targets(self, *, max_items: int | None = 200) -> list[dict[str, Any]] | None:
        """The registered targets, or None when this Customizer has no targets API (NeMo before 25.06)."""
        if await self.http.get_optional(TARGETS, params={"page": 1, "page_size": 1}) is None:
            return None
        return await self.http.list_all(TARGETS, max_items=max_items)

    async def has_configs_api(self) -> bool:
        """Whether training configs can be created here (``/v1/customization/configs``, NeMo 25.06 and later)."""
        return await self.http.get_optional(CONFIGS, params={"page": 1, "page_size": 1}) is not None

    # --- configs -----------------------------------------------------------------------------------

    async def ensure_config(self, body: Mapping[str, Any]) -> bool:
        """Create a training config unless one with that name exists; True when created (200), False on 409."""
        response = await self.http.request("POST", CONFIGS, json=dict(body), ok=(200, 201, 409), idempotent=True)
        created = response.status_code != 409
        logger.info(
            "customizer config %s/%s %s",
            body.get("namespace"),
            body.get("name"),
            "created" if created else "already exists",
        )
        return created

    async def get_config(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A training config, or None."""
        body = await self.http.get_optional(f"{CONFIGS}/{quote(namespace, safe='')}/{quote(name, safe='@+')}")
        return body if isinstance(body, dict) else None

    async def delete_config(self, namespace: str, name: str) -> bool:
        """Delete a training config; False when it was not there."""
        return await self.http.delete(f"{CONFIGS}/{quote(namespace, safe='')}/{quote(name, safe='@+')}")

    # --- jobs --------------------------------------------------------------------------------------

    async def _post_job(self, body: Mapping[str, Any]) -> CustomizationJob:
        response = await self.http.request("POST", JOBS, json=dict(body), ok=(200,), idempotent=False)
        return CustomizationJob.model_validate(self.http.parse(response, "POST", JOBS))

    async def create_job(
        self,
        body: Mapping[str, Any],
        *,
        idempotency: IdempotencyKey | None = None,
        exclude: Collection[str] = (),
    ) -> CustomizationJob:
        """Start a fine-tune, or return the live job that already has this idempotency key (unless its id is
        in ``exclude``: a completed job whose adapter is gone).

        A 409 on the name (an old failed job may hold it) retries under ``<name>-2``, ``<name>-3``.
        """
        namespace = str(body.get("namespace") or "") or None
        find: Callable[[], Awaitable[CustomizationJob | None]] | None = None
        if idempotency is not None:
            key = idempotency

            async def find_existing() -> CustomizationJob | None:
                return await self.find_job(key, namespace=namespace, exclude=exclude)

            find = find_existing

        async def post() -> CustomizationJob:
            attempt_body = dict(body)
            for suffix in range(2, 2 + _RENAME_ATTEMPTS):
                try:
                    return await self._post_job(attempt_body)
                except NemoAPIError as err:
                    if not err.conflict or "name" not in body:
                        raise
                    attempt_body["name"] = f"{body['name']}-{suffix}"
                    logger.warning("customizer: job name taken (409); trying %s", attempt_body["name"])
            return await self._post_job(attempt_body)

        job = await create_or_find(self.http, "customization job", post, find)
        logger.info("customizer job %s (%s) status %s, output model %s", job.id, job.name, job.status, job.output_model)
        return job

    async def find_job(
        self, idempotency: IdempotencyKey, *, namespace: str | None = None, exclude: Collection[str] = ()
    ) -> CustomizationJob | None:
        """The newest job carrying this idempotency key that is not failed or cancelled (nor excluded), or None."""
        for job in await self.list_jobs(filters={"namespace": namespace} if namespace else None, max_items=500):
            if normalize_status(job.status) in DEAD_STATUSES or job.id in exclude:
                continue
            if idempotency.matches(name=job.name, description=job.description, custom_fields=job.custom_fields):
                return job
        return None

    async def get_job(self, job_id: str) -> CustomizationJob:
        """The full job: status, status_details, output_model."""
        return CustomizationJob.model_validate(await self.http.get_json(f"{JOBS}/{quote(job_id, safe='')}"))

    async def get_status(self, job_id: str) -> CustomizationStatus:
        """Progress of a job: status, percentage_done, epochs/steps, losses, status_logs."""
        return CustomizationStatus.model_validate(await self.http.get_json(f"{JOBS}/{quote(job_id, safe='')}/status"))

    async def list_jobs(
        self,
        *,
        filters: Mapping[str, Any] | None = None,
        sort: str = "-created_at",
        max_items: int | None = None,
    ) -> list[CustomizationJob]:
        """Jobs matching ``filter[...]`` (e.g. ``{"namespace": "dfwbp", "status": "running"}``), newest first."""
        params = {**filter_params(filters), "sort": sort}
        items = await self.http.list_all(JOBS, params=params, max_items=max_items)
        return [CustomizationJob.model_validate(item) for item in items]

    async def cancel_job(self, job_id: str) -> CustomizationJob:
        """Cancel a job; a job that already finished (409/400) is returned as it is."""
        path = cancel_path(job_id)
        response = await self.http.request("POST", path, ok=(200, 202, 400, 409), idempotent=True)
        if response.status_code in (400, 409):
            logger.info("customizer job %s not cancellable (%d): already finished", job_id, response.status_code)
            return await self.get_job(job_id)
        logger.info("customizer job %s cancel requested", job_id)
        body = self.http.parse(response, "POST", path)
        if isinstance(body, dict) and "id" in body:
            return CustomizationJob.model_validate(body)
        return await self.get_job(job_id)

    async def wait_for_job(
        self,
        job_id: str,
        *,
        settings: PollSettings | None = None,
        on_progress: ProgressCallback | None = None,
        cancel_on_abort: bool = False,
    ) -> CustomizationStatus:
        """Poll the job's status until ``completed`` (returned) or failed/stalled/timed out (raised).

        ``pending``/``created`` wait; a last log ``NotEnoughResources`` ends the wait at once. With
        ``cancel_on_abort`` the job is cancelled when the waiting coroutine is cancelled.
        """
        return await wait_for_answer(
            lambda: self.get_status(job_id),
            customization_observation,
            what=f"customization job {job_id}",
            settings=settings or PollSettings(interval_s=30.0),
            on_progress=on_progress,
            on_cancel=(lambda: self.cancel_job(job_id)) if cancel_on_abort else None,
            sleep=self.http.sleep,
        )
