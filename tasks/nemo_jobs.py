"""Tasks that drive NeMo: deploy a NIM, evaluate a model, fine-tune it, tear down, clean up after a run.

Every job carries an idempotency key (a content hash of its inputs plus the flow run id), so a retried
or resumed run finds the job it started instead of starting a second one; every resource started is
written to the run's ledger so failure and cancellation hooks can stop it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from pydantic import BaseModel

from agent_flywheel.config import FlywheelConfig, NIMConfig
from agent_flywheel.ledger import Ledger, Resource
from agent_flywheel.metrics import parse_aggregate_results, parse_sample_results
from agent_flywheel.nemo.idempotency import IdempotencyKey, content_hash
from agent_flywheel.nemo.payloads import (
    customization_config_body,
    customization_job_body,
    dms_deployment_body_for,
    eval_config_for_run,
    evaluation_job_body,
)
from agent_flywheel.nemo.poller import PollSettings
from agent_flywheel.nemo.status import Phase, classify
from tasks.clients import nemo_client


class RunContext(BaseModel):
    """What every NeMo task of one flywheel run needs to know."""

    workload_id: str
    client_id: str
    flow_run_id: str
    cfg: FlywheelConfig
    nemo_block: str
    ledger_path: str
    tool_calling: bool
    namespace: str

    def ledger(self) -> Ledger:
        return Ledger(Path(self.ledger_path))

    def key(self, *parts: Any) -> IdempotencyKey:
        """The idempotency key of a job: what it is made of, scoped to this flow run."""
        return IdempotencyKey(content_hash(self.workload_id, self.client_id, *parts), self.flow_run_id)

    def poll(self, interval_s: float | None = None) -> PollSettings:
        ev = self.cfg.evaluation_config
        return PollSettings(
            interval_s=interval_s or ev.poll_interval_s, stall_timeout_s=ev.timeout_s, timeout_s=4 * ev.timeout_s
        )


class DeploymentRef(BaseModel):
    namespace: str
    name: str
    model: str
    created_by_run: bool


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


@task(name="deploy-nim", retries=2, retry_delay_seconds=[10, 60])
async def deploy_nim(nim: NIMConfig, ctx: RunContext) -> DeploymentRef:
    """Deploy the NIM through DMS, or reuse a deployment that exists; wait until NIM serves the model."""
    body = dms_deployment_body_for(
        nim.model_name,
        ctx.namespace,
        gpus=nim.gpus,
        tag=nim.tag,
        pvc_size=nim.pvc_size,
        registry_base=nim.registry_base,
        description=f"agent-flywheel candidate for {ctx.workload_id} (run {ctx.flow_run_id})",
    )
    async with nemo_client(ctx.nemo_block) as nemo:
        _, created = await nemo.deployments.ensure(body)
        ref = DeploymentRef(namespace=ctx.namespace, name=body["name"], model=nim.model_name, created_by_run=created)
        if created:
            ctx.ledger().add(Resource("deployment", f"{ctx.namespace}/{body['name']}", nim.model_name))
        progress = _Progress(_artifact_key("deploy", nim.model_name), f"deploy {nim.model_name}")
        await nemo.deployments.wait_until_ready(ctx.namespace, body["name"], settings=ctx.poll(), on_progress=progress)
        await nemo.nim.wait_for_model(nim.model_name, settings=ctx.poll())
    return ref


@task(name="teardown-deployment", retries=2, retry_delay_seconds=[5, 30])
async def teardown_deployment(ref: DeploymentRef, ctx: RunContext) -> bool:
    """Delete a deployment this run created (one it found and reused is left alone)."""
    if not ref.created_by_run:
        get_run_logger().info(
            "teardown: %s/%s was reused, not created by this run; left running", ref.namespace, ref.name
        )
        return False
    async with nemo_client(ctx.nemo_block) as nemo:
        deleted = await nemo.deployments.delete(ref.namespace, ref.name)
    ctx.ledger().discard(Resource("deployment", f"{ref.namespace}/{ref.name}", ref.model))
    return deleted


@task(name="evaluate", retries=1, retry_delay_seconds=[30])
async def evaluate(model: str, eval_mode: str, dataset: str, ctx: RunContext) -> EvalOutcome:
    """Run one NeMo Evaluator job on ``dataset``'s eval file and return aggregate and per-sample scores."""
    started = time.monotonic()
    files_url = f"hf://datasets/{ctx.namespace}/{dataset}/eval_data.jsonl"
    config = eval_config_for_run(ctx.cfg, files_url, tool_calling=ctx.tool_calling)
    key = ctx.key("evaluation", model, eval_mode, config)
    body = evaluation_job_body(
        config, model, ctx.namespace, idempotency=key, eval_mode=eval_mode, workload_id=ctx.workload_id
    )
    async with nemo_client(ctx.nemo_block) as nemo:
        job = await nemo.evaluator.create_job(body, idempotency=key)
        ctx.ledger().add(Resource("evaluation", job.id, f"{eval_mode} {model}"))
        progress = _Progress(_artifact_key(eval_mode, model), f"{eval_mode} {model}")
        await nemo.evaluator.wait_for_job(job.id, settings=ctx.poll(), on_progress=progress, cancel_on_abort=True)
        results = await nemo.evaluator.get_results(job.id)
        archive = await nemo.evaluator.download_results(job.id)
    ctx.ledger().discard(Resource("evaluation", job.id, f"{eval_mode} {model}"))
    samples = parse_sample_results(archive)
    metrics = parse_aggregate_results(results.model_dump())
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


