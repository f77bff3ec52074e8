"""NeMo Evaluator: evaluation jobs, their progress, aggregate and per-sample results, cancel and delete.

Jobs are created once per idempotency key (the key rides in ``custom_fields`` and the description),
waiting treats ``pending`` as waiting (blueprint bug 2), and a run that is cancelled can cancel its
evaluation jobs for real (blueprint bug 11 only marked them cancelled in its own database).
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from agent_flywheel.evaluation.results import ResultsArchiveError, read_results_archive
from agent_flywheel.nemo.http import NemoAPIError, ServiceHTTP, filter_params
from agent_flywheel.nemo.idempotency import IdempotencyKey, create_or_find
from agent_flywheel.nemo.models import EvaluationJob, EvaluationResult, EvaluationStatus, SampleResult
from agent_flywheel.nemo.poller import Observation, PollSettings, ProgressCallback, wait_for_answer
from agent_flywheel.nemo.status import DEAD_STATUSES, Phase, normalize_status

logger = logging.getLogger(__name__)

JOBS = "/v1/evaluation/jobs"


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"{JOBS}/{quote(job_id, safe='')}{suffix}"


def evaluation_observation(job: EvaluationJob) -> Observation:
    """A job read as a poll observation: progress 0-100, samples processed, per-task status."""
    details: dict[str, Any] = {}
    message = None
    if job.status_details is not None:
        message = job.status_details.message
        if job.status_details.samples_processed is not None:
            details["samples_processed"] = job.status_details.samples_processed
        if job.status_details.task_status:
            details["task_status"] = job.status_details.task_status
        if message:
            details["message"] = message
    reason = (message or "the Evaluator gave no message") if job.phase is Phase.FAILED else None
    return Observation(status=normalize_status(job.status), progress=job.progress, details=details, reason=reason)


def parse_results_archive(data: bytes) -> dict[str, list[SampleResult]]:
    """Per-sample results from a ``download-results`` ZIP, in any layout NeMo uses
    (:func:`~agent_flywheel.evaluation.results.read_results_archive`): ``{task: [{item, sample, metrics}]}``.

    Rows that do not parse are counted and logged, not fatal; an archive without any sample row is a
    :class:`~agent_flywheel.evaluation.results.ResultsArchiveError` (a ValueError), and so is a body that is no ZIP.
    """
    try:
        loaded = read_results_archive(data)
    except zipfile.BadZipFile as exc:
        raise ResultsArchiveError(f"download-results is not a ZIP archive ({len(data)} bytes)") from exc
    out: dict[str, list[SampleResult]] = {}
    skipped = 0
    for task, rows in loaded.items():
        parsed: list[SampleResult] = []
        for row in rows:
            try:
                parsed.append(SampleResult.model_validate(row))
            except ValidationError:
                skipped += 1
        out[str(task)] = parsed
    if skipped:
        logger.warning("evaluator results: %d rows or tasks did not parse and were skipped", skipped)
    return out


class Evaluator:
    """``/v1/evaluation/jobs`` on the NeMo base URL."""

    def __init__(self, http: ServiceHTTP) -> None:
        self.http = http

    async def _post_job(self, body: Mapping[str, Any]) -> EvaluationJob:
        response = await self.http.request("POST", JOBS, json=dict(body), ok=(200, 201), idempotent=False)
        return EvaluationJob.model_validate(self.http.parse(response, "POST", JOBS))

    async def create_job(self, body: Mapping[str, Any], *, idempotency: IdempotencyKey | None = None) -> EvaluationJob:
        """Start an evaluation, or return the live job that already has this idempotency key."""
        namespace = str(body.get("namespace") or "") or None
        find: Callable[[], Awaitable[EvaluationJob | None]] | None = None
        if idempotency is not None:
            key = idempotency

            async def find_existing() -> EvaluationJob | None:
                return await self.find_job(key, namespace=namespace)

            find = find_existing

        async def post() -> EvaluationJob:
            return await self._post_job(body)

        job = await create_or_find(self.http, "evaluation job", post, find)
        logger.info("evaluator job %s status %s", job.id, job.status)
        return job

    async def find_job(self, idempotency: IdempotencyKey, *, namespace: str | None = None) -> EvaluationJob | None:
        """The newest job with this idempotency key that is not failed or cancelled, or None."""
        for job in await self.list_jobs(filters={"namespace": namespace} if namespace else None, max_items=500):
            if normalize_status(job.status) in DEAD_STATUSES:
                continue
            if idempotency.matches(description=job.description, custom_fields=job.custom_fields):
                return job
        return None

    async def list_jobs(
        self, *, filters: Mapping[str, Any] | None = None, sort: str = "-created_at", max_items: int | None = None
    ) -> list[EvaluationJob]:
        """Jobs matching ``filter[...]``, newest first."""
        params = {**filter_params(filters), "sort": sort}
        items = await self.http.list_all(JOBS, params=params, max_items=max_items)
        return [EvaluationJob.model_validate(item) for item in items]

    async def get_job(self, job_id: str) -> EvaluationJob:
        """The job with its status and ``status_details.progress``."""
        return EvaluationJob.model_validate(await self.http.get_json(_job_path(job_id)))

    async def get_status(self, job_id: str) -> EvaluationStatus:
        """Just the status details: message, progress, samples processed, per-task status."""
        return EvaluationStatus.model_validate(await self.http.get_json(_job_path(job_id, "/status")))

    async def get_results(self, job_id: str) -> EvaluationResult:
        """Aggregate results: ``tasks.<task>.metrics.<metric>.scores.<score>.value``."""
        return EvaluationResult.model_validate(await self.http.get_json(_job_path(job_id, "/results")))

    async def download_results(self, job_id: str) -> bytes:
        """The per-sample results ZIP, as bytes (keep it as an artifact, or parse it)."""
        response = await self.http.request(
            "GET", _job_path(job_id, "/download-results"), headers={"Accept": "application/zip"}, ok=(200,)
        )
        logger.info("evaluator job %s: downloaded %d bytes of results", job_id, len(response.content))
        return response.content

    async def sample_results(self, job_id: str) -> dict[str, list[SampleResult]]:
        """Per-sample results by task, parsed from the ZIP's ``results.json``."""
        return parse_results_archive(await self.download_results(job_id))

    async def cancel_job(self, job_id: str) -> EvaluationJob:
        """Cancel a running job; a finished one (400/409) is returned as it is."""
        path = _job_path(job_id, "/cancel")
        try:
            response = await self.http.request("POST", path, ok=(200, 202, 400, 409), idempotent=True)
        except NemoAPIError as err:
            if err.status != 405:
                raise
            raise self.http.error(
                "POST", path, 405, err.detail, hint="this Evaluator has no cancel endpoint (NeMo 25.04): delete the job"
            ) from err
        if response.status_code in (400, 409):
            logger.info("evaluator job %s not cancellable (%d): already finished", job_id, response.status_code)
        else:
            logger.info("evaluator job %s cancel requested", job_id)
        return await self.get_job(job_id)

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job and its results; False when it was not there."""
        return await self.http.delete(_job_path(job_id))

    async def wait_for_job(
        self,
        job_id: str,
        *,
        settings: PollSettings | None = None,
        on_progress: ProgressCallback | None = None,
        cancel_on_abort: bool = False,
    ) -> EvaluationJob:
        """Poll the job until ``completed`` (returned) or failed/stalled/timed out (raised)."""
        return await wait_for_answer(
            lambda: self.get_job(job_id),
            evaluation_observation,
            what=f"evaluation job {job_id}",
            settings=settings or PollSettings(interval_s=5.0),
            on_progress=on_progress,
            on_cancel=(lambda: self.cancel_job(job_id)) if cancel_on_abort else None,
            sleep=self.http.sleep,
        )
