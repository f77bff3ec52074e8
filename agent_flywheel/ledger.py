"""What flywheel runs started on the NeMo platform, read from the platform itself: no ledger file on any disk.

Every job a run starts carries the run's flow run id (``custom_fields.flywheel_run_id``), and every deployment
agent-flywheel creates carries the runs using it (``flywheel_users``), so whatever machine asks, the platform
answers what belongs to whom, including a job created at the instant its run was killed. A job can also be
used by runs that took it over from a run that died (a new run with the same inputs finds the job by its
idempotency key and waits for it). Jobs cannot be relabelled (the Customizer and Evaluator have no PATCH for
jobs), so those **adopters** are kept beside them in the state store (``<prefix>-job-<job id>``, a users list
like a deployment's). The owners of a job are the run on its label plus its adopters; of a deployment, its users.

:func:`list_owned` reads what is live; :func:`judge` says, given which owners are over, whether to stop it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.deployments import deployment_users, is_managed
from agent_flywheel.nemo.idempotency import RUN_FIELD
from agent_flywheel.nemo.status import JobStatus
from agent_flywheel.records.timestamps import parse_timestamp
from agent_flywheel.state import StateStore, state_kind_prefix, state_name

ResourceKind = Literal["deployment", "customization", "evaluation"]
#: The job statuses in which a job still holds (or waits for) GPUs: what a dead run can leave running.
LIVE_JOB_STATUSES = (JobStatus.CREATED, JobStatus.PENDING, JobStatus.RUNNING)
#: The state documents that list the adopters of a job.
JOB_USERS_KIND = "job"


@dataclasses.dataclass(frozen=True)
class Resource:
    """A job or deployment some flywheel run started: ``ref`` is the job id or ``namespace/name``."""

    kind: ResourceKind
    ref: str
    owners: tuple[str, ...]
    description: str = ""
    status: str = ""
    created_at: datetime | None = None

    @property
    def is_job(self) -> bool:
        """A customization or evaluation job (a deployment otherwise)."""
        return self.kind != "deployment"


Action = Literal["stop", "drop-users", "keep"]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to do about one resource and why: ``stop`` (cancel the job, delete the deployment), ``drop-users``
    (a deployment some of whose users are over: take them off its list) or ``keep``."""

    resource: Resource
    action: Action
    reason: str
    over: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for logs and the reaper's table."""
        verb = {"stop": "stop", "drop-users": "drop users of", "keep": "keep"}[self.action]
        return f"{verb} {self.resource.kind} {self.resource.ref}: {self.reason}"


def job_users_name(job_id: str) -> str:
    """The state document listing the runs that adopted ``job_id``."""
    return state_name(JOB_USERS_KIND, job_id)


def job_users_prefix() -> str:
    """The beginning of every job users document's name (to list them)."""
    return state_kind_prefix(JOB_USERS_KIND)


def read_job_users(state: StateStore, job_id: str) -> list[str]:
    """The runs that adopted ``job_id`` (empty when none did)."""
    entry = state.get(job_users_name(job_id))
    users = entry.get("users") if isinstance(entry, dict) else None
    return [str(user) for user in users] if isinstance(users, list) else []


def add_job_user(state: StateStore, job_id: str, kind: ResourceKind, run_id: str) -> list[str]:
    """Record that run ``run_id`` uses (adopted) ``job_id``; returns the users now listed.

    The caller holds its workload, and a job's inputs include the workload, so no other run writes this
    document at the same time.
    """
    users = read_job_users(state, job_id)
    if run_id not in users:
        users.append(run_id)
        state.set(job_users_name(job_id), {"job_id": job_id, "kind": kind, "users": users})
    return users


def remove_job_user(state: StateStore, job_id: str, run_id: str) -> None:
    """Run ``run_id`` is done with ``job_id``: off its users (the document goes with the last one)."""
    entry = state.get(job_users_name(job_id))
    users = read_job_users(state, job_id)
    if run_id not in users:
        return
    users.remove(run_id)
    if users:
        state.set(job_users_name(job_id), {**(entry if isinstance(entry, dict) else {}), "users": users})
    else:
        state.delete(job_users_name(job_id))