def _loss_points(status_metrics: Any, key: str) -> list[tuple[int, float]]:
    if not isinstance(status_metrics, Mapping):
        return []
    series = status_metrics.get("metrics", {}).get(key, [])
    points = []
    for point in series if isinstance(series, list) else []:
        if isinstance(point, Mapping) and "step" in point and "value" in point:
            points.append((int(point["step"]), float(point["value"])))
    return points


@task(name="customize", retries=1, retry_delay_seconds=[60])
async def customize(nim: NIMConfig, train_dataset: str, ctx: RunContext) -> CustomizationOutcome:
    """LoRA fine-tune through NeMo Customizer; returns once NIM serves the adapter."""
    started = time.monotonic()
    cfg = ctx.cfg
    key = ctx.key("customization", nim.model_name, train_dataset, cfg.training_config, cfg.lora_config)
    body = customization_job_body(
        nim,
        ctx.namespace,
        train_dataset,
        training=cfg.training_config,
        lora=cfg.lora_config,
        idempotency=key,
        workload_id=ctx.workload_id,
    )
    async with nemo_client(ctx.nemo_block) as nemo:
        await nemo.customizer.ensure_config(customization_config_body(nim, ctx.namespace, cfg.training_config))
        job = await nemo.customizer.create_job(body, idempotency=key)
        ctx.ledger().add(Resource("customization", job.id, nim.model_name))
        progress = _Progress(_artifact_key("customize", nim.model_name), f"customize {nim.model_name}")
        status = await nemo.customizer.wait_for_job(
            job.id, settings=ctx.poll(), on_progress=progress, cancel_on_abort=True
        )
        ctx.ledger().discard(Resource("customization", job.id, nim.model_name))
        output_model = job.output_model or ""
        await nemo.nim.wait_for_model(output_model, settings=ctx.poll())
    return CustomizationOutcome(
        job_id=job.id,
        output_model=output_model,
        train_loss=_loss_points(status.metrics, "train_loss"),
        val_loss=_loss_points(status.metrics, "val_loss"),
        seconds=time.monotonic() - started,
    )


async def cleanup_run(ledger_path: Path, nemo_block: str) -> list[str]:
    """Cancel the jobs and delete the deployments a run left behind; returns what was done.

    Called from the flow's failure and cancellation hooks, so it never raises: each failure is logged.
    """
    ledger = Ledger(ledger_path)
    done: list[str] = []
    resources = ledger.resources()
    if not resources:
        return done
    async with nemo_client(nemo_block) as nemo:
        for resource in resources:
            try:
                if resource.kind == "customization":
                    await nemo.customizer.cancel_job(resource.ref)
                elif resource.kind == "evaluation":
                    await nemo.evaluator.cancel_job(resource.ref)
                else:
                    namespace, name = resource.ref.split("/", 1)
                    await nemo.deployments.delete(namespace, name)
            except Exception as exc:  # a hook must try every resource
                done.append(f"could not stop {resource.kind} {resource.ref}: {exc}")
                continue
            ledger.discard(resource)
            done.append(f"stopped {resource.kind} {resource.ref}")
    return done
