"""Cleanup: remove what flywheel runs created on the NeMo platform, by run or by age (the blueprint's
``DELETE /api/jobs/{id}``).

What a run leaves behind, and how it is found:

- **evaluation jobs** carry the run that created them (``custom_fields.flywheel_run_id``): deleted (their
  results with them); one still running is cancelled first;
- **customization jobs** carry it too: a running one is cancelled; the Customizer cannot delete jobs, so the job
  record stays, but its **customized model** (the adapter, ``<ns>/customized-<model>@<job id>`` in the Entity
  Store) is deleted, unless it is protected (the promoted ``champion`` serves it);
- **datasets** are content-addressed and shared by the runs that read the same records: one is deleted (its
  Entity Store registration and its Data Store repo) when the jobs that read it are all being removed, never
  while a kept job reads it;
- **deployments** agent-flywheel created (``custom_fields.flywheel_managed``) list their users: a run is taken
  off the list, and the deployment deleted when no live user is left (a deployment the platform team made is
  never touched).

Selection: ``run_id`` (a flow run id) picks what that run created; ``older_than`` picks what was created before
``now - older_than``; both together pick what satisfies both. Only what agent-flywheel created is ever picked
(jobs with its run or content-hash labels, datasets registered by it, deployments it manages). Whatever belongs
to a run that is still live is kept. :func:`plan_cleanup` changes nothing (the dry run); :func:`apply_cleanup`
carries a plan out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.deployments import CREATOR_FIELD, deployment_users, is_managed
from agent_flywheel.nemo.entity_store import split_ref
from agent_flywheel.nemo.http import NemoAPIError
from agent_flywheel.nemo.idempotency import HASH_FIELD, RUN_FIELD
from agent_flywheel.nemo.models import CustomizationJob, Dataset, EvaluationJob
from agent_flywheel.nemo.status import Phase, classify

logger = logging.getLogger(__name__)

Kind = Literal["evaluation job", "customization job", "customized model", "dataset", "deployment"]
Action = Literal["delete", "cancel", "release", "keep"]
IsOver = Callable[[str], Awaitable[bool]]
"""Whether a flow run (by id) is over: its resources may go."""

#: ``custom_fields`` key marking a dataset agent-flywheel registered.
MANAGED_DATASET_FIELD = "flywheel_managed"
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TAG = re.compile(r"\[flywheel hash=[0-9a-f]+ run=(?P<run>[^\]\s]+)\]")


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``2w``, ``90s`` as a duration; a ValueError naming the accepted forms otherwise."""
    match = _AGE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r}; write a number and a unit: s, m, h, d or w (e.g. 7d, 12h)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class CleanupScope:
    """Which of agent-flywheel's leftovers to remove: those of ``run_id``, those older than ``older_than``, or
    those that are both."""

    namespace: str
    run_id: str | None = None
    older_than: timedelta | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.run_id is None and self.older_than is None:
            raise ValueError("say what to clean up: a run id, an age (older than), or both")

    def reason(self, created_at: str | None, run_id: str | None) -> str | None:
        """Why something is picked (None: it is not)."""
        reasons = []
        if self.run_id is not None:
            if run_id != self.run_id:
                return None
            reasons.append(f"created by run {run_id}")
        if self.older_than is not None:
            created = _when(created_at)
            if created is None or created > self.now - self.older_than:
                return None
            reasons.append(f"created {created:%Y-%m-%d %H:%M} UTC, older than {self.older_than}")
        return ", ".join(reasons)


@dataclass(frozen=True)
class CleanupItem:
    """One thing a cleanup removes (or keeps, saying why)."""

    kind: Kind
    ref: str
    action: Action
    reason: str
    run_id: str | None = None
    stop_first: bool = False
    """A job still running (its run is over): cancelled before it is deleted."""

    def line(self) -> str:
        """``delete   evaluation job eval-123: created by run ...``."""
        return f"{self.action:<8} {self.kind} {self.ref}: {self.reason}"


def _run_of(custom_fields: Mapping[str, Any] | None, description: str | None) -> str | None:
    fields = custom_fields or {}
    run = fields.get(RUN_FIELD)
    if isinstance(run, str) and run:
        return run
    tag = _TAG.search(description or "")
    return tag["run"] if tag and tag["run"] != "-" else None


def _ours(custom_fields: Mapping[str, Any] | None, description: str | None) -> bool:
    fields = custom_fields or {}
    return RUN_FIELD in fields or HASH_FIELD in fields or bool(_TAG.search(description or ""))


