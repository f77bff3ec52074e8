"""Evaluator (``/v1/evaluation/...``): targets, configs, jobs, results.

A job takes its config and target inline or as ``ns/name`` references; inline ones are stored as
entities with ids (``eval-config-…``, ``eval-target-…``), as the real service does, and echoed in
the job. The job runs in the background (:mod:`eval_runner`) and goes ``created → running →
completed|failed``; ``pending`` only appears when the ``evaluation_pending_s`` fault asks for it,
because the blueprint's poller treats ``pending`` as a failure. The simulator computes two metric
types, ``tool-calling`` and ``llm-judge``, on ``custom`` configs with ``chat-completion`` tasks; a
config asking for anything else is refused with 422 at creation rather than failing later.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from simulators.common import utc_now_iso
from simulators.nemo.context import NemoSim
from simulators.nemo.crud import (
    NamedKind,
    add_named_routes,
    create_record,
    delete_message,
    key_of,
    validate_body,
)
from simulators.nemo.entity_store import find_dataset
from simulators.nemo.errors import conflict, not_found, unprocessable
from simulators.nemo.eval_runner import run_evaluation
from simulators.nemo.ids import new_id
from simulators.nemo.pagination import list_page
from simulators.nemo.state import Record, public

JSONDict = dict[str, Any]
SUPPORTED_METRICS = ("tool-calling", "llm-judge")
SUPPORTED_TASKS = ("chat-completion",)
TERMINAL = frozenset({"completed", "failed", "cancelled"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class EvalTargetBody(_Body):
    type: str = Field(min_length=1)
    name: str | None = None
    namespace: str | None = None
    model: str | JSONDict | None = None
    dataset: str | JSONDict | None = None
    rows: list[JSONDict] | None = None
    cached_outputs: JSONDict | None = None
    retriever: JSONDict | None = None
    rag: JSONDict | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class EvalConfigBody(_Body):
    type: str = Field(min_length=1)
    name: str | None = None
    namespace: str | None = None
    params: JSONDict | None = None
    tasks: dict[str, JSONDict] | None = None
    groups: JSONDict | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class EvalJobBody(_Body):
    config: str | JSONDict
    target: str | JSONDict
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


async def _schema_version(sim: NemoSim, record: Record) -> None:
    record.setdefault("schema_version", "1.0")


EVAL_TARGETS = NamedKind(
    table="evaluation_targets",
    path="/v1/evaluation/targets",
    label="Evaluation target",
    model=EvalTargetBody,
    id_prefix="eval-target",
    fill_defaults=False,
    before_save=_schema_version,
)
EVAL_CONFIGS = NamedKind(
    table="evaluation_configs",
    path="/v1/evaluation/configs",
    label="Evaluation config",
    model=EvalConfigBody,
    id_prefix="eval-config",
    fill_defaults=False,
    before_save=_schema_version,
)


def _by_reference(sim: NemoSim, kind: NamedKind, reference: str, field: str) -> Record:
    table = sim.store.table(kind.table)
    record = table.get(reference) or next((r for r in table.values() if r.get("id") == reference), None)
    if record is None:
        if "/" not in reference:
            raise unprocessable(
                ["body", field], f"{field} must be an object or a 'namespace/name' reference", reference
            )
        raise not_found(f"{kind.label} {reference}")
    return public(record)


def _register_inline(sim: NemoSim, kind: NamedKind, body: JSONDict, namespace: str) -> Record:
    """Store an inline config or target as an entity of its own (id assigned, name = id), as the real service does."""
    record = create_record(sim, kind, {**body, "namespace": body.get("namespace") or namespace})
    record["schema_version"] = "1.0"
    table = sim.store.table(kind.table)
    key = key_of(kind, record)
    if key in table:
        raise conflict(f"{kind.label} {key} already exists")
    table[key] = record
    return public(record)


def _normalise_dataset(sim: NemoSim, dataset: Any, loc: list[str | int]) -> JSONDict:
    if isinstance(dataset, str):
        if dataset.startswith("hf://"):
            return {"id": new_id("dataset"), "files_url": dataset, "version_id": "main"}
        registered = find_dataset(sim, dataset)
        if registered is None:
            raise not_found(f"Dataset {dataset}")
        return {**registered, "version_id": "main"}
    if isinstance(dataset, dict) and isinstance(dataset.get("files_url"), str):
        return {"id": new_id("dataset"), **dataset, "version_id": dataset.get("version_id") or "main"}
    raise unprocessable(loc, "dataset must be an object with files_url or a 'namespace/name' reference", dataset)


def _check_metric(name: str, metric: Any, loc: list[str | int]) -> None:
    if not isinstance(metric, dict) or metric.get("type") not in SUPPORTED_METRICS:
        kind = metric.get("type") if isinstance(metric, dict) else metric
        raise unprocessable(
            [*loc, name, "type"], f"the simulator computes only {', '.join(SUPPORTED_METRICS)} metrics", kind
        )
    params = metric.get("params") or {}
    if metric["type"] == "tool-calling" and "tool_calls_ground_truth" not in params:
        raise unprocessable([*loc, name, "params"], "tool-calling needs params.tool_calls_ground_truth", params)
    if metric["type"] == "llm-judge":
        template = params.get("template")
        if not params.get("model"):
            raise unprocessable([*loc, name, "params", "model"], "llm-judge needs the judge model", None)
        if not isinstance(template, dict) or not isinstance(template.get("messages"), list):
            raise unprocessable([*loc, name, "params", "template"], "llm-judge needs template.messages", template)
        scores = params.get("scores")
        if not isinstance(scores, dict) or not scores:
            raise unprocessable([*loc, name, "params", "scores"], "llm-judge needs at least one score", scores)
        for score, spec in scores.items():
            _check_parser(spec, [*loc, name, "params", "scores", score, "parser"])


def _check_parser(spec: Any, loc: list[str | int]) -> None:
    """A judge score needs a regex parser whose pattern compiles (the simulator reads scores with regexes only)."""
    parser = spec.get("parser") if isinstance(spec, dict) else None
    if not isinstance(parser, dict) or parser.get("type", "regex") != "regex":
        raise unprocessable(loc, "the simulator parses judge scores with a regex parser only", parser)
    if parser.get("method", "match") not in ("match", "search"):
        raise unprocessable([*loc, "method"], "method must be 'match' or 'search'", parser.get("method"))
    pattern = parser.get("pattern")
    if not isinstance(pattern, str):
        raise unprocessable([*loc, "pattern"], "a regex parser needs a pattern", pattern)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise unprocessable([*loc, "pattern"], f"invalid regex: {exc}", pattern) from None


def _prepare_config(sim: NemoSim, config: Record) -> Record:
    """Check the config is one the simulator can run; give each task's dataset an id (as the real echo does)."""
    if config.get("type") != "custom":
        raise unprocessable(
            ["body", "config", "type"], "the simulator runs only 'custom' evaluations", config.get("type")
        )
    tasks = config.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise unprocessable(["body", "config", "tasks"], "a custom evaluation needs at least one task", tasks)
    prepared = {}
    for name, task in tasks.items():
        loc: list[str | int] = ["body", "config", "tasks", name]
        if not isinstance(task, dict) or task.get("type") not in SUPPORTED_TASKS:
            kind = task.get("type") if isinstance(task, dict) else task
            raise unprocessable([*loc, "type"], f"the simulator runs only {', '.join(SUPPORTED_TASKS)} tasks", kind)
        template = (task.get("params") or {}).get("template")
        if not isinstance(template, dict):
            raise unprocessable([*loc, "params", "template"], "a chat-completion task needs params.template", template)
        metrics = task.get("metrics") or {}
        if not isinstance(metrics, dict):
            raise unprocessable([*loc, "metrics"], "metrics must be an object", metrics)
        for metric_name, metric in metrics.items():
            _check_metric(metric_name, metric, [*loc, "metrics"])
        prepared[name] = {**task, "dataset": _normalise_dataset(sim, task.get("dataset"), [*loc, "dataset"])}
    return {**config, "tasks": prepared}


