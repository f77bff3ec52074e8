"""The models a flywheel run needs served besides its candidates: the teacher, the LLM judge, the embedding model.

Each is either **served** already (the NIM proxy lists it: the production teacher, a remote judge at its URL)
or **deployed** by the run through Deployment Management (``deployment_type: local``) when the NIM proxy does
not serve it, and left again when the run is done, like a candidate (a shared deployment is deleted by its
last user: :mod:`agent_flywheel.nemo.deployments`). Roles that name the same model (the default judge is the
teacher's model) share one deployment.

When each is needed: the embedding model while the datasets are built (semantic ICL selection), the teacher
and the judge during the evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agent_flywheel.config import ExampleSelection, FlywheelConfig
from agent_flywheel.nemo.payloads import DEFAULT_NIM_ENVS, dms_deployment_body_for

Phase = Literal["datasets", "evaluation"]
ServedRole = Literal["teacher", "judge", "embedding"]


@dataclass(frozen=True)
class RequiredModel:
    """One model the run needs the NIM proxy to serve, in one or more roles.

    ``deploy``: the run deploys it through DMS when it is not served (a ``local`` role); otherwise it must be
    served already, and the preflight stops the run when it is not.
    """

    model_name: str
    roles: tuple[ServedRole, ...]
    deploy: bool
    phase: Phase
    model_type: Literal["llm", "embedding"] = "llm"
    gpus: int | None = None
    tag: str | None = None
    pvc_size: str | None = None
    registry_base: str = "nvcr.io/nim"

    @property
    def label(self) -> str:
        """``teacher and judge meta/llama-3.3-70b-instruct``: the roles and the model, for logs and errors."""
        return f"{' and '.join(self.roles)} {self.model_name}"

    def deployment_body(self, namespace: str, description: str) -> dict[str, Any]:
        """``POST /v1/deployment/model-deployments`` for this model (an embedding NIM gets no guided decoding)."""
        return dms_deployment_body_for(
            self.model_name,
            namespace,
            gpus=self.gpus,
            tag=self.tag,
            pvc_size=self.pvc_size,
            registry_base=self.registry_base,
            additional_envs=DEFAULT_NIM_ENVS if self.model_type == "llm" else {},
            description=description,
        )


def _merge(entries: list[RequiredModel]) -> list[RequiredModel]:
    """One entry per model: roles joined, deployed when any role deploys it, the largest GPU count, the first tag."""
    merged: dict[str, RequiredModel] = {}
    for entry in entries:
        seen = merged.get(entry.model_name)
        if seen is None:
            merged[entry.model_name] = entry
            continue
        gpus = max((g for g in (seen.gpus, entry.gpus) if g is not None), default=None)
        merged[entry.model_name] = RequiredModel(
            model_name=seen.model_name,
            roles=(*seen.roles, *(r for r in entry.roles if r not in seen.roles)),
            deploy=seen.deploy or entry.deploy,
            phase="datasets" if "datasets" in (seen.phase, entry.phase) else "evaluation",
            model_type=seen.model_type,
            gpus=gpus,
            tag=seen.tag or entry.tag,
            pvc_size=seen.pvc_size or entry.pvc_size,
            registry_base=seen.registry_base,
        )
    return list(merged.values())


def required_models(
    cfg: FlywheelConfig, phase: Phase | None = None, *, tool_calling: bool | None = None
) -> list[RequiredModel]:
    """What ``cfg`` needs served through the NIM proxy (remote models are called at their URL: not listed), for
    one phase of the run or all of it.

    The judge scores every workload without tools (similarity) and tool-calling ones when
    ``evaluation_config.judge_enabled``; before the datasets are built (``tool_calling`` None) it counts as needed.
    """
    teacher = cfg.teacher
    entries = [
        RequiredModel(
            teacher.model_name,
            ("teacher",),
            deploy=teacher.deployment_type == "local",
            phase="evaluation",
            gpus=teacher.gpus,
            tag=teacher.tag,
            pvc_size=teacher.pvc_size,
            registry_base=teacher.registry_base,
        )
    ]
    judge = cfg.llm_judge_config
    judged = cfg.evaluation_config.judge_enabled or tool_calling is not True
    if judge.deployment_type == "local" and judged:
        entries.append(
            RequiredModel(
                judge.model_name,
                ("judge",),
                True,
                "evaluation",
                gpus=judge.gpus,
                tag=judge.tag,
                pvc_size=judge.pvc_size,
            )
        )
    icl = cfg.icl_config
    embedding = icl.similarity_config.embedding_nim_config
    semantic = icl.example_selection == ExampleSelection.SEMANTIC
    if semantic and embedding is not None and embedding.deployment_type == "local":
        entries.append(
            RequiredModel(
                embedding.model_name,
                ("embedding",),
                True,
                "datasets",
                model_type="embedding",
                gpus=embedding.gpus,
                tag=embedding.tag,
                pvc_size=embedding.pvc_size,
            )
        )
    merged = _merge(entries)
    return [m for m in merged if phase is None or m.phase == phase]
