"""Tasks that drive NeMo: deploy a NIM, evaluate a model, fine-tune it, tear down, clean up after a run.

What makes a run safe to retry, resume or kill:

- **Idempotency keys are content hashes** of a job's inputs (workload, client, model, mode, the
  content-addressed dataset name, the configs) and nothing else, not the flow run id: a *new* run
  after a crash finds the job the dead run started, running or completed, and waits for it instead of
  starting a second one (a failed or cancelled job is never reused).
- **Task caching**: ``evaluate`` persists its results in the result storage (:func:`tasks.state_store.result_storage`:
  ``.flywheel/results`` on one machine, the block ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` names for several),
  keyed on the same inputs plus the Evaluator's URL (never on the client it is handed), so a rerun on any
  worker does not evaluate again what was already evaluated. A fine-tune's persisted result is the
  Customizer's job itself: ``customize`` finds it by its key (a cached copy could name an adapter that a
  reset platform no longer serves).
- **No ledger file**: every job carries the flow run id that created it (``custom_fields.flywheel_run_id``),
  so the platform itself lists what a run started, to any machine (:mod:`agent_flywheel.ledger`). A run that
  finds the job another run started (a run that died, or a live one with the same inputs) waits for it and
  adds itself to the job's users (a state document: jobs cannot be relabelled), so nobody stops a job a
  live run waits for. The failure, crash and cancellation hooks, and the ``reaper`` flow for runs that died
  without them, stop what no live run uses (:mod:`tasks.reaping`).
- **Deployments are shared**, never torn down under another run: a run joins a deployment's users before
  using it and leaves when done; only the last live user deletes it (see
  :mod:`agent_flywheel.nemo.deployments`). Joining and leaving hold the ``flywheel-deployment-users`` lock.
- **Waits end when the output cannot come**: a fine-tune that reports ``NotEnoughResources`` is cancelled at
  once; a model or adapter that NIM does not serve within :data:`SERVE_GRACE_S` of its deployment being
  ready or its fine-tune completing fails the step; a completed fine-tune whose output model is no longer in
  the Entity Store is not reused.

Failures that retrying cannot fix (a job that failed, stalled or timed out) raise
:class:`FlywheelStepError`, which names the service, the job and what to do, and are not retried by
Prefect; transient HTTP failures are retried with backoff by the client and, once that budget is spent,
once more by the task.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any, ParamSpec, TypeVar

import httpx
from prefect import Task, get_run_logger, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State
from pydantic import BaseModel, SecretStr

from agent_flywheel.config import FlywheelConfig, NIMConfig
from agent_flywheel.evaluation.results import (
    ResultsArchiveError,
    parse_aggregate_results,
    parse_sample_results,
    sample_means,
)
from agent_flywheel.ledger import ResourceKind, add_job_user, remove_job_user
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.customizer import NOT_ENOUGH_RESOURCES
from agent_flywheel.nemo.entity_store import split_ref
from agent_flywheel.nemo.http import NemoAPIError
from agent_flywheel.nemo.idempotency import RUN_FIELD, IdempotencyKey, content_hash
from agent_flywheel.nemo.payloads import (
    customization_config_body,
    customization_job_body,
    dms_deployment_body_for,
    eval_config_for_run,
    evaluation_job_body,
)
from agent_flywheel.nemo.poller import JobFailedError, JobWaitError, PollSettings
from agent_flywheel.nemo.status import Phase, classify
from agent_flywheel.transient import is_transient
from tasks.ownership import deployment_users_lock, release_deployment, release_line
from tasks.retries import retry_if_transient
from tasks.state_store import state_store, task_result_storage

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: Part of every cache key: bump it when what ``evaluate`` returns changes meaning.
CACHE_VERSION = "1"
#: How long NIM may take to serve a model once its deployment is ready or its fine-tune completed (the NIM
#: proxy syncs, LoRA adapters load on a refresh interval: minutes at most); after that it never will.
SERVE_GRACE_S = 600.0
RERUN = "then run the flywheel again: what already finished is cached and reused, only this step runs again"


class FlywheelStepError(RuntimeError):
    """A step failed for good: the message names the service, the job or deployment, and what to do."""

    def __init__(self, service: str, subject: str, problem: str, todo: str) -> None:
        self.service = service
        self.subject = subject
        self.problem = problem
        self.todo = todo
        super().__init__(f"{service}: {subject} {problem}. What to do: {todo}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.service, self.subject, self.problem, self.todo))


class RunContext(BaseModel):
    """What every NeMo task of one flywheel run needs to know."""

    workload_id: str
    client_id: str
    flow_run_id: str
    cfg: FlywheelConfig
    tool_calling: bool
    namespace: str

    def key(self, *parts: Any) -> IdempotencyKey:
        """The idempotency key of a job: a hash of what it is made of, the same in every run.

        Not scoped to the flow run: a run started after a crash must find the job the dead run started.
        """
        return IdempotencyKey(content_hash(self.workload_id, self.client_id, *parts))

    def poll(self, interval_s: float | None = None) -> PollSettings:
        ev = self.cfg.evaluation_config
        return PollSettings(
            interval_s=interval_s or ev.poll_interval_s, stall_timeout_s=ev.timeout_s, timeout_s=4 * ev.timeout_s
        )

    def serve_poll(self) -> PollSettings:
        """Waiting for NIM to serve a model that is ready: bounded by :data:`SERVE_GRACE_S` (or the stall timeout
        when that is shorter), since nothing else will move it along."""
        ev = self.cfg.evaluation_config
        grace = min(SERVE_GRACE_S, ev.timeout_s)
        return PollSettings(interval_s=ev.poll_interval_s, stall_timeout_s=grace, timeout_s=grace)

    def labelled(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A job body with this run as its owner in ``custom_fields`` (for a reaper on any machine)."""
        return {**body, "custom_fields": {**dict(body.get("custom_fields") or {}), RUN_FIELD: self.flow_run_id}}


