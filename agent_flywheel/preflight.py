"""The preflight: everything a flywheel run needs, checked before it creates any job or deployment.

A run that fails after its fine-tunes have used their GPU hours (a teacher nobody deployed, a customization
target that does not exist, a Data Store that refuses uploads) wastes them; this finds those problems first,
all of them at once. Checks:

- the models the run needs served (:mod:`agent_flywheel.nemo.serving`): one it deploys itself must be
  deployable (Deployment Management answers, no failed deployment of that name that is not ours); one that
  must be served already must be listed by the NIM proxy and answer a one-token chat completion;
- a remote judge or embedding model answers at its URL with its API key (as the blueprint's judge check);
- each candidate can be deployed (the same DMS checks; what DMS offers without deploying: it cannot say whether
  an image can be pulled);
- each customization target exists, is enabled, is not failed, and trains the candidate's model; the
  Customizer can take training configs (NeMo 25.06 and later);
- the Data Store accepts an upload (a tiny probe repo, read back, deleted) in whatever mode it asks for;
- the log index's mapping is usable (:func:`agent_flywheel.logstore.shape.inspect_index`).

Every check runs whatever the others found; the report lists each with what was found and, for a problem,
what to do. Nothing here creates a job or a deployment.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import SecretStr

from agent_flywheel.config import ExampleSelection, FlywheelConfig, NIMConfig, RemoteModelConfig
from agent_flywheel.logstore.client import LogStoreClient
from agent_flywheel.logstore.shape import IndexMissing, IndexShapeError, inspect_index
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.customizer import UNUSABLE_TARGET_STATUSES
from agent_flywheel.nemo.deployments import is_managed
from agent_flywheel.nemo.entity_store import split_ref
from agent_flywheel.nemo.http import NemoAPIError
from agent_flywheel.nemo.names import deployment_name
from agent_flywheel.nemo.serving import RequiredModel, required_models

logger = logging.getLogger(__name__)

PROBE_FILE = "preflight.jsonl"
PROBE_CONTENT = '{"agent_flywheel": "preflight probe"}\n'
_PING = [{"role": "user", "content": "Reply with OK."}]


@dataclass(frozen=True)
class Finding:
    """One check: what was checked, whether it passed, what was found, and (for a problem) what to do."""

    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``ok       <check>: <detail>`` or ``PROBLEM  <check>: <detail>; fix: <fix>``."""
        detail, fix = " ".join(self.detail.split()), " ".join(self.fix.split())  # one line, whatever a service said
        text = f"{'ok' if self.ok else 'PROBLEM':<8} {self.check}: {detail}"
        return f"{text}; fix: {fix}" if fix and not self.ok else text


@dataclass(frozen=True)
class PreflightReport:
    """Every finding, in the order the checks are listed."""

    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def problems(self) -> list[Finding]:
        """The findings that stop a run."""
        return [f for f in self.findings if not f.ok]

    @property
    def ok(self) -> bool:
        """True when nothing stops a run."""
        return not self.problems

    def lines(self) -> list[str]:
        """One line per finding."""
        return [f.line() for f in self.findings]


class PreflightError(RuntimeError):
    """The preflight found problems: every one of them is in the message, with what to do; nothing was started."""

    def __init__(self, report: PreflightReport) -> None:
        self.report = report
        problems = report.problems
        lines = [f"preflight: {len(problems)} problem(s), so nothing was started (no dataset, job or deployment):"]
        lines += ["- " + p.line().removeprefix("PROBLEM").lstrip() for p in problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.report,))