def _datasets_of_evaluation(job: EvaluationJob) -> set[str]:
    """``ns/name`` of every dataset an evaluation job's tasks read (``hf://datasets/ns/name/file``)."""
    found: set[str] = set()
    config = job.config if isinstance(job.config, Mapping) else {}
    for task in (config.get("tasks") or {}).values():
        dataset = task.get("dataset") if isinstance(task, Mapping) else None
        url = dataset.get("files_url") if isinstance(dataset, Mapping) else None
        if isinstance(url, str) and url.startswith("hf://datasets/"):
            parts = url.removeprefix("hf://datasets/").split("/")
            if len(parts) >= 2:
                found.add(f"{parts[0]}/{parts[1]}")
    return found


def _dataset_of_customization(job: CustomizationJob) -> set[str]:
    dataset = job.dataset
    if isinstance(dataset, Mapping) and dataset.get("name"):
        return {f"{dataset.get('namespace') or job.namespace}/{dataset['name']}"}
    if isinstance(dataset, str) and "/" in dataset:
        return {dataset}
    return set()


def _managed_dataset(dataset: Dataset) -> bool:
    fields = dataset.custom_fields or {}
    if str(fields.get(MANAGED_DATASET_FIELD, "")).lower() == "true":
        return True
    description = dataset.description or ""
    return (dataset.name or "").startswith("flywheel-") and description.startswith(("agent-flywheel", "ICL eval set"))


async def _live(run_id: str | None, is_over: IsOver, cache: dict[str, bool]) -> bool:
    if run_id is None:
        return False
    if run_id not in cache:
        cache[run_id] = not await is_over(run_id)
    return cache[run_id]


async def plan_cleanup(
    nemo: NemoClient,
    scope: CleanupScope,
    *,
    is_over: IsOver,
    protected_models: Collection[str] = (),
    max_items: int = 2000,
) -> list[CleanupItem]:
    """What a cleanup of ``scope`` would do, changing nothing (``keep`` items say why something picked stays).

    ``protected_models`` are model ids never deleted (``ns/name@cust-...`` the champion serves).
    """
    ns = scope.namespace
    live: dict[str, bool] = {}
    items: list[CleanupItem] = []
    removed_jobs_read: set[str] = set()
    kept_jobs_read: set[str] = set()

    evaluations = await nemo.evaluator.list_jobs(filters={"namespace": ns}, max_items=max_items)
    for job in evaluations:
        if not _ours(job.custom_fields, job.description):
            continue
        run = _run_of(job.custom_fields, job.description)
        reason = scope.reason(job.created_at, run)
        reads = _datasets_of_evaluation(job)
        if reason is None:
            kept_jobs_read |= reads
        elif job.phase in (Phase.WAITING, Phase.RUNNING) and await _live(run, is_over, live):
            kept_jobs_read |= reads
            items.append(CleanupItem("evaluation job", job.id, "keep", f"{reason}; run {run} is still live", run))
        else:
            removed_jobs_read |= reads
            running = job.phase in (Phase.WAITING, Phase.RUNNING)
            items.append(CleanupItem("evaluation job", job.id, "delete", f"{reason} ({job.status})", run, running))

    customizations = await nemo.customizer.list_jobs(filters={"namespace": ns}, max_items=max_items)
    for tune in customizations:
        if not _ours(tune.custom_fields, tune.description):
            continue
        run = _run_of(tune.custom_fields, tune.description)
        reason = scope.reason(tune.created_at, run)
        reads = _dataset_of_customization(tune)
        if reason is None:
            kept_jobs_read |= reads
            continue
        phase = classify(tune.status)
        if phase in (Phase.WAITING, Phase.RUNNING):
            if await _live(run, is_over, live):
                kept_jobs_read |= reads
                items.append(CleanupItem("customization job", tune.id, "keep", f"{reason}; run {run} is live", run))
                continue
            items.append(CleanupItem("customization job", tune.id, "cancel", f"{reason} ({tune.status})", run))
        removed_jobs_read |= reads
        if phase is Phase.SUCCEEDED and tune.output_model:
            namespace, name = split_ref(tune.output_model)
            if await nemo.entity_store.get_model(namespace, name) is None:
                continue  # removed already
            if tune.output_model in protected_models:
                items.append(
                    CleanupItem("customized model", tune.output_model, "keep", f"{reason}; it is the champion", run)
                )
            else:
                items.append(CleanupItem("customized model", tune.output_model, "delete", f"output of {tune.id}", run))

    datasets = await nemo.entity_store.list_datasets(ns, max_items=max_items)
    for dataset in datasets:
        ref = f"{dataset.namespace or ns}/{dataset.name}"
        if not _managed_dataset(dataset):
            continue
        if ref in kept_jobs_read:
            if ref in removed_jobs_read:
                items.append(CleanupItem("dataset", ref, "keep", "read by jobs that are kept"))
            continue
        if ref in removed_jobs_read:
            items.append(CleanupItem("dataset", ref, "delete", "read only by jobs being removed"))
        elif scope.run_id is None and scope.reason(dataset.created_at, None) is not None:
            items.append(CleanupItem("dataset", ref, "delete", f"{scope.reason(dataset.created_at, None)}, unread"))

    for deployment in await nemo.deployments.list_deployments(ns, max_items=max_items):
        if not is_managed(deployment):
            continue
        ref = f"{deployment.namespace or ns}/{deployment.name}"
        users = deployment_users(deployment)
        creator = str((deployment.custom_fields or {}).get(CREATOR_FIELD) or "") or None
        if scope.run_id is not None:
            if scope.run_id not in users and scope.run_id != creator:
                continue
            if scope.older_than is not None and scope.reason(deployment.created_at, None) is None:
                continue
            if await _live(scope.run_id, is_over, live):
                items.append(CleanupItem("deployment", ref, "keep", f"run {scope.run_id} is still live", scope.run_id))
            else:
                others = [u for u in users if u != scope.run_id]
                why = f"used by run {scope.run_id}" + (
                    f"; deleted unless one of {', '.join(others)} is live" if others else " only"
                )
                items.append(CleanupItem("deployment", ref, "release", why, scope.run_id))
            continue
        reason = scope.reason(deployment.created_at, None)
        if reason is None:
            continue
        alive = [u for u in users if await _live(u, is_over, live)]
        if alive:
            items.append(CleanupItem("deployment", ref, "keep", f"{reason}; used by live run(s) {', '.join(alive)}"))
        else:
            items.append(CleanupItem("deployment", ref, "delete", f"{reason}; no live user"))
    return items