def _check_target(target: Record) -> None:
    if target.get("type") != "model" or not target.get("model"):
        raise unprocessable(
            ["body", "target"], "the simulator evaluates only targets of type 'model' with a model", target.get("type")
        )


def _job_logs(record: Record) -> dict[str, Any]:
    entries = [{"timestamp": record["created_at"], "message": "Job created (simulated)"}]
    details = record["status_details"]
    if record["status"] != "created":
        progress = details.get("progress")
        entries.append({"timestamp": record["updated_at"], "message": f"Job {record['status']}; progress {progress}"})
    if details.get("message"):
        entries.append({"timestamp": record["updated_at"], "message": details["message"]})
    return {"object": "list", "data": entries, "next_page": None}


def _zip_results(job_id: str, samples: Any, aggregate: Any, layout: str) -> bytes:
    """The download-results ZIP in one of the layouts of ``evaluation.results_layout``."""
    buffer = io.BytesIO()

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, default=str)

    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        if layout == "root":
            archive.writestr("results.json", dump(samples))
        elif layout == "nested":
            archive.writestr(f"{job_id}/results/results.json", dump({t: {"samples": r} for t, r in samples.items()}))
            archive.writestr(f"{job_id}/results/evaluation_result.json", dump(aggregate))
            archive.writestr(f"{job_id}/logs/evaluation.log", "simulated evaluation\n")
        elif layout == "per-task":
            for task, rows in samples.items():
                archive.writestr(f"results/{task}.jsonl", "".join(dump(row) + "\n" for row in rows))
        else:  # no-samples: what an archive without per-sample outputs looks like
            archive.writestr("results.json", dump(aggregate))
    return buffer.getvalue()


