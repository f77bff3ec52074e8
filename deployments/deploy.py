"""``flywheel deploy``: everything a Prefect server needs to run the flywheel, in one idempotent command.

In order: the block types and the given block documents (the CLI passes the ``local`` ones), the process
work pool, the global concurrency limits (``gpu``), every deployment in ``prefect.yaml`` through Prefect's
own ``prefect deploy --all`` (so what runs here is exactly what a user running that command gets), and
optionally a worker in the background.
Running it again updates everything in place.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import yaml

from agent_flywheel.paths import configure_local_environment, state_dir
from agent_flywheel.processes import log_tail
from deployments.settings import PROJECT_ROOT, DeployError, ServerConfig, ServiceStatus, prefect_env, require_server
from deployments.worker import LocalWorker

if TYPE_CHECKING:  # Prefect is imported only once PREFECT_HOME is set (configure_local_environment)
    from prefect.blocks.core import Block
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowFilter
    from prefect.client.schemas.responses import DeploymentResponse

DEFAULT_PREFECT_FILE = PROJECT_ROOT / "prefect.yaml"


@dataclass
class DeployReport:
    """What ``flywheel deploy`` did, step by step."""

    blocks: list[str] = field(default_factory=list)
    work_pool: str = ""
    concurrency_limits: list[str] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)
    paused_automations: list[str] = field(default_factory=list)
    worker: ServiceStatus | None = None


@contextlib.contextmanager
def prefect_api(cfg: ServerConfig, api_url: str | None = None) -> Iterator[None]:
    """Point this process's Prefect client at the configured server (or ``api_url``), whatever settings it
    loaded first."""
    configure_local_environment()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url or cfg.prefect_api_url}):
        yield


def ensure_work_pool(name: str, *, create: bool = True) -> str:
    """Create the process work pool ``name`` with Prefect's default job template unless it exists.

    With ``create=False`` (a production pool, e.g. Kubernetes, whose job template names an image and
    is set up by hand) a missing pool is an error instead.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            return f"{name} ({existing.type}, exists)"
        if not create:
            raise DeployError(
                f"work pool {name!r} does not exist; create it first (docs/operations.md, "
                '"Production on Kubernetes"), then deploy again'
            )
        from prefect.workers.process import ProcessWorker

        client.create_work_pool(
            WorkPoolCreate(name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template())
        )
    return f"{name} (process, created)"


