"""Deployment Management (``/v1/deployment/...``): NIM deployments that become servable models.

A deployment answers ``pending`` (``deployed: false``) and turns ``ready`` (``deployed: true``) after
``deployment.ready_after_s`` simulated seconds -- and only once the NIM simulator has accepted
``config.model`` through ``POST /admin/models``, so ``ready`` always means "you can call it now".
Deleting a deployment removes the model from the NIM again. Creating a deployment that exists
answers 500 "model deployment already exists" like the real DMS (``dms_duplicate_500``), or 409.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from simulators.common import utc_now_iso
from simulators.nemo.context import NemoSim
from simulators.nemo.crud import NamedKind, add_named_routes, check_name, delete_message, validate_body
from simulators.nemo.errors import conflict, not_found, unprocessable
from simulators.nemo.pagination import list_page
from simulators.nemo.state import Record, public, ref
from simulators.nemo.upstream import UpstreamError

log = logging.getLogger("nemo-sim")
JSONDict = dict[str, Any]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class DeploymentConfigBody(_Body):
    name: str | None = None
    namespace: str | None = None
    model: str | JSONDict | None = None
    nim_deployment: JSONDict | None = None
    external_endpoint: JSONDict | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class ModelDeploymentBody(_Body):
    config: str | JSONDict
    name: str | None = None
    namespace: str | None = None
    models: list[str] | None = None
    async_enabled: bool = False
    hf_token: str | None = None  # accepted, never stored or echoed
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None
    ownership: JSONDict | None = None


class DeploymentPatchBody(_Body):
    models: list[str] | None = None
    async_enabled: bool | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: JSONDict | None = None


DEPLOYMENT_CONFIGS = NamedKind(
    table="deployment_configs",
    path="/v1/deployment/configs",
    label="Deployment config",
    model=DeploymentConfigBody,
)


def _model_name(config: JSONDict) -> str:
    model = config.get("model")
    if isinstance(model, dict):
        model = (
            f"{model['namespace']}/{model['name']}"
            if model.get("namespace") and model.get("name")
            else model.get("name")
        )
    if not isinstance(model, str) or not model:
        raise unprocessable(["body", "config", "model"], "a deployment config needs the model to serve", model)
    return model


def _resolve_config(sim: NemoSim, config: str | JSONDict) -> JSONDict:
    if isinstance(config, dict):
        return validate_body(DeploymentConfigBody, config, loc=("body", "config"))
    record = sim.store.table("deployment_configs").get(config)
    if record is None:
        raise not_found(f"Deployment config {config}")
    return public(record)


async def _refresh(sim: NemoSim, record: Record) -> None:
    """Move a pending deployment on when its time has come (registering the model with the NIM first)."""
    if record["status_details"]["status"] != "pending":
        return
    plan = record["_plan"]
    if plan.get("stall") or sim.now() < plan["t0"] + plan["ready_after_s"]:
        return
    if plan.get("fail"):
        record["status_details"] = {
            "status": "failed",
            "description": "Deployment failed: the NIM pod never became ready (simulated fault)",
        }
    else:
        key = f"deploy:{ref(record['namespace'], record['name'])}"
        if key in sim.busy:
            return
        sim.busy.add(key)
        try:
            for model in record["models"]:
                await sim.nim.register_model(model, root=model, parent=None, lora=None)
        except UpstreamError as exc:
            record["status_details"]["description"] = f"Waiting for the NIM to load the model: {exc}"
            log.warning("deployment %s/%s not ready yet: %s", record["namespace"], record["name"], exc)
            return
        finally:
            sim.busy.discard(key)
        record["deployed"] = True
        record["status_details"] = {"status": "ready", "description": "Model deployment is ready (simulated)"}
    record["updated_at"] = utc_now_iso()
    sim.save()


def served_models(sim: NemoSim) -> list[str]:
    """The models of every deployment that is ready (the NIM must serve them)."""
    return [
        model
        for record in sim.store.table("model_deployments").values()
        if record.get("deployed")
        for model in record["models"]
    ]


async def advance_all(sim: NemoSim) -> None:
    """Refresh every pending deployment (the background tick calls this)."""
    for record in list(sim.store.table("model_deployments").values()):
        await _refresh(sim, record)


def build_router(sim: NemoSim) -> APIRouter:
    """Deployment configs and model deployments."""
    router = APIRouter()
    add_named_routes(router, sim, DEPLOYMENT_CONFIGS)
    deployments = sim.store.table("model_deployments")
    tags = ["Model deployment"]

    async def lookup(namespace: str, name: str) -> Record:
        record = deployments.get(ref(namespace, name))
        if record is None:
            raise not_found(f"Model deployment {namespace}/{name}")
        await _refresh(sim, record)
        return record

    @router.post("/v1/deployment/model-deployments", tags=list(tags))
    async def create_deployment(payload: Any = Body(...)) -> Record:
        """Start a deployment (``pending``); a duplicate is a 500 like the real DMS, or a 409."""
        body = validate_body(ModelDeploymentBody, payload)
        config = _resolve_config(sim, body["config"])
        model = _model_name(config)
        namespace = body.get("namespace") or "default"
        name = body.get("name") or model.replace("/", "-")
        check_name(name)
        key = ref(namespace, name)
        if key in deployments:
            if sim.settings.dms_duplicate_500:
                raise HTTPException(status_code=500, detail="model deployment already exists")
            raise conflict(f"Model deployment {key} already exists")
        faults = sim.faults.current
        now = utc_now_iso()
        record: Record = {
            "name": name,
            "namespace": namespace,
            "url": sim.nim.base_url,
            "deployed": False,
            "status_details": {"status": "pending", "description": "Model deployment created (simulated)"},
            "models": body.get("models") or [model],
            "async_enabled": body.get("async_enabled", False),
            "config": body["config"],
            "description": body.get("description"),
            "project": body.get("project"),
            "custom_fields": body.get("custom_fields") or {},
            "ownership": body.get("ownership"),
            "schema_version": "1.0",
            "created_at": now,
            "updated_at": now,
            "_plan": {
                "t0": sim.now(),
                "ready_after_s": sim.settings.deployment.ready_after_s,
                "fail": faults.deployment_failed,
                "stall": faults.deployment_stall_pending,
            },
        }
        deployments[key] = record
        sim.save()
        log.info("deployment %s of %s created", key, model)
        return public(record)

    @router.get("/v1/deployment/model-deployments", tags=list(tags))
    async def list_deployments(request: Request) -> dict[str, Any]:
        """Deployments with their current status (``filter[status]`` reads ``status_details.status``)."""
        await advance_all(sim)
        return list_page(
            [public(r) for r in deployments.values()],
            request.query_params.multi_items(),
            default_page_size=sim.settings.default_page_size,
            resolvers={"status": lambda r: r["status_details"]["status"]},
        )

    @router.get("/v1/deployment/model-deployments/{namespace}/{name}", tags=list(tags))
    async def get_deployment(namespace: str, name: str) -> Record:
        """The deployment as of now: ``pending`` until its time, then ``ready`` (or ``failed``)."""
        return public(await lookup(namespace, name))

    @router.patch("/v1/deployment/model-deployments/{namespace}/{name}", tags=list(tags))
    async def patch_deployment(namespace: str, name: str, payload: Any = Body(...)) -> Record:
        """Update descriptive fields (the served model cannot change in place)."""
        record = await lookup(namespace, name)
        record.update({k: v for k, v in validate_body(DeploymentPatchBody, payload).items() if v is not None})
        record["updated_at"] = utc_now_iso()
        sim.save()
        return public(record)

    @router.delete("/v1/deployment/model-deployments/{namespace}/{name}", tags=list(tags))
    async def delete_deployment(namespace: str, name: str) -> dict[str, str]:
        """Tear down: forget the deployment and stop serving its models on the NIM."""
        key = ref(namespace, name)
        record = deployments.pop(key, None)
        if record is None:
            raise not_found(f"Model deployment {key}")
        sim.save()
        if record.get("deployed"):
            for model in record["models"]:
                try:
                    await sim.nim.unregister_model(model)
                except UpstreamError as exc:
                    log.warning("could not remove %s from the NIM: %s", model, exc)
        return delete_message(key)

    return router