async def apply_cleanup(nemo: NemoClient, items: Iterable[CleanupItem], *, is_over: IsOver) -> list[str]:
    """Carry a plan out: cancel, then delete jobs, models, datasets (registration and Data Store repo), and
    release or delete deployments. Each failure is reported in its line; the rest go on."""
    order = {"customization job": 0, "evaluation job": 1, "customized model": 2, "dataset": 3, "deployment": 4}
    done: list[str] = []
    for item in sorted(items, key=lambda i: order[i.kind]):
        if item.action == "keep":
            done.append(f"kept {item.kind} {item.ref}: {item.reason}")
            continue
        try:
            done.append(await _apply(nemo, item, is_over))
        except (NemoAPIError, ValueError) as exc:
            done.append(f"could not {item.action} {item.kind} {item.ref}: {exc}")
    return done


async def _apply(nemo: NemoClient, item: CleanupItem, is_over: IsOver) -> str:
    if item.kind == "customization job":
        await nemo.customizer.cancel_job(item.ref)
        return f"cancelled customization job {item.ref}"
    if item.kind == "evaluation job":
        if item.stop_first:
            await nemo.evaluator.cancel_job(item.ref)
        gone = await nemo.evaluator.delete_job(item.ref)
        return f"deleted evaluation job {item.ref}" if gone else f"evaluation job {item.ref} was already gone"
    if item.kind == "customized model":
        gone = await nemo.entity_store.delete_model_ref(item.ref)
        return f"deleted customized model {item.ref}" if gone else f"customized model {item.ref} was already gone"
    if item.kind == "dataset":
        namespace, name = split_ref(item.ref)
        registered = await nemo.entity_store.delete_dataset(namespace, name)
        files = await nemo.datastore.delete_repo(namespace, name)
        return f"deleted dataset {item.ref} (registration {'deleted' if registered else 'gone'}, files " + (
            "deleted)" if files else "gone)"
        )
    namespace, name = split_ref(item.ref)
    if item.action == "release" and item.run_id is not None:
        release = await nemo.deployments.release(namespace, name, item.run_id, is_over=is_over)
        if release.deleted or not release.existed:
            return f"deleted deployment {item.ref}"
        return f"left deployment {item.ref} for live run(s) {', '.join(release.users)}"
    gone = await nemo.deployments.delete(namespace, name)
    return f"deleted deployment {item.ref}" if gone else f"deployment {item.ref} was already gone"
