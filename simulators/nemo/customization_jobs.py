"""Customization jobs (``/v1/customization/jobs``): the LoRA fine-tune a flywheel run waits for.

Creation answers **200** (not 201), validates what the real Customizer validates (a versioned config,
an enabled target, a registered dataset, ``finetuning_type``) and creates the output model entity at
once, named ``{ns}/{name}@{job_id}``. The job then lives on the simulated clock (see
:mod:`training`); its side effects happen when a read or the background tick first sees it end: the
model entity's artifact becomes ``upload_completed`` and the adapter is registered with the NIM
simulator (``adapter_visible_after_s`` later when that fault is set), which serves it from then on.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulators.common import utc_now_iso
from simulators.nemo.context import NemoSim
from simulators.nemo.crud import validate_body
from simulators.nemo.customizer import ConfigBody, FinetuningType, TrainingType, find_target, target_key
from simulators.nemo.entity_store import find_dataset
from simulators.nemo.errors import conflict, not_found, unprocessable
from simulators.nemo.ids import new_id
from simulators.nemo.pagination import list_page
from simulators.nemo.state import Record, public, ref
from simulators.nemo.training import TERMINAL, TrainingPlan, running_seconds, training_view
from simulators.nemo.upstream import HfLocation, UpstreamError, parse_files_url

log = logging.getLogger("nemo-sim")
JSONDict = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class LoraBody(_Body):
    adapter_dim: int | None = Field(default=None, ge=1)
    adapter_dropout: float | None = Field(default=None, ge=0, lt=1)
    alpha: int | None = Field(default=None, ge=1)
    target_modules: list[str] | None = None

    @field_validator("adapter_dim")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError("adapter_dim must be a power of 2")
        return value


class HyperparametersBody(_Body):
    model_config = ConfigDict(extra="allow")  # optimizer knobs are echoed as given

    finetuning_type: FinetuningType
    training_type: TrainingType = "sft"
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0)
    log_every_n_steps: int | None = Field(default=None, ge=1)
    lora: LoraBody | None = None
    sequence_packing_enabled: bool | None = None


class JobBody(_Body):
    config: str | JSONDict
    dataset: str | JSONDict
    hyperparameters: HyperparametersBody
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    output_model: str | None = None
    dataset_parameters: JSONDict | None = None
    integrations: list[JSONDict] | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


# Filters documented for ``GET /v1/customization/jobs`` and where they live in a job.
JOB_RESOLVERS = {
    "base_model": lambda r: (r.get("config_snapshot") or {}).get("base_model"),
    "batch_size": lambda r: r["hyperparameters"].get("batch_size"),
    "epochs": lambda r: r["hyperparameters"].get("epochs"),
    "finetuning_type": lambda r: r["hyperparameters"].get("finetuning_type"),
    "training_type": lambda r: r["hyperparameters"].get("training_type"),
    "log_every_n_steps": lambda r: r["hyperparameters"].get("log_every_n_steps"),
    "dataset": lambda r: [r.get("dataset"), f"hf://datasets/{r.get('dataset')}"],
}


def _resolve_config(sim: NemoSim, config: str | JSONDict) -> Record:
    if isinstance(config, dict):
        body = validate_body(ConfigBody, config, fill_defaults=True, loc=("body", "config"))
        return {**body, "namespace": body.get("namespace") or "default"}
    namespace, slash, name = config.partition("/")
    if not slash or not name:
        raise unprocessable(["body", "config"], "config must be 'namespace/name@version'", config)
    if "@" not in name:
        raise unprocessable(
            ["body", "config"],
            "config must carry a version, e.g. 'meta/llama-3.2-1b-instruct@v1.0.0+A100' "
            "(unversioned model names are no longer accepted since 25.06)",
            config,
        )
    record = sim.store.table("customization_configs").get(ref(namespace, name))
    if record is None:
        raise not_found(f"Customization config {config}")
    return public(record)


def _training_option(config: Record, hyper: JSONDict) -> JSONDict:
    for option in config.get("training_options") or []:
        if (
            option.get("training_type") == hyper["training_type"]
            and option.get("finetuning_type") == hyper["finetuning_type"]
        ):
            return dict(option)
    offered = [f"{o.get('training_type')}/{o.get('finetuning_type')}" for o in config.get("training_options") or []]
    raise unprocessable(
        ["body", "hyperparameters", "finetuning_type"],
        f"config {config.get('namespace')}/{config.get('name')} has no training option for "
        f"{hyper['training_type']}/{hyper['finetuning_type']} (it offers {', '.join(offered) or 'none'})",
        hyper["finetuning_type"],
    )


def _fill_hyperparameters(sim: NemoSim, hyper: JSONDict) -> JSONDict:
    timing = sim.settings.customization
    filled: JSONDict = {
        **hyper,
        "training_type": hyper.get("training_type") or "sft",
        "epochs": hyper.get("epochs") or timing.default_epochs,
        "batch_size": hyper.get("batch_size") or timing.default_batch_size,
        "learning_rate": hyper.get("learning_rate") or 0.0001,
        "sequence_packing_enabled": bool(hyper.get("sequence_packing_enabled")),
    }
    if filled["finetuning_type"] in ("lora", "lora_merged"):
        lora = dict(hyper.get("lora") or {})
        filled["lora"] = {
            "adapter_dim": lora.get("adapter_dim") or 8,
            "adapter_dropout": lora.get("adapter_dropout"),
            "alpha": lora.get("alpha") or 16,
            "target_modules": lora.get("target_modules"),
        }
    return filled


def _output_model(requested: str | None, namespace: str, job_id: str) -> tuple[str, str, str] | None:
    """``(namespace, name@job_id, full id)``; any caller ``@version`` is replaced by the job id."""
    if not requested:
        return None
    out_ns, slash, out_name = requested.partition("/")
    if not slash:
        out_ns, out_name = namespace, requested
    base_name = out_name.split("@", 1)[0]
    if not base_name or "/" in out_name:
        raise unprocessable(["body", "output_model"], "output_model must be 'namespace/name'", requested)
    versioned = f"{base_name}@{job_id}"
    return out_ns, versioned, f"{out_ns}/{versioned}"


async def _count_training_records(sim: NemoSim, dataset: Record) -> tuple[int | None, str | None]:
    """Training records under ``training/`` in the Data Store, or an error message for the job to fail with."""
    try:
        location = parse_files_url(str(dataset.get("files_url")))
        location = HfLocation(location.namespace, location.name)
        count = await sim.datastore.count_records(location, "training")
    except UpstreamError as exc:
        return None, f"Could not read the training data of dataset {dataset['namespace']}/{dataset['name']}: {exc}"
    if count == 0:
        return 0, f"Dataset {dataset['namespace']}/{dataset['name']} has no records under training/*.jsonl"
    return count, None


def view(sim: NemoSim, record: Record, at: float | None = None) -> Record:
    """The job as the API shows it now (or at simulated time ``at``); remembers status changes."""
    plan = TrainingPlan.from_json(record["_plan"])
    current = training_view(plan, sim.now() if at is None else at, record["created_at"])
    if record.get("status") != current.status:
        record["status"] = current.status
        sim.save()
    record["status_details"] = current.details
    record["updated_at"] = current.details["updated_at"]
    return public(record)


async def settle(sim: NemoSim, record: Record) -> None:
    """Carry out what the end of a job causes, once: model artifact status, then the adapter on the NIM."""
    effects = record["_effects"]
    if effects.get("done"):
        return
    plan = TrainingPlan.from_json(record["_plan"])
    current = training_view(plan, sim.now(), record["created_at"])
    if current.ended_at is None:
        return
    model_key = effects.get("model_key")
    models = sim.store.table("models")
    if not effects.get("model_finalised"):
        if model_key and model_key in models:
            status = {"completed": "upload_completed", "failed": "upload_failed"}.get(current.status)
            if status:
                models[model_key]["artifact"]["status"] = status
                models[model_key]["updated_at"] = utc_now_iso()
        effects["model_finalised"] = True
        sim.save()
    if current.status != "completed" or not record.get("output_model"):
        effects["done"] = True
        sim.save()
        return
    busy_key = f"register:{record['id']}"
    if sim.now() < current.ended_at + float(effects.get("adapter_delay_s", 0.0)) or busy_key in sim.busy:
        return
    sim.busy.add(busy_key)
    try:
        base = record["config_snapshot"]["base_model"]
        lora = {"train_records": plan.train_records or 0, "epochs": plan.epochs}
        await sim.nim.register_model(record["output_model"], root=base, parent=base, lora=lora)
    except UpstreamError as exc:
        log.warning("adapter %s not registered yet (will retry): %s", record["output_model"], exc)
        return
    finally:
        sim.busy.discard(busy_key)
    effects["done"] = True
    log.info("adapter %s is now served by the NIM simulator", record["output_model"])
    sim.save()


def served_adapters(sim: NemoSim) -> list[tuple[str, str, dict[str, int]]]:
    """``(adapter, base model, lora info)`` of every finished job whose adapter was handed to the NIM."""
    adapters = []
    for record in sim.store.table("customization_jobs").values():
        if not record["_effects"].get("done") or not record.get("output_model"):
            continue
        plan = TrainingPlan.from_json(record["_plan"])
        if training_view(plan, sim.now(), record["created_at"]).status != "completed":
            continue
        lora = {"train_records": plan.train_records or 0, "epochs": plan.epochs}
        adapters.append((record["output_model"], record["config_snapshot"]["base_model"], lora))
    return adapters


async def advance_all(sim: NemoSim) -> None:
    """Settle every job that has ended (the background tick calls this; reads settle their own job)."""
    for record in list(sim.store.table("customization_jobs").values()):
        if not record["_effects"].get("done"):
            await settle(sim, record)


def _container_logs(record: Record) -> dict[str, Any]:
    details = record["status_details"]
    if record["status"] == "created":
        return {"entries": {}, "error": None}
    lines = [
        f"{log['updated_at']} {log['message']}" + (f": {log['detail']}" if log.get("detail") else "")
        for log in details["status_logs"]
    ]
    for point in ((details.get("metrics") or {}).get("metrics") or {}).get("train_loss", []):
        lines.append(f"{point['timestamp']} step {point['step']}: train_loss={point['value']}")
    lines.sort()
    phase = {"pending": "Pending", "running": "Running", "completed": "Succeeded"}.get(record["status"], "Failed")
    pod = f"{record['id'].lower()}-training-worker-0"
    return {
        "entries": {
            pod: {
                "object": "Pod",
                "status": {"phase": phase},
                "events": [
                    {"type": "Normal", "reason": "Scheduled", "message": f"Assigned {pod} (simulated)", "count": "1"}
                ],
                "logs": {"training": "\n".join(lines)},
            }
        },
        "error": None,
    }


def build_router(sim: NemoSim) -> APIRouter:
    """Job routes: create, list, get, status, cancel, container-logs."""
    router = APIRouter(tags=["Customization job"])
    jobs = sim.store.table("customization_jobs")

    async def lookup(job_id: str) -> Record:
        record = jobs.get(job_id)
        if record is None:
            raise not_found(f"Customization job {job_id}")
        await settle(sim, record)
        return record

    @router.post("/v1/customization/jobs")
    async def create_job(payload: Any = Body(...)) -> Record:
        """Validate, create the output model entity, plan the job on the clock; 200 like the real service."""
        body = validate_body(JobBody, payload)
        namespace = body.get("namespace") or "default"
        config = _resolve_config(sim, body["config"])
        target = find_target(sim, config["target"])
        if target is None:
            raise not_found(f"Customization target {target_key(config['target'])}")
        if not target.get("enabled") or target.get("status") != "ready":
            raise unprocessable(
                ["body", "config"], f"customization target {target_key(config['target'])} is not enabled and ready"
            )
        hyper = _fill_hyperparameters(sim, body["hyperparameters"])
        option = _training_option(config, hyper)
        dataset = find_dataset(sim, body["dataset"])
        if dataset is None:
            raise not_found(
                f"Dataset {body['dataset'] if isinstance(body['dataset'], str) else target_key(body['dataset'])}"
            )

        job_id = new_id("cust")
        output = _output_model(body.get("output_model"), namespace, job_id)
        records, data_error = await _count_training_records(sim, dataset)
        timing = sim.settings.customization
        faults = sim.faults.current
        plan = TrainingPlan(
            t0=sim.now(),
            created_s=timing.created_s,
            pending_s=timing.pending_s,
            running_s=running_seconds(records, hyper["epochs"], timing.seconds_per_record_epoch, timing.min_running_s),
            train_records=records,
            epochs=hyper["epochs"],
            batch_size=hyper["batch_size"],
            log_every=hyper.get("log_every_n_steps") or 0,
            seed=zlib.crc32(job_id.encode()),
            data_error=data_error,
            fail_mid_training=faults.customization_failed,
            not_enough_resources=faults.customization_not_enough_resources,
            not_enough_resources_fail_after_s=faults.not_enough_resources_fail_after_s,
            stall_pending=faults.customization_stall_pending,
            num_gpus=int(option.get("num_gpus") or 1),
        )
        now = utc_now_iso()
        config_name = ref(config["namespace"], config["name"]) if config.get("name") else body["config"]
        record: Record = {
            "id": job_id,
            "namespace": namespace,
            "name": body.get("name") or job_id,
            "description": body.get("description"),
            "project": body.get("project"),
            "config": config_name,
            "config_snapshot": {
                "base_model": target["base_model"],
                "max_seq_length": config["max_seq_length"],
                "precision": config.get("training_precision") or target.get("precision"),
                "prompt_template": config.get("prompt_template"),
                "training_option": option,
                "dataset_schema": None,
            },
            "dataset": ref(dataset["namespace"], dataset["name"]),
            "hyperparameters": hyper,
            "output_model": output[2] if output else None,
            "status": "created",
            "status_details": {},
            "custom_fields": body.get("custom_fields") or {},
            "ownership": body.get("ownership"),
            "integrations": body.get("integrations"),
            "dataset_parameters": body.get("dataset_parameters"),
            "created_at": now,
            "updated_at": now,
            "warnings": None,
            "_plan": plan.to_json(),
            "_effects": {"adapter_delay_s": faults.adapter_visible_after_s},
        }
        if output:
            out_ns, out_name, _ = output
            model_key = ref(out_ns, out_name)
            record["_effects"]["model_key"] = model_key
            sim.store.table("models")[model_key] = {
                "id": new_id("model"),
                "name": out_name,
                "namespace": out_ns,
                "description": f"LoRA adapter trained by customization job {job_id} (simulated)",
                "base_model": target["base_model"],
                "peft": {"finetuning_type": hyper["finetuning_type"], "lora": hyper.get("lora")},
                "artifact": {
                    "files_url": f"hf://models/{out_ns}/{out_name}",
                    "status": "created",
                    "backend_engine": None,
                    "gpu_arch": None,
                    "precision": config.get("training_precision") or target.get("precision"),
                    "tensor_parallelism": None,
                },
                "spec": None,
                "api_endpoint": None,
                "prompt": None,
                "guardrails": None,
                "model_providers": None,
                "project": body.get("project"),
                "custom_fields": {"customization_job": job_id},
                "ownership": None,
                "created_at": now,
                "updated_at": now,
            }
        jobs[job_id] = record
        sim.save()
        log.info("customization job %s created (%s records, %s epochs)", job_id, records, hyper["epochs"])
        # The answer is the job as created, however fast the clock ran while we stored it.
        return view(sim, record, at=plan.t0)

    @router.get("/v1/customization/jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        """Jobs with their current status, filterable by ``status``, ``base_model``, ``finetuning_type``..."""
        await advance_all(sim)
        records = [view(sim, r) for r in jobs.values()]
        return list_page(
            records,
            request.query_params.multi_items(),
            default_page_size=sim.settings.default_page_size,
            resolvers=JOB_RESOLVERS,
        )

    @router.get("/v1/customization/jobs/{job_id}")
    async def get_job(job_id: str) -> Record:
        """The job with ``status`` and ``status_details`` as of now."""
        return view(sim, await lookup(job_id))

    @router.get("/v1/customization/jobs/{job_id}/status")
    async def get_status(job_id: str) -> dict[str, Any]:
        """``CustomizationStatusDetails``: progress, epochs, steps, losses and status logs."""
        return dict(view(sim, await lookup(job_id))["status_details"])

    @router.post("/v1/customization/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> Record:
        """Cancel a job that has not ended (409 when it has); answers the job."""
        record = await lookup(job_id)
        current = view(sim, record)
        if current["status"] in TERMINAL:
            raise conflict(f"Customization job {job_id} is already {current['status']} and cannot be cancelled")
        record["_plan"]["cancelled_at"] = sim.now()
        sim.save()
        await settle(sim, record)
        return view(sim, record)

    @router.get("/v1/customization/jobs/{job_id}/container-logs")
    async def container_logs(job_id: str) -> dict[str, Any]:
        """The training pod's (simulated) events and log lines."""
        record = await lookup(job_id)
        view(sim, record)
        return _container_logs(record)

    return router
