"""The scaling lifecycle on the local stack, in demo-sized time: profile, sweep, size for 200 users, rollout check.

``flywheel demo`` calls :func:`scaling_demo` after the flywheel (and ``flywheel scale-demo`` runs it alone).
It uses ``configs/scaling-demo.yaml``: fewer requests per level, levels 1–24, 2 passes, short rollout stages.
The canary of the rollout check is the model the flywheel promoted (the registry's ``champion``), else
``meta/llama-3.2-1b-instruct``. Everything runs against the simulators, so every number is simulated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from agent_flywheel.config import ScalingConfig, load_config
from agent_flywheel.paths import configure_local_environment
from cli.console import tracebacks_to_log
from cli.in_process import RunGuard
from simulators.settings import load_local_config
from simulators.stack import LocalStack

if TYPE_CHECKING:
    from flows.rollout_check import RolloutCheckOutcome
    from flows.scaling import ScalingOutcome

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "scaling-demo.yaml"
DEFAULT_CANARY = "meta/llama-3.2-1b-instruct"
SCALING_PARTS = ("logserver", "nim", "agent")
DEMO_MIN_CANARY_REQUESTS = 20  # a stage of a few seconds cannot reach the production default of 50
DEMO_WORKLOAD = "customer-support"


def _serve_canary(nim_url: str, canary: str, root: str | None) -> str:
    """Make the canary servable on the NIM simulator, standing in for a deployment; says what it did.

    Why: the flywheel tears its deployments down when it finishes, so the promoted model may no longer be
    served; a rollout check of a model nobody serves would only demonstrate a rollback.
    """
    from urllib.parse import quote

    found = httpx.get(f"{nim_url}/v1/models/{quote(canary, safe='')}", timeout=10.0)
    if found.status_code == 200:
        return f"{canary} is served by the NIM"
    body: dict[str, Any] = {"id": canary}
    if root and root != canary:
        body.update(root=root, parent=root)
    httpx.post(f"{nim_url}/admin/models", json=body, timeout=10.0).raise_for_status()
    return f"{canary} deployed on the NIM simulator for the rollout check"


def _champion(workload_id: str) -> tuple[str | None, str | None]:
    """(served model, base model) of the registry's champion for the workload, when there is one."""
    from agent_flywheel.nemo.names import registered_model_name
    from blocks.mlflow_tracking import MlflowTracking
    from blocks.resolve import load_block
    from tasks.scaling_tracking import served_champion

    return served_champion(load_block(MlflowTracking, "local").get_tracker(), registered_model_name(workload_id))


@dataclass(frozen=True)
class ScalingDemoOutcome:
    """What the scaling demo found: the scaling flow's and the rollout check's results, and what it prints."""

    scaling: ScalingOutcome
    rollout: RolloutCheckOutcome
    canary_note: str
    seconds: float
    summary: list[str] = field(default_factory=list)