def _one_line(text: str, limit: int = 160) -> str:
    """A response body as one short line (a finding is one line)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _failure(exc: BaseException) -> str:
    """What went wrong, in one line (a NeMo error's own message names the service, the call and the status)."""
    if isinstance(exc, NemoAPIError):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _guard(check: str, work: Awaitable[list[Finding]], fix: str) -> list[Finding]:
    """A check that raised becomes a problem naming what failed (one check never stops the others)."""
    try:
        return await work
    except Exception as exc:
        return [Finding(check, False, _failure(exc), fix)]


# --- models the NIM proxy must serve --------------------------------------------------------------------------


async def _served_models(nemo: NemoClient) -> list[str]:
    return [model.id for model in await nemo.nim.list_models()]


def _listed(models: Iterable[str], limit: int = 8) -> str:
    names = sorted(models)
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return shown or "none"


async def _answers(nemo: NemoClient, model: str) -> str:
    """Ask ``model`` for one token through the NIM proxy; what it said, shortened."""
    answer = await nemo.nim.chat(model, _PING, max_tokens=4, temperature=0)
    message = (answer.get("choices") or [{}])[0].get("message") or {}
    content = message.get("content") or ("(a tool call)" if message.get("tool_calls") else "(empty)")
    return str(content).strip()[:40]


async def _deployable(nemo: NemoClient, namespace: str, model: str, gpus: int | None) -> Finding | None:
    """Problem with deploying ``model`` through DMS, or None: DMS must answer, and a deployment of that name must
    not be failed unless agent-flywheel manages it (then a run replaces it)."""
    name = deployment_name(model)
    existing = await nemo.deployments.get(namespace, name)
    if existing is None:
        return None
    if existing.failed and not is_managed(existing):
        return Finding(
            f"deployment {namespace}/{name}",
            False,
            f"exists, failed ({existing.status_details.description or 'no description'}) and was not created by "
            "agent-flywheel, so the flywheel neither uses nor replaces it",
            f"delete it (DELETE {nemo.deployments.http.base_url}/v1/deployment/model-deployments/{namespace}/{name}) "
            "or fix it",
        )
    return None


async def check_required_model(nemo: NemoClient, namespace: str, model: RequiredModel) -> list[Finding]:
    """A teacher, judge or embedding model: served and answering, or (``deploy``) deployable through DMS."""
    check = model.label
    served = await _served_models(nemo)
    if model.model_name in served:
        if model.model_type == "embedding":
            await nemo.nim.embeddings(["preflight"], model.model_name)
            return [Finding(check, True, "served by the NIM proxy, answers embeddings")]
        said = await _answers(nemo, model.model_name)
        return [Finding(check, True, f"served by the NIM proxy, answers ({said!r})")]
    if model.deploy:
        problem = await _deployable(nemo, namespace, model.model_name, model.gpus)
        if problem is not None:
            return [problem]
        image = f"{model.registry_base}/{model.model_name}:{model.tag or 'latest'}"
        return [
            Finding(check, True, f"not served yet: the run deploys it through DMS ({image}, {model.gpus or 1} GPU(s))")
        ]
    roles = " and ".join(model.roles)
    setting = "teacher.deployment_type: local" if "teacher" in model.roles else "deployment_type: local"
    return [
        Finding(
            check,
            False,
            f"not served by the NIM proxy at {nemo.nim.http.base_url} (it serves: {_listed(served)}), and the "
            f"config does not let the run deploy it",
            f"deploy it (it must answer as {roles} before any fine-tune starts), or set `{setting}` so the flywheel "
            "deploys it through Deployment Management and removes it afterwards",
        )
    ]


async def check_candidate(nemo: NemoClient, namespace: str, nim: NIMConfig) -> list[Finding]:
    """A candidate NIM: deployable through DMS (or served already)."""
    problem = await _deployable(nemo, namespace, nim.model_name, nim.gpus)
    if problem is not None:
        return [problem]
    image = f"{nim.registry_base}/{nim.model_name}:{nim.tag or 'latest'}"
    note = "" if nim.tag else " (no tag in the config: `latest` is deployed; pin nims[].tag)"
    return [Finding(f"candidate {nim.model_name}", True, f"deployable through DMS as {image}{note}")]


# --- remote models ---------------------------------------------------------------------------------------------


async def check_remote(
    role: str, model: RemoteModelConfig, key: SecretStr | None, http: httpx.AsyncClient
) -> list[Finding]:
    """A remote judge (one-token chat completion) or embedding model (one embedding) at its URL, with its key."""
    check = f"remote {role} {model.model_name}"
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
    if role == "embedding":
        url = str(model.embeddings_url)
        body: dict[str, Any] = {"model": model.model_name, "input": ["preflight"], "input_type": "query"}
    else:
        url = str(model.chat_completions_url)
        body = {"model": model.model_name, "messages": _PING, "max_tokens": 4}
    variable = "LLM_JUDGE_API_KEY" if role == "judge" else "EMB_API_KEY"
    key_fix = (
        f"set the NemoPlatform block's {role}_api_key (or {model.api_key_env or variable}, or NVIDIA_API_KEY, "
        "in the environment of the run)"
    )
    try:
        response = await http.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        return [Finding(check, False, f"cannot reach {url}: {type(exc).__name__}", "check the url in the config")]
    if response.status_code in (401, 403):
        said = "no API key was sent" if key is None else "the API key was refused"
        return [Finding(check, False, f"{url} answered {response.status_code}: {said}", key_fix)]
    expected = "data" if role == "embedding" else "choices"
    try:
        ok = response.status_code == 200 and expected in response.json()
    except ValueError:
        ok = False
    if not ok:
        return [
            Finding(
                check,
                False,
                f"{url} answered {response.status_code} without {expected}: {_one_line(response.text)}",
                f"check the url and model_name of the {role} in the config",
            )
        ]
    return [Finding(check, True, f"answers at {url}{' (with an API key)' if key is not None else ''}")]


# --- customization ---------------------------------------------------------------------------------------------


async def check_target(nemo: NemoClient, nim: NIMConfig, registered: list[dict[str, Any]] | None) -> list[Finding]:
    """The candidate's customization target: registered, enabled, usable, for the candidate's model."""
    assert nim.customizer_configs is not None
    ref = nim.customizer_configs.target
    check = f"customization target {ref} ({nim.model_name})"
    if registered is None:
        return [
            Finding(
                check,
                False,
                f"the Customizer at {nemo.customizer.http.base_url} has no targets API (NeMo before 25.06)",
                "upgrade NeMo microservices to 25.06 or later: agent-flywheel creates versioned training configs",
            )
        ]
    namespace, name = split_ref(ref)
    target = await nemo.customizer.get_target(namespace, name)
    names = [f"{t.get('namespace')}/{t.get('name')}" for t in registered]
    if target is None:
        return [
            Finding(
                check,
                False,
                f"not registered (registered targets: {_listed(names)})",
                "register it (POST /v1/customization/targets, or the Helm value customizer.customizationTargets) "
                "or set nims[].customizer_configs.target to one of those",
            )
        ]
    if target.get("enabled") is False:
        return [
            Finding(
                check,
                False,
                "registered but disabled: the Customizer trains only enabled targets",
                f'enable it (PATCH /v1/customization/targets/{namespace}/{name} {{"enabled": true}})',
            )
        ]
    status = str(target.get("status") or "unknown").lower()
    if status in UNUSABLE_TARGET_STATUSES:
        return [Finding(check, False, f"status {status}: no job can train on it", "fix or re-register the target")]
    base = target.get("base_model")
    if isinstance(base, str) and base and base != nim.model_name:
        return [
            Finding(
                check,
                False,
                f"trains {base}, not the candidate {nim.model_name}",
                "set nims[].customizer_configs.target to a target of the candidate's model",
            )
        ]
    waiting = "" if status in ("ready", "unknown") else f" (status {status}: jobs wait until it is ready)"
    return [Finding(check, True, f"registered and enabled{waiting}")]


async def check_customization(nemo: NemoClient, nims: list[NIMConfig]) -> list[Finding]:
    """Every fine-tuned candidate's target, and that training configs can be created."""
    if not nims:
        return []
    registered = await nemo.customizer.list_targets()
    findings = list(await asyncio.gather(*(check_target(nemo, nim, registered) for nim in nims)))
    out = [f for group in findings for f in group]
    if registered is not None and not await nemo.customizer.has_configs_api():
        out.append(
            Finding(
                "customization configs",
                False,
                f"the Customizer at {nemo.customizer.http.base_url} has no configs API",
                "upgrade NeMo microservices to 25.06 or later",
            )
        )
    return out


# --- Data Store, log index -------------------------------------------------------------------------------------


async def check_datastore(nemo: NemoClient, namespace: str) -> list[Finding]:
    """Upload a tiny probe repo, read it back, delete it: the path every dataset takes (regular or LFS)."""
    name = f"flywheel-preflight-{uuid.uuid4().hex[:8]}"
    await nemo.datastore.ensure_namespace(namespace)
    try:
        await nemo.datastore.upload_files(namespace, name, {PROBE_FILE: PROBE_CONTENT}, commit_message="preflight")
        back = await nemo.datastore.read_file(namespace, name, PROBE_FILE)
    finally:
        try:
            await nemo.datastore.delete_repo(namespace, name)
        except (NemoAPIError, httpx.HTTPError) as exc:
            logger.warning("preflight: the probe repo %s/%s could not be deleted: %s", namespace, name, exc)
    if back != PROBE_CONTENT.encode():
        return [
            Finding(
                "Data Store",
                False,
                f"a probe file read back differs from what was uploaded ({len(back)} bytes)",
                "check the Data Store",
            )
        ]
    return [Finding("Data Store", True, f"accepts uploads at {nemo.datastore.hf_endpoint} (probe repo deleted)")]


async def check_log_index(es: LogStoreClient, index: str) -> list[Finding]:
    """The log index's mapping, as extraction will read it."""
    try:
        shape = await asyncio.to_thread(inspect_index, es, index)
    except IndexMissing as exc:
        return [Finding("log index", False, str(exc), f"create it: flywheel logs create-index --index {index}")]
    except IndexShapeError as exc:
        return [Finding("log index", False, str(exc))]
    warnings = f" (warning: {'; '.join(shape.warnings)})" if shape.warnings else ""
    return [Finding("log index", True, shape.describe() + warnings)]


# --- the whole preflight ---------------------------------------------------------------------------------------


async def run_preflight(
    cfg: FlywheelConfig,
    nemo: NemoClient,
    *,
    es: LogStoreClient | None = None,
    index: str | None = None,
    timeout_s: float = 30.0,
) -> PreflightReport:
    """Every check of the module docstring, concurrently; never raises for a failed check (it is a finding).

    ``nemo`` carries the API keys of remote models (``NemoPlatform.get_client(cfg)``); ``es`` and ``index`` are
    the log store (left out: not checked).
    """
    ns = cfg.namespace
    plan = required_models(cfg)
    deployed = {m.model_name for m in plan}
    tuned = [nim for nim in cfg.nims if nim.customization_enabled]
    remote: list[tuple[str, RemoteModelConfig]] = []
    if cfg.llm_judge_config.deployment_type == "remote":
        remote.append(("judge", cfg.llm_judge_config))
    embedding = cfg.icl_config.similarity_config.embedding_nim_config
    semantic = cfg.icl_config.example_selection == ExampleSelection.SEMANTIC
    if semantic and embedding is not None and embedding.deployment_type == "remote":
        remote.append(("embedding", embedding))
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        work: list[Awaitable[list[Finding]]] = [
            _guard(m.label, check_required_model(nemo, ns, m), f"check the NIM proxy at {nemo.nim.http.base_url}")
            for m in plan
        ]
        work += [
            _guard(f"remote {role} {model.model_name}", check_remote(role, model, nemo.remote_key(role), http), "")
            for role, model in remote
        ]
        work += [
            _guard(
                f"candidate {nim.model_name}",
                check_candidate(nemo, ns, nim),
                f"check Deployment Management at {nemo.deployments.http.base_url}",
            )
            for nim in cfg.nims
            if nim.model_name not in deployed
        ]
        work.append(
            _guard(
                "customization",
                check_customization(nemo, tuned),
                f"check the Customizer at {nemo.customizer.http.base_url}",
            )
        )
        work.append(
            _guard("Data Store", check_datastore(nemo, ns), f"check the Data Store at {nemo.datastore.hf_endpoint}")
        )
        if es is not None and index is not None:
            work.append(_guard("log index", check_log_index(es, index), "check the LogStore block's url and index"))
        groups = await asyncio.gather(*work)
    return PreflightReport(tuple(f for group in groups for f in group))