def ensure_concurrency_limits(limits: dict[str, int]) -> list[str]:
    """Create or resize the global concurrency limits (``gpu`` bounds candidate NIMs deployed at once)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    done = []
    with get_client(sync_client=True) as client:
        for name, slots in sorted(limits.items()):
            try:
                current = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
                done.append(f"{name}={slots} (created)")
                continue
            if current.limit != slots or not current.active:
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=slots, active=True))
                done.append(f"{name}={slots} (updated from {current.limit})")
            else:
                done.append(f"{name}={slots} (exists)")
    return done


def render_prefect_file(
    prefect_file: Path,
    *,
    pool: str | None = None,
    code_dir: str | None = None,
    keep_schedules_of: Collection[tuple[str, str]] = (),
    keep_paused: Collection[tuple[str, str, str]] = (),
) -> Path:
    """The ``prefect.yaml`` that ``flywheel deploy`` hands to ``prefect deploy``, under ``.flywheel/run/``.

    ``pool``/``code_dir`` aim every deployment at another work pool and code location (``prefect deploy
    --all`` takes each pool from the file and ignores ``--pool``): how the same file deploys to a
    Kubernetes pool whose image has the code at ``code_dir``. Deployments in ``keep_schedules_of``
    (``(entrypoint, name)`` pairs already on the server) lose their ``schedules:``, so that Prefect
    leaves the schedules people changed in the UI alone; the file's schedules only seed new deployments.
    ``keep_paused`` (``(entrypoint, name, trigger name)``) are the triggers whose automation someone paused:
    ``prefect deploy`` deletes and re-creates every automation of a deployment, so they are written
    ``enabled: false`` to stay paused.
    """
    data: Any = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list):
        raise DeployError(f"{prefect_file}: no `deployments:` list")
    keep, paused = set(keep_schedules_of), set(keep_paused)
    for deployment in data["deployments"]:
        if pool:
            work_pool = dict(deployment.get("work_pool") or {})
            work_pool["name"] = pool
            deployment["work_pool"] = work_pool
        key = (deployment.get("entrypoint"), deployment.get("name"))
        if key in keep:
            deployment.pop("schedules", None)
        for trigger in deployment.get("triggers") or []:
            if (*key, trigger.get("name")) in paused:
                trigger["enabled"] = False
    if code_dir:
        data["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": code_dir}}]
    data.pop("definitions", None)  # anchors are already expanded
    target = state_dir("run") / "prefect.deploy.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def existing_deployments(cfg: ServerConfig) -> set[tuple[str, str]]:
    """``(entrypoint, name)`` of every deployment already on the server."""
    with prefect_api(cfg):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return {(d.entrypoint or "", d.name) for d in _all_deployments(client)}


def _all_deployments(client: SyncPrefectClient) -> list[DeploymentResponse]:
    """Every deployment, page by page (the API returns at most 200 at a time)."""
    found: list[DeploymentResponse] = []
    while True:
        page = client.read_deployments(limit=200, offset=len(found))
        found.extend(page)
        if len(page) < 200:
            return found


def paused_triggers(cfg: ServerConfig) -> set[tuple[str, str, str]]:
    """``(entrypoint, deployment name, automation name)`` of every paused automation tied to a deployment.

    The API does not say which automations a deployment owns; those related to it (``/automations/related-to``,
    what the UI shows on a deployment's page) are matched by name with the file's triggers afterwards.
    """
    with prefect_api(cfg):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return {
                (d.entrypoint or "", d.name, automation.name)
                for d in _all_deployments(client)
                for automation in client.read_resource_related_automations(f"prefect.deployment.{d.id}")
                if not automation.enabled
            }


def deployment_names(prefect_file: Path) -> list[str]:
    """The ``deployment`` names declared in a prefect file (flow names come from the server afterwards)."""
    data: Any = yaml.safe_load(prefect_file.read_text(encoding="utf-8"))
    return [str(d.get("name")) for d in data.get("deployments", []) if isinstance(d, dict)]


def run_prefect_deploy(cfg: ServerConfig, prefect_file: Path, timeout_s: float = 600.0) -> str:
    """``prefect --no-prompt deploy --all`` from the project root against the configured server."""
    log_file = state_dir("logs") / "prefect-deploy.log"
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)]
    with log_file.open("w", encoding="utf-8") as log:
        try:
            result = subprocess.run(
                argv,
                cwd=PROJECT_ROOT,
                env=prefect_env(cfg, {"COLUMNS": "200"}),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise DeployError(f"prefect deploy took more than {timeout_s:.0f} s; see {log_file}") from None
    output = log_file.read_text(encoding="utf-8", errors="replace")
    if result.returncode != 0:
        raise DeployError(
            f"prefect deploy --all failed (exit {result.returncode}); {log_file} ends:\n{log_tail(log_file)}"
        )
    return output


def deployed(cfg: ServerConfig) -> list[str]:
    """Every deployment on the server as ``flow/deployment``, sorted."""
    with prefect_api(cfg):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployments = _all_deployments(client)
            flow_ids = list({d.flow_id for d in deployments})
            flows = {flow.id: flow.name for flow in client.read_flows(flow_filter=_flows_with_ids(flow_ids))}
            return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in deployments)


def _flows_with_ids(ids: list[UUID]) -> FlowFilter:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId

    return FlowFilter(id=FlowFilterId(any_=ids))


def deploy(
    cfg: ServerConfig,
    *,
    blocks: Sequence[Block] = (),
    block_name: str = "local",
    prefect_file: Path = DEFAULT_PREFECT_FILE,
    pool: str | None = None,
    code_dir: str | None = None,
    start_worker: bool = False,
    reset_schedules: bool = False,
) -> DeployReport:
    """Save ``blocks`` as ``block_name``, then the work pool, the concurrency limits and every deployment;
    optionally a worker.

    ``pool``/``code_dir`` retarget the deployments (see :func:`render_prefect_file`); only the local
    process pool is created here, any other pool must exist already. Schedules of deployments that
    already exist are kept as they are on the server unless ``reset_schedules``; automations paused on the
    server stay paused.
    """
    require_server(cfg)
    report = DeployReport()
    target_pool = pool or cfg.worker.pool
    with prefect_api(cfg):
        if blocks:
            from deployments.blocks import save_blocks

            report.blocks = save_blocks(blocks, block_name)
        report.work_pool = ensure_work_pool(target_pool, create=target_pool == cfg.worker.pool)
        report.concurrency_limits = ensure_concurrency_limits(cfg.concurrency_limits)
    keep = set() if reset_schedules else existing_deployments(cfg)
    paused = paused_triggers(cfg)
    deploy_file = render_prefect_file(
        prefect_file, pool=pool, code_dir=code_dir, keep_schedules_of=keep, keep_paused=paused
    )
    run_prefect_deploy(cfg, deploy_file)
    names = set(deployment_names(deploy_file))
    report.deployments = [name for name in deployed(cfg) if name.split("/", 1)[1] in names]
    report.paused_automations = sorted({automation for _, deployment, automation in paused if deployment in names})
    if start_worker:
        report.worker = LocalWorker(cfg).up()
    return report