def all_job_users(state: StateStore) -> dict[str, list[str]]:
    """Every job's adopters, by job id (read once per reaper pass)."""
    found: dict[str, list[str]] = {}
    for name in state.names(job_users_prefix()):
        entry = state.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("job_id"), str):
            found[entry["job_id"]] = [str(user) for user in entry.get("users") or []]
    return found


def _created(value: Any) -> datetime | None:
    try:
        return parse_timestamp(value) if value else None
    except ValueError:
        return None


def _owners(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(owner for group in groups for owner in group if owner))


async def list_owned(
    nemo: NemoClient,
    *,
    namespaces: Sequence[str] | None = None,
    adopters: Mapping[str, Sequence[str]] | None = None,
) -> list[Resource]:
    """The live jobs (created, pending, running) that carry a flywheel run's label, and the deployments
    agent-flywheel created, in ``namespaces`` (all when None), each with its owners.

    Jobs are asked for by status (``filter[status]``), so the many finished jobs of a platform are not read.
    """
    adopted = adopters or {}
    found: list[Resource] = []
    scopes: list[str | None] = list(namespaces) if namespaces else [None]
    for namespace in scopes:
        base = {"namespace": namespace} if namespace else {}
        for status in LIVE_JOB_STATUSES:
            filters = {**base, "status": str(status)}
            for cjob in await nemo.customizer.list_jobs(filters=filters):
                label = str((cjob.custom_fields or {}).get(RUN_FIELD) or "")
                if label:
                    found.append(
                        Resource(
                            "customization",
                            cjob.id,
                            _owners([label], adopted.get(cjob.id, ())),
                            str((cjob.custom_fields or {}).get("flywheel_base_model") or cjob.name or ""),
                            cjob.status,
                            _created(cjob.created_at),
                        )
                    )
            for ejob in await nemo.evaluator.list_jobs(filters=filters):
                fields = ejob.custom_fields or {}
                label = str(fields.get(RUN_FIELD) or "")
                if label:
                    what = f"{fields.get('flywheel_eval_mode', 'evaluation')} {fields.get('flywheel_target_model', '')}"
                    found.append(
                        Resource(
                            "evaluation",
                            ejob.id,
                            _owners([label], adopted.get(ejob.id, ())),
                            what.strip(),
                            ejob.status,
                            _created(ejob.created_at),
                        )
                    )
        for deployment in await nemo.deployments.list_deployments(namespace):
            if not is_managed(deployment):
                continue
            found.append(
                Resource(
                    "deployment",
                    f"{deployment.namespace}/{deployment.name}",
                    _owners(deployment_users(deployment)),
                    ", ".join(deployment.models or []),
                    deployment.status,
                    _created(deployment.created_at),
                )
            )
    unique = {(r.kind, r.ref): r for r in found}  # a job listed under two statuses while it moved on
    return list(unique.values())


def judge(
    resource: Resource,
    over: Collection[str],
    *,
    now: datetime,
    max_age: timedelta | None = None,
    leaving: str | None = None,
) -> Verdict:
    """Stop a resource when every owner is over (a run in a final state, or marked crashed), or when it is
    older than ``max_age`` (whoever owns it); a deployment some of whose users are over drops them.

    ``leaving``: a run that is ending and stops what is its own (its failure hook): it counts as over.
    An owner not in ``over`` (alive, or unknown to Prefect) keeps the resource: unsure means alive.
    """
    ended = set(over) | ({leaving} if leaving else set())
    gone = tuple(owner for owner in resource.owners if owner in ended)
    alive = [owner for owner in resource.owners if owner not in ended]
    if max_age is not None and resource.created_at is not None and now - resource.created_at > max_age:
        age_h = (now - resource.created_at).total_seconds() / 3600
        return Verdict(resource, "stop", f"older than the limit ({age_h:.1f} h > {max_age.total_seconds() / 3600:g} h)")
    if not resource.owners:
        return Verdict(resource, "stop", "no flywheel run uses it")
    if not alive:
        return Verdict(resource, "stop", f"every run that uses it is over ({', '.join(gone)})", gone)
    if resource.kind == "deployment" and gone:
        return Verdict(resource, "drop-users", f"runs over: {', '.join(gone)}; still used by {', '.join(alive)}", gone)
    return Verdict(resource, "keep", f"in use by {', '.join(alive)}")