def summary_lines(scaling: ScalingOutcome, rollout: RolloutCheckOutcome, seconds: float) -> list[str]:
    """What the demo prints: the answer, the profile's bottleneck, the rollout decision, where to look."""
    sizing = scaling.sizing
    targets = sizing["targets"]
    lines = [f"scaling demo ({seconds:.0f} s, simulated):"]
    if sizing["reachable"]:
        bound = "≥ " if sizing["slo_concurrency_is_lower_bound"] else ""
        assumptions = sizing["assumptions"]
        low, high = sizing["gpus_low"], sizing["gpus_high"]
        label = "interval" if sizing["interval_kind"] == "confidence" else "measured bracket"
        interval = f"{label} {'open' if low is None else low}–{'open' if high is None else high}"
        lines.append(
            f"  sizing: C* = {bound}{sizing['slo_concurrency_per_replica']:.2f} concurrent users per replica under a "
            f"{targets['target_workflow_p95_s']:g} s workflow p95 -> {sizing['replicas']} replicas × "
            f"{assumptions['gpus_per_replica']} GPU(s) = {sizing['gpus']} GPUs for {targets['target_users']} users "
            f"({'pinned' if assumptions['sticky_sessions'] else 'balanced per request'}; {interval})"
        )
        confirmation = sizing.get("confirmation")
        if confirmation:
            lines.append(f"  confirmation: {confirmation['summary']}")
    else:
        lines.append(f"  sizing: {sizing['reason']}")
    bottleneck = scaling.profile.summary.get("bottleneck")
    if bottleneck:
        lines.append(f"  profile: {bottleneck}")
    if rollout.decision:
        stages = ", ".join(f"{s.stage} {s.decision}" for s in rollout.stages)
        lines.append(f"  rollout check of {rollout.canary_model}: {rollout.decision} ({stages})")
    else:
        lines.append(f"  rollout check: {rollout.skipped}")
    lines.append(f"  MLflow: {scaling.mlflow_url} (sizing/{scaling.app})")
    if rollout.mlflow_url:
        lines.append(f"          {rollout.mlflow_url} (rollout/{scaling.app})")
    return lines


def scaling_demo(
    local_config_path: str | None = None,
    config_path: str | None = None,
    echo: Callable[[str], None] | None = print,
) -> ScalingDemoOutcome:
    """Run the scaling lifecycle on the local stack in about two minutes and return what it found.

    Starts the parts it needs (log server, NIM, agent) when they are not running and stops only those it
    started; ``echo`` (default ``print``, None for silence) gets a line per step.
    """
    say = echo or (lambda _: None)
    configure_local_environment()
    local = load_local_config(local_config_path)
    from cli.local_blocks import register_local_blocks

    register_local_blocks(local)  # the flows below load the `local` blocks: they point at this stack
    cfg = load_config(config_path or DEMO_CONFIG, ScalingConfig)
    started = time.monotonic()
    stack = LocalStack(local, SCALING_PARTS)
    down = [s.name for s in stack.status() if not s.healthy]
    if down:
        say(f"starting {', '.join(down)} of the local stack (simulators)...")
        stack.up()
    try:
        from flows.rollout_check import rollout_check
        from flows.scaling import scaling

        levels = ", ".join(str(c) for c in cfg.load_sweep.concurrencies)
        say(
            f"scaling lifecycle of {cfg.app}: profile ({cfg.profile.num_requests} requests), load sweep (concurrency "
            f"{levels}, {cfg.load_sweep.num_passes} passes), sizing for {cfg.sizing.target_users} users under a "
            f"{cfg.sizing.target_workflow_p95_s:g} s p95..."
        )
        tracebacks_to_log()
        guard = RunGuard()
        scaled = guard.run(lambda: guard.watch(scaling)(config=cfg, agent_block="local", mlflow_block="local"))
        champion, root = _champion(DEMO_WORKLOAD)
        canary = champion or DEFAULT_CANARY
        served = _serve_canary(local.url("nim"), canary, root)
        stages = ", ".join(f"{s.weight:.0%} for {s.duration_s:g} s" for s in cfg.rollout.stages)
        say(f"rollout check of {canary} ({served}): {stages}...")
        checked = guard.run(
            lambda: guard.watch(rollout_check)(
                config=cfg,
                agent_block="local",
                mlflow_block="local",
                canary_model=canary,
                workload_id=DEMO_WORKLOAD,
                min_canary_requests=DEMO_MIN_CANARY_REQUESTS,
            )
        )
        canary_note = served + (" (the flywheel's champion)" if champion else " (no champion yet)")
    finally:
        if down:
            LocalStack(local, down).down()
    seconds = time.monotonic() - started
    return ScalingDemoOutcome(
        scaling=scaled,
        rollout=checked,
        canary_note=canary_note,
        seconds=seconds,
        summary=summary_lines(scaled, checked, seconds),
    )