def resume_evaluations(sim: NemoSim) -> None:
    """After a restart, start again every job that had not ended (its background work died with the process)."""
    for record in sim.store.table("evaluation_jobs").values():
        if record["status"] not in TERMINAL and record["id"] not in sim.tasks:
            record["status"] = "created"
            record["status_details"] = {"message": None, "task_status": {}, "progress": None}
            record["_plan"]["t0"] = sim.now()
            sim.spawn(record["id"], run_evaluation(sim, record))


def build_router(sim: NemoSim) -> APIRouter:
    """Evaluation targets, configs, jobs and results."""
    router = APIRouter()
    add_named_routes(router, sim, EVAL_TARGETS)
    add_named_routes(router, sim, EVAL_CONFIGS)
    jobs = sim.store.table("evaluation_jobs")
    results = sim.store.table("evaluation_results")

    def lookup(job_id: str) -> Record:
        record = jobs.get(job_id)
        if record is None:
            raise not_found(f"Evaluation job {job_id}")
        return record

    @router.post("/v1/evaluation/jobs", tags=["Evaluation job"])
    async def create_job(payload: Any = Body(...)) -> Record:
        """Resolve or register config and target, check them, start the background run; answers the job."""
        body = validate_body(EvalJobBody, payload)
        namespace = body.get("namespace") or "default"
        if isinstance(body["config"], str):
            config = _prepare_config(sim, _by_reference(sim, EVAL_CONFIGS, body["config"], "config"))
        else:
            config = _prepare_config(sim, validate_body(EvalConfigBody, body["config"], loc=("body", "config")))
        if isinstance(body["target"], str):
            target = _by_reference(sim, EVAL_TARGETS, body["target"], "target")
        else:
            target = validate_body(EvalTargetBody, body["target"], loc=("body", "target"))
        _check_target(target)
        if isinstance(body["config"], dict):
            config = _register_inline(sim, EVAL_CONFIGS, config, namespace)
        if isinstance(body["target"], dict):
            target = _register_inline(sim, EVAL_TARGETS, target, namespace)
        faults = sim.faults.current
        now = utc_now_iso()
        record: Record = {
            "id": new_id("eval"),
            "namespace": namespace,
            "description": body.get("description"),
            "project": body.get("project"),
            "custom_fields": body.get("custom_fields") or {},
            "ownership": body.get("ownership"),
            "status": "created",
            "status_details": {"message": None, "task_status": {}, "progress": None},
            "config": config,
            "target": target,
            "result": None,
            "output_files_url": None,
            "created_at": now,
            "updated_at": now,
            "_plan": {
                "t0": sim.now(),
                "created_s": sim.settings.evaluation.created_s,
                "pending_s": faults.evaluation_pending_s,
                "fail": faults.evaluation_failed,
            },
        }
        jobs[record["id"]] = record
        sim.save()
        answer = public(record)
        sim.spawn(record["id"], run_evaluation(sim, record))
        return answer

    @router.get("/v1/evaluation/jobs", tags=["Evaluation job"])
    async def list_jobs(request: Request) -> dict[str, Any]:
        """Jobs, filterable by ``status``, ``namespace``, ``config``, ``target``, ``created_at`` ranges..."""
        return list_page(
            [public(r) for r in jobs.values()],
            request.query_params.multi_items(),
            default_page_size=sim.settings.default_page_size,
        )

    @router.get("/v1/evaluation/jobs/{job_id}", tags=["Evaluation job"])
    async def get_job(job_id: str) -> Record:
        """The job with its status and progress."""
        return public(lookup(job_id))

    @router.get("/v1/evaluation/jobs/{job_id}/status", tags=["Evaluation job"])
    async def get_status(job_id: str) -> dict[str, Any]:
        """``EvaluationStatusDetails``: message, progress, samples_processed, task_status."""
        details = lookup(job_id)["status_details"]
        return {key: details.get(key) for key in ("message", "progress", "samples_processed", "task_status")}

    @router.get("/v1/evaluation/jobs/{job_id}/results", tags=["Evaluation job"])
    async def get_results(job_id: str) -> Record:
        """Aggregated scores (404 until the job has completed)."""
        record = lookup(job_id)
        result = results.get(record.get("result") or "")
        if result is None:
            raise not_found(f"Results of evaluation job {job_id} (status {record['status']})")
        return public(result)

    @router.get("/v1/evaluation/jobs/{job_id}/download-results", tags=["Evaluation job"])
    async def download_results(job_id: str) -> Response:
        """A ZIP of each sample's item, model answer and scores, per task (``evaluation.results_layout``)."""
        record = lookup(job_id)
        samples = sim.store.read_samples(job_id) if record.get("result") else None
        if samples is None:
            raise not_found(f"Results of evaluation job {job_id} (status {record['status']})")
        aggregate = public(results[record["result"]])
        return Response(
            content=_zip_results(job_id, samples, aggregate, sim.settings.evaluation.results_layout),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{job_id}-results.zip"'},
        )

    @router.get("/v1/evaluation/jobs/{job_id}/logs", tags=["Evaluation job"])
    async def get_logs(job_id: str) -> dict[str, Any]:
        """A few log lines in the cursor-paginated logs envelope."""
        return _job_logs(lookup(job_id))

    @router.post("/v1/evaluation/jobs/{job_id}/cancel", tags=["Evaluation job"])
    async def cancel_job(job_id: str) -> Record:
        """Stop the background work and mark the job ``cancelled`` (409 when it has already ended)."""
        record = lookup(job_id)
        if record["status"] in TERMINAL:
            raise conflict(f"Evaluation job {job_id} is already {record['status']} and cannot be cancelled")
        sim.cancel_task(job_id)
        record["status"] = "cancelled"
        record["status_details"]["message"] = "Job cancelled by user"
        record["updated_at"] = utc_now_iso()
        sim.save()
        return public(record)

    @router.delete("/v1/evaluation/jobs/{job_id}", tags=["Evaluation job"])
    async def delete_job(job_id: str) -> dict[str, str]:
        """Cancel if running, then forget the job, its result entity and its per-sample results."""
        record = lookup(job_id)
        sim.cancel_task(job_id)
        del jobs[job_id]
        results.pop(record.get("result") or "", None)
        sim.store.delete_samples(job_id)
        sim.save()
        return delete_message(job_id)

    @router.get("/v1/evaluation/results", tags=["Evaluation result"])
    async def list_results(request: Request) -> dict[str, Any]:
        """Result entities (one per completed job)."""
        return list_page(
            [public(r) for r in results.values()],
            request.query_params.multi_items(),
            default_page_size=sim.settings.default_page_size,
        )

    @router.get("/v1/evaluation/results/{result_id}", tags=["Evaluation result"])
    async def get_result(result_id: str) -> Record:
        """One result entity."""
        result = results.get(result_id)
        if result is None:
            raise not_found(f"Evaluation result {result_id}")
        return public(result)

    @router.delete("/v1/evaluation/results/{result_id}", tags=["Evaluation result"])
    async def delete_result(result_id: str) -> dict[str, str]:
        """Forget a result entity."""
        if results.pop(result_id, None) is None:
            raise not_found(f"Evaluation result {result_id}")
        sim.save()
        return delete_message(result_id)

    return router
