"""``flywheel deploy --pool POOL --image IMAGE``: the deployments of ``prefect.yaml`` made ready for Kubernetes.

The same ``prefect.yaml`` serves the local process pool and production. ``definitions.kubernetes`` in it says what
production changes: every deployment gets the image and its pod's requests and limits as job variables of the
work pool's base job template (``deploy/kubernetes/base-job-template.json``), its ``*_block`` parameters name the
production blocks instead of ``local``, the ``pull`` step enters the code directory of the image, and with
``--build`` the ``build``/``push`` steps (prefect-docker) build ``./Dockerfile`` as the image and push it.
Plain ``prefect deploy`` ignores ``definitions``, so the local path is unchanged.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.settings import PROJECT_ROOT, DeployError

JOB_TEMPLATE = PROJECT_ROOT / "deploy" / "kubernetes" / "base-job-template.json"
PRODUCTION_BLOCK_NAME = "prod"
BUILD_STEP = "prefect_docker.deployments.steps.build_docker_image"


def block_parameters() -> dict[str, str]:
    """The flows' parameters that name a saved block, and the slug of the block type each one loads.

    Imported here, not at the top: Prefect is imported only once PREFECT_HOME is set (``deployments.deploy``).
    """
    from blocks.agent_target import AgentTarget
    from blocks.log_store import LogStore
    from blocks.mlflow_tracking import MlflowTracking
    from blocks.nemo_platform import NemoPlatform

    return {
        "nemo_block": NemoPlatform.get_block_type_slug(),
        "log_store_block": LogStore.get_block_type_slug(),
        "mlflow_block": MlflowTracking.get_block_type_slug(),
        "agent_block": AgentTarget.get_block_type_slug(),
    }


# registry[:port]/path (lower case), the tag (after the last ':' behind the last '/') and the digest (after '@').
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class PodResources(BaseModel):
    """Requests and limits of one flow run's pod (Kubernetes quantities)."""

    model_config = ConfigDict(extra="forbid")

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


class KubernetesDefinitions(BaseModel):
    """``definitions.kubernetes`` of ``prefect.yaml``."""

    model_config = ConfigDict(extra="forbid")

    code_dir: str
    build: list[dict[str, Any]] = Field(min_length=1)
    push: list[dict[str, Any]] = Field(min_length=1)
    resources: dict[str, PodResources]

    def resources_of(self, entrypoint: str) -> PodResources:
        """The entrypoint's own requests and limits, else the ``default`` ones."""
        return self.resources.get(entrypoint) or self.resources["default"]


@dataclass(frozen=True)
class KubernetesTarget:
    """What production needs to know that ``prefect.yaml`` does not: the image, the blocks' name, whether to build."""

    image: str
    block_name: str = PRODUCTION_BLOCK_NAME
    build: bool = False


@dataclass(frozen=True)
class ImageRef:
    """An image reference split the way prefect-docker's build step takes it."""

    name: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """Split ``registry/path:tag@digest``; a malformed reference is a one-line error naming it."""
        rest, _, digest = image.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, None)
        if not _NAME.match(name) or (tag is not None and not _TAG.match(tag)) or ("@" in image and not digest):
            raise DeployError(
                f"--image {image!r} is not an image reference such as registry.example.com/agent-flywheel:0.1.0"
            )
        return cls(name, tag, digest or None)


def kubernetes_definitions(data: dict[str, Any], source: str) -> KubernetesDefinitions:
    """``definitions.kubernetes`` of a loaded prefect file, checked; ``source`` names the file in errors."""
    raw = (data.get("definitions") or {}).get("kubernetes")
    if not isinstance(raw, dict):
        raise DeployError(f"{source}: no `definitions.kubernetes` section: nothing says how to deploy to Kubernetes")
    try:
        definitions = KubernetesDefinitions.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DeployError(f"{source}: definitions.kubernetes.{where}: {first['msg']}") from None
    if "default" not in definitions.resources:
        raise DeployError(f"{source}: definitions.kubernetes.resources: no `default` entry")
    return definitions


def apply_kubernetes(data: dict[str, Any], target: KubernetesTarget, *, source: str, code_dir: str | None) -> None:
    """Turn a loaded prefect file (its anchors expanded) into the production one, in place.

    Each deployment's job variables get the image and its resources (on top of those it has), every ``*_block``
    parameter names ``target.block_name``, ``pull`` enters ``code_dir`` (default: ``definitions.kubernetes``'s),
    and with ``target.build`` the file's ``build``/``push`` steps build and push ``target.image``.
    """
    definitions = kubernetes_definitions(data, source)
    entrypoints = {str(deployment.get("entrypoint")) for deployment in data["deployments"]}
    unknown = sorted(set(definitions.resources) - entrypoints - {"default"})
    if unknown:
        raise DeployError(
            f"{source}: definitions.kubernetes.resources: no deployment has the entrypoint {unknown[0]!r}"
        )
    image = ImageRef.parse(target.image)
    image_value = target.image
    if target.build:
        data["build"], data["push"], image_value = _build_steps(definitions, image, source)
    for deployment in data["deployments"]:
        work_pool = dict(deployment.get("work_pool") or {})
        resources = definitions.resources_of(str(deployment.get("entrypoint")))
        local_variables = {k: v for k, v in (work_pool.get("job_variables") or {}).items() if k != "env"}
        work_pool["job_variables"] = {  # the local pool's env (heartbeats) is in the template's env default
            **local_variables,
            "image": image_value,
            **resources.model_dump(),
        }
        deployment["work_pool"] = work_pool
        parameters = deployment.get("parameters") or {}
        for key in parameters:
            if key.endswith("_block"):
                parameters[key] = target.block_name
    data["pull"] = [
        {"prefect.deployments.steps.set_working_directory": {"directory": code_dir or definitions.code_dir}}
    ]


def _build_steps(
    definitions: KubernetesDefinitions, image: ImageRef, source: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The build and push steps with the image's name and tag filled in, and the job variable that names what the
    build step built (``{{ <id>.image }}``)."""
    if image.digest or not image.tag:
        raise DeployError(
            f"--build needs --image with a tag to build, such as {image.name}:0.1.0 (no digest: the build makes it)"
        )
    build, push = copy.deepcopy(definitions.build), copy.deepcopy(definitions.push)
    build_step = next((step[BUILD_STEP] for step in build if BUILD_STEP in step), None)
    if build_step is None or not build_step.get("id"):
        raise DeployError(f"{source}: definitions.kubernetes.build: no {BUILD_STEP} step with an `id`")
    build_step.update(image_name=image.name, tag=image.tag)
    return build, push, f"{{{{ {build_step['id']}.image }}}}"


def referenced_blocks(data: dict[str, Any]) -> list[tuple[str, str]]:
    """``(block type slug, name)`` of every block the deployments' parameters name, sorted: what must be saved on
    the server before their runs can start."""
    slugs = block_parameters()
    found = set()
    for deployment in data.get("deployments") or []:
        for key, value in (deployment.get("parameters") or {}).items():
            if key in slugs and isinstance(value, str):
                found.add((slugs[key], value))
    return sorted(found)