class DeploymentRef(BaseModel):
    """A deployment this run uses: ``managed`` when agent-flywheel created it (then this run is one of its
    users and the last user deletes it), ``created`` when this very run did."""

    namespace: str
    name: str
    model: str
    managed: bool
    created: bool = False


class EvalOutcome(BaseModel):
    """One evaluation: aggregate metrics (our names), per-sample rows for the gate, and its job id."""

    model: str
    eval_mode: str
    job_id: str | None = None
    metrics: dict[str, float] = {}
    samples: list[dict[str, Any]] = []
    seconds: float = 0.0
    error: str | None = None
    customization: CustomizationOutcome | None = None


class CustomizationOutcome(BaseModel):
    """One fine-tune: the job, the model id NIM serves it under, and its loss curves."""

    job_id: str
    output_model: str
    train_loss: list[tuple[int, float]] = []
    val_loss: list[tuple[int, float]] = []
    seconds: float = 0.0


EvalOutcome.model_rebuild()


class _Progress:
    """A Prefect progress artifact fed by the poller's callbacks."""

    def __init__(self, key: str, description: str) -> None:
        self.key = key
        self.description = description
        self.artifact_id: Any = None
        self.last_logged = -1.0

    async def __call__(self, status: str, percent: float | None, details: Mapping[str, Any]) -> None:
        value = max(0.0, min(100.0, percent if percent is not None else 0.0))
        if self.artifact_id is None:
            self.artifact_id = await acreate_progress_artifact(
                progress=value, key=self.key, description=self.description
            )
        else:
            await aupdate_progress_artifact(self.artifact_id, value)
        if value - self.last_logged >= 25 or classify(status) is not Phase.RUNNING:
            self.last_logged = value
            get_run_logger().info("%s: %s, %.0f%% %s", self.description, status, value, dict(details) or "")


def _artifact_key(*parts: str) -> str:
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:100]


# --- resuming: taking over the jobs another run started ---------------------------------------------

#: The flow runs of this process that started or joined something on NeMo (their failure hooks ask NeMo
#: what to stop only then). Marked before the request, so a job created as the run dies is covered too.
_ON_NEMO: set[str] = set()


def mark_on_nemo(flow_run_id: str) -> None:
    """This run is about to create or join something on NeMo."""
    _ON_NEMO.add(flow_run_id)


def was_on_nemo(flow_run_id: str) -> bool:
    """Whether this process created or joined anything on NeMo for the run."""
    return flow_run_id in _ON_NEMO


def adopt(ctx: RunContext, kind: ResourceKind, job_id: str, status: str, fields: Mapping[str, Any] | None) -> bool:
    """Join the users of a job another run started (its label names that run): this run now waits for it, so
    no reaper and no hook of the other run stops it while this run is alive. Returns whether it adopted."""
    label = str((fields or {}).get(RUN_FIELD) or "")
    if not label or label == ctx.flow_run_id or classify(status).terminal:
        return False
    add_job_user(state_store(), job_id, kind, ctx.flow_run_id)
    get_run_logger().warning("%s job %s was started by flow run %s; this run takes it over", kind, job_id, label)
    return True


def leave_job(ctx: RunContext, job_id: str, adopted: bool) -> None:
    """This run no longer waits for a job it adopted (it ended, or this run stopped waiting)."""
    if adopted:
        remove_job_user(state_store(), job_id, ctx.flow_run_id)


# --- failures: retry what is transient, explain what is not --------------------------------------------


def _transient(task_: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect's retry condition: retry HTTP failures that may pass; never a job that failed or stalled."""
    error = state.data if isinstance(state.data, BaseException) else None
    if isinstance(error, FlywheelStepError | JobWaitError):
        return False
    if isinstance(error, NemoAPIError):
        return error.retryable
    return error is None or is_transient(error)


def _problem(exc: JobWaitError) -> str:
    text = str(exc)
    return text[len(exc.what) :].strip() if exc.what and text.startswith(exc.what) else text


async def _quietly(work: Awaitable[Any]) -> bool:
    """Run a best-effort cleanup call; False when it failed (the failure hooks will try again)."""
    try:
        await work
    except (NemoAPIError, httpx.HTTPError) as exc:
        get_run_logger().warning("cleanup call failed (%s); the run's failure hook will try again", exc)
        return False
    return True


def _customization_error(exc: JobWaitError, job_id: str, model: str, base_url: str) -> FlywheelStepError:
    problem = _problem(exc)
    if isinstance(exc, JobFailedError):
        todo = (
            f"read its logs (GET {base_url}/v1/customization/jobs/{job_id}/container-logs), fix the cause "
            f"(training data, customizer_configs, GPUs), {RERUN}"
        )
    elif NOT_ENOUGH_RESOURCES in problem:
        todo = f"free GPUs in the cluster or lower customizer_configs.gpus; the job was cancelled; {RERUN}"
    else:
        todo = (
            "check the Customizer's job queue and GPU nodes (or raise evaluation_config.timeout_s); "
            f"the job was cancelled; {RERUN}"
        )
    return FlywheelStepError(
        "NeMo Customizer", f"customization job {job_id} (LoRA fine-tune of {model})", problem, todo
    )


def _evaluation_error(
    exc: JobWaitError, job_id: str, eval_mode: str, model: str, dataset: str, base_url: str
) -> FlywheelStepError:
    todo = (
        f"read its logs (GET {base_url}/v1/evaluation/jobs/{job_id}/logs); check that {model} is deployed and "
        f"answers and that dataset {dataset} is readable; {RERUN}"
    )
    if not isinstance(exc, JobFailedError):
        todo = f"the job was cancelled; {todo}"
    return FlywheelStepError("NeMo Evaluator", f"evaluation job {job_id} ({eval_mode} of {model})", _problem(exc), todo)


def _results_error(
    exc: ResultsArchiveError, job_id: str, eval_mode: str, model: str, base_url: str
) -> FlywheelStepError:
    todo = (
        f"download them (GET {base_url}/v1/evaluation/jobs/{job_id}/download-results) and check the archive: the "
        "flywheel reads results.json or per-task JSON/JSONL files of {item, sample, metrics} rows; without "
        "per-sample rows the gate cannot pair candidate and teacher"
    )
    return FlywheelStepError(
        "NeMo Evaluator", f"evaluation job {job_id} ({eval_mode} of {model})", f"completed, but {exc}", todo
    )


def _deployment_error(exc: JobWaitError, ref: DeploymentRef, base_url: str, removed: bool) -> FlywheelStepError:
    todo = (
        f"check the deployment's events in DMS ({base_url}), the NIM image and tag, and the GPUs it asks for"
        f"{'; the deployment was deleted' if removed else ''}; {RERUN}"
    )
    return FlywheelStepError(
        "NeMo Deployment Management", f"deployment {ref.namespace}/{ref.name} of {ref.model}", _problem(exc), todo
    )


def _nim_error(exc: JobWaitError, model: str, base_url: str) -> FlywheelStepError:
    todo = f"check that NIM at {base_url} lists {model} in GET /v1/models (adapters can take minutes to load); {RERUN}"
    return FlywheelStepError("NIM", f"model {model}", _problem(exc), todo)


# --- caching: results persisted in the result storage, keyed on the inputs that matter -------------------


def _resumable(task_: Task[P, R]) -> Task[P, R]:
    return task_.with_options(result_storage=task_result_storage())


def _served_as(model: str, ctx: RunContext) -> dict[str, Any]:
    """What else decides how ``model`` answers: the NIM image it is deployed from (a new tag: a new model)."""
    for nim in (ctx.cfg.teacher, *ctx.cfg.nims):
        if nim.model_name == model:
            return {"registry_base": nim.registry_base, "tag": nim.tag}
    return {}


def _evaluation_inputs(
    model: str, eval_mode: str, dataset: str, ctx: RunContext, judge_api_key: SecretStr | None = None
) -> tuple[dict[str, Any], IdempotencyKey]:
    """The eval config to send and the job's idempotency key (a hash of the config *without* the judge's key: a
    new key is no new evaluation, and the key never reaches a name, a description or a cache key).

    A remote judge's API key goes into the config sent to the Evaluator, in the judge's
    ``api_endpoint.api_key``: the one place NeMo needs it to call the judge (the blueprint does the same).
    """
    files_url = f"hf://datasets/{ctx.namespace}/{dataset}/eval_data.jsonl"
    config = eval_config_for_run(ctx.cfg, files_url, tool_calling=ctx.tool_calling)
    key = ctx.key("evaluation", model, eval_mode, config, _served_as(model, ctx))
    if judge_api_key is not None:
        config = eval_config_for_run(ctx.cfg, files_url, tool_calling=ctx.tool_calling, judge_api_key=judge_api_key)
    return config, key


def _customization_key(nim: NIMConfig, train_dataset: str, ctx: RunContext) -> IdempotencyKey:
    cfg = ctx.cfg
    return ctx.key(
        "customization", nim.model_name, train_dataset, cfg.training_config, cfg.lora_config, nim.customizer_configs
    )


def _evaluation_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    ctx: RunContext = parameters["ctx"]
    nemo: NemoClient = parameters["nemo"]
    _, key = _evaluation_inputs(parameters["model"], parameters["eval_mode"], parameters["dataset"], ctx)
    service = nemo.endpoints.url_for("evaluator")
    return "evaluate-" + content_hash(CACHE_VERSION, service, ctx.namespace, key.content_hash)


# --- the tasks -----------------------------------------------------------------------------------------


# The tasks below are handed the run's NeMo client: none is cached on its inputs (``evaluate`` has its own
# key), so a client never becomes part of a cache key.


@task(name="deploy-nim", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=_transient, cache_policy=NO_CACHE)
async def deploy_nim(nim: NIMConfig, ctx: RunContext, nemo: NemoClient) -> DeploymentRef:
    """Deploy the NIM through DMS, or join the deployment that exists; wait until NIM serves the model.

    The run is added to the deployment's users first (a deployment that agent-flywheel did not create is
    used as it is), so no other run deletes it meanwhile. When it never becomes ready, this run leaves it
    again (deleting it when no other run uses it) before the error is raised.
    """
    body = dms_deployment_body_for(
        nim.model_name,
        ctx.namespace,
        gpus=nim.gpus,
        tag=nim.tag,
        pvc_size=nim.pvc_size,
        registry_base=nim.registry_base,
        description=f"agent-flywheel candidate for {ctx.workload_id} (created by run {ctx.flow_run_id})",
    )
    name = str(body["name"])
    mark_on_nemo(ctx.flow_run_id)
    async with deployment_users_lock(ctx.flow_run_id):
        use = await nemo.deployments.use(body, ctx.flow_run_id)
    ref = DeploymentRef(
        namespace=ctx.namespace, name=name, model=nim.model_name, managed=use.managed, created=use.created
    )
    get_run_logger().info(
        "deploy: %s/%s %s%s",
        ctx.namespace,
        name,
        "created" if use.created else "exists, joined" if use.managed else "exists (not ours), used as it is",
        f"; users: {', '.join(use.users)}" if use.managed and not use.created else "",
    )
    progress = _Progress(_artifact_key("deploy", nim.model_name), f"deploy {nim.model_name}")
    try:
        await nemo.deployments.wait_until_ready(ctx.namespace, name, settings=ctx.poll(), on_progress=progress)
    except JobWaitError as exc:
        removed = False
        if use.managed:
            released = await release_deployment(ctx.namespace, name, ctx.flow_run_id, nemo)
            removed = released is not None and released.deleted
        raise _deployment_error(exc, ref, nemo.deployments.http.base_url, removed) from exc
    try:
        await nemo.nim.wait_for_model(nim.model_name, settings=ctx.serve_poll())
    except JobWaitError as exc:
        raise _nim_error(exc, nim.model_name, nemo.nim.http.base_url) from exc
    return ref


@task(
    name="teardown-deployment",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
async def teardown_deployment(ref: DeploymentRef, ctx: RunContext, nemo: NemoClient) -> bool:
    """Leave the deployment: deleted when no other live run uses it (one agent-flywheel did not create is
    never deleted). True when it was deleted."""
    if not ref.managed:
        get_run_logger().info(
            "teardown: %s/%s was not created by agent-flywheel; left running", ref.namespace, ref.name
        )
        return False
    release = await release_deployment(ref.namespace, ref.name, ctx.flow_run_id, nemo)
    get_run_logger().info("teardown: %s", release_line("deployment", f"{ref.namespace}/{ref.name}", release))
    return release is not None and release.deleted


@task(
    name="evaluate",
    retries=1,
    retry_delay_seconds=[30],
    retry_condition_fn=_transient,
    cache_key_fn=_evaluation_cache_key,
    persist_result=True,
)
async def evaluate_task(model: str, eval_mode: str, dataset: str, ctx: RunContext, nemo: NemoClient) -> EvalOutcome:
    """Run one NeMo Evaluator job on ``dataset``'s eval file and return aggregate and per-sample scores."""
    started = time.monotonic()
    config, key = _evaluation_inputs(model, eval_mode, dataset, ctx, nemo.remote_key("judge"))
    body = ctx.labelled(
        evaluation_job_body(
            config, model, ctx.namespace, idempotency=key, eval_mode=eval_mode, workload_id=ctx.workload_id
        )
    )
    mark_on_nemo(ctx.flow_run_id)
    job = await nemo.evaluator.create_job(body, idempotency=key)
    adopted = adopt(ctx, "evaluation", job.id, job.status, job.custom_fields)
    progress = _Progress(_artifact_key(eval_mode, model), f"{eval_mode} {model}")
    try:
        await nemo.evaluator.wait_for_job(job.id, settings=ctx.poll(), on_progress=progress, cancel_on_abort=True)
    except JobWaitError as exc:
        ended = isinstance(exc, JobFailedError) or await _quietly(nemo.evaluator.cancel_job(job.id))
        if ended:
            leave_job(ctx, job.id, adopted)
        raise _evaluation_error(exc, job.id, eval_mode, model, dataset, nemo.evaluator.http.base_url) from exc
    leave_job(ctx, job.id, adopted)
    results = await nemo.evaluator.get_results(job.id)
    archive = await nemo.evaluator.download_results(job.id)
    try:
        samples = parse_sample_results(archive)
    except ResultsArchiveError as exc:
        raise _results_error(exc, job.id, eval_mode, model, nemo.evaluator.http.base_url) from exc
    aggregate = parse_aggregate_results(results.model_dump())
    metrics = {**aggregate, **sample_means(samples, aggregate)}  # the figures the gate and the intervals use
    get_run_logger().info(
        "%s %s: %d samples, %s", eval_mode, model, len(samples), ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
    )
    return EvalOutcome(
        model=model,
        eval_mode=eval_mode,
        job_id=job.id,
        metrics=metrics,
        samples=samples,
        seconds=time.monotonic() - started,
    )


async def evaluate(model: str, eval_mode: str, dataset: str, ctx: RunContext, nemo: NemoClient) -> EvalOutcome:
    """One evaluation, or its cached result when the same model, mode, dataset and config were evaluated."""
    return await _resumable(evaluate_task)(model, eval_mode, dataset, ctx, nemo)


def _loss_points(status_metrics: Any, key: str) -> list[tuple[int, float]]:
    if not isinstance(status_metrics, Mapping):
        return []
    series = status_metrics.get("metrics", {}).get(key, [])
    points = []
    for point in series if isinstance(series, list) else []:
        if isinstance(point, Mapping) and "step" in point and "value" in point:
            points.append((int(point["step"]), float(point["value"])))
    return points


async def _stale_completed_jobs(key: IdempotencyKey, ctx: RunContext, nemo: NemoClient) -> set[str]:
    """Completed fine-tunes with this key whose output model is gone from the Entity Store: their adapter
    can never be served again, so they are not reused (a new fine-tune is started instead)."""
    job = await nemo.customizer.find_job(key, namespace=ctx.namespace)
    if job is None or classify(job.status) is not Phase.SUCCEEDED or not job.output_model:
        return set()
    namespace, name = split_ref(job.output_model)
    if await nemo.entity_store.get_model(namespace, name) is not None:
        return set()
    get_run_logger().warning(
        "customize: job %s completed, but its output model %s is no longer in the Entity Store; training again",
        job.id,
        job.output_model,
    )
    return {job.id}


def _adapter_error(
    exc: JobWaitError, job_id: str, output_model: str, base_url: str, waited_s: float
) -> FlywheelStepError:
    seen = exc.last.reason if exc.last is not None and exc.last.reason else "NIM could not be asked"
    problem = f"was not served within {waited_s:.0f} s of its fine-tune completing ({seen})"
    todo = (
        f"check that NIM at {base_url} loads LoRA adapters from the platform (its PEFT source and refresh "
        f"interval) and that {output_model} is in the Entity Store; if the adapter was lost, delete the "
        f"output model from the Entity Store so that the next run trains again; {RERUN}"
    )
    return FlywheelStepError("NIM", f"adapter {output_model} (output of customization job {job_id})", problem, todo)


@task(name="customize", retries=1, retry_delay_seconds=[60], retry_condition_fn=_transient, cache_policy=NO_CACHE)
async def customize(nim: NIMConfig, train_dataset: str, ctx: RunContext, nemo: NemoClient) -> CustomizationOutcome:
    """LoRA fine-tune through NeMo Customizer (or wait for the job an earlier run started); returns once NIM serves it."""
    started = time.monotonic()
    cfg = ctx.cfg
    key = _customization_key(nim, train_dataset, ctx)
    body = ctx.labelled(
        customization_job_body(
            nim,
            ctx.namespace,
            train_dataset,
            training=cfg.training_config,
            lora=cfg.lora_config,
            idempotency=key,
            workload_id=ctx.workload_id,
        )
    )
    await nemo.customizer.ensure_config(customization_config_body(nim, ctx.namespace, cfg.training_config))
    stale = await _stale_completed_jobs(key, ctx, nemo)
    mark_on_nemo(ctx.flow_run_id)
    job = await nemo.customizer.create_job(body, idempotency=key, exclude=stale)
    adopted = adopt(ctx, "customization", job.id, job.status, job.custom_fields)
    progress = _Progress(_artifact_key("customize", nim.model_name), f"customize {nim.model_name}")
    try:
        status = await nemo.customizer.wait_for_job(
            job.id, settings=ctx.poll(), on_progress=progress, cancel_on_abort=True
        )
    except JobWaitError as exc:
        ended = isinstance(exc, JobFailedError) or await _quietly(nemo.customizer.cancel_job(job.id))
        if ended:
            leave_job(ctx, job.id, adopted)
        raise _customization_error(exc, job.id, nim.model_name, nemo.customizer.http.base_url) from exc
    leave_job(ctx, job.id, adopted)
    output_model = job.output_model or ""
    serve = ctx.serve_poll()
    try:
        await nemo.nim.wait_for_model(output_model, settings=serve)
    except JobWaitError as exc:
        raise _adapter_error(exc, job.id, output_model, nemo.nim.http.base_url, serve.stall_timeout_s) from exc
    return CustomizationOutcome(
        job_id=job.id,
        output_model=output_model,
        train_loss=_loss_points(status.metrics, "train_loss"),
        val_loss=_loss_points(status.metrics, "val_loss"),
        seconds=time.monotonic() - started,
    )
