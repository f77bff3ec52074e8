"""The scaling lifecycle: profile → load sweep → sizing, one MLflow run in ``sizing/<app>`` for all three.

profile      the example inputs one at a time → spans → per-step stats, critical path, Gantt
load-sweep   closed loop at every concurrency (open loop at every rate), interleaved passes
sizing       C* and GPUs with a bootstrap interval, never a crash when the SLO cannot be met
scaling      the three in a row; with ``candidate_model`` the agent routes every user to it meanwhile

Each flow also runs on its own (a deployment, a person); it then opens and closes its own MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run as current_run

from agent_flywheel.config import ScalingConfig, load_config
from agent_flywheel.paths import state_dir
from agent_flywheel.tracking import flatten_params, sizing_experiment
from tasks.clients import tracker
from tasks.scaling import (
    ProfileOutcome,
    SizingOutcome,
    SweepOutcome,
    agent_info,
    artifact_url,
    end_tracking_run,
    log_profile,
    log_sizing,
    log_sweep,
    profile_timeout_s,
    routed_to,
    run_load_sweep,
    run_profile,
    run_sizing,
    start_tracking_run,
    sweep_timeout_s,
)

DEFAULT_CONFIG = "configs/scaling.yaml"
SWEEP_TABLE_COLUMNS = (
    "concurrency",
    "rate_rps",
    "passes",
    "requests",
    "error_rate",
    "throughput_rps",
    "workflow_p50_s",
    "workflow_p95_s",
    "workflow_p99_s",
    "llm_p50_s",
    "llm_p95_s",
    "llm_p99_s",
    "late_share",
    "warnings",
)


def _config(config: ScalingConfig | None, config_path: str) -> ScalingConfig:
    return config or load_config(config_path, ScalingConfig)


def _run_id() -> str:
    return str(current_run.id or "local")


def _out_dir(kind: str) -> Path:
    return state_dir("scaling", _run_id(), kind)


def _tags(cfg: ScalingConfig, agent_block: str, candidate_model: str | None, stage: str) -> dict[str, str]:
    """The tags of every run in ``sizing/<app>`` (DESIGN.md section 4, plus what was measured)."""
    info = agent_info(agent_block)
    tags = {
        "app": cfg.app,
        "prefect.flow_run_id": _run_id(),
        "simulated": str(info.simulated).lower(),
        "agent_url": info.url,
        "scaling.stage": stage,
    }
    if candidate_model:
        tags["candidate_model"] = candidate_model
    if current_run.ui_url:
        tags["prefect.flow_run_url"] = str(current_run.ui_url)
    return tags


def _params(cfg: ScalingConfig, *sections: str) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    return flatten_params({k: data[k] for k in sections}) | {"app": cfg.app}


class _OwnRun:
    """The MLflow run a flow logs to: the parent's when given, else one it opens (and closes) itself."""

    def __init__(
        self,
        mlflow_block: str,
        run_id: str | None,
        cfg: ScalingConfig,
        agent_block: str,
        candidate_model: str | None,
        stage: str,
        sections: tuple[str, ...],
    ) -> None:
        self.mlflow_block = mlflow_block
        self.owned = run_id is None
        if run_id is None:
            name = f"{stage} {current_run.name or _run_id()}"
            run_id, _ = start_tracking_run(
                mlflow_block,
                sizing_experiment(cfg.app),
                name,
                _tags(cfg, agent_block, candidate_model, stage),
                _params(cfg, *sections),
            )
        self.run_id = run_id
        mlflow, self.ui_url = tracker(mlflow_block)
        self.url = mlflow.run_url(self.ui_url, run_id)

    def link(self) -> str:
        """Markdown link to the run."""
        return f"[MLflow run `{self.run_id[:8]}`]({self.url})"

    def close(self, ok: bool) -> None:
        if self.owned:
            end_tracking_run(self.mlflow_block, self.run_id, "FINISHED" if ok else "FAILED")


def _image(ui_url: str | None, run_id: str, path: str, title: str) -> str:
    url = artifact_url(ui_url, run_id, path)
    if url is None:
        return f"{title}: `{path}` in the MLflow run."
    return f"![{title}]({url})\n\n[{title} (PNG)]({url})"


def profile_markdown(outcome: ProfileOutcome, link: str, gantt: str) -> str:
    """The ``profile-report`` artifact: the profile report, a link to the MLflow run and the Gantt chart."""
    head = f"{outcome.requests} requests ({outcome.failed} failed), spans from {outcome.source}. {link}\n\n"
    return head + outcome.markdown + ("\n" + gantt + "\n" if outcome.traces else "")


def sizing_markdown(outcome: SizingOutcome, link: str, plots: list[str]) -> str:
    """The ``sizing-report`` artifact: the answer with its interval, the per-level table, the plots, the link."""
    return outcome.markdown + f"\n{link}\n\n" + "\n\n".join(plots) + "\n"


def sweep_table(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """The ``load-sweep`` table artifact: one row per level."""
    return [{k: row.get(k) for k in SWEEP_TABLE_COLUMNS if k in row} for row in outcome.levels]


@flow(name="profile", log_prints=True)
def profile(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
    config: ScalingConfig | None = None,
    mlflow_run_id: str | None = None,
) -> dict[str, Any]:
    """Profile the agent at concurrency 1: per-step latency, LLM calls, the critical path and a Gantt chart."""
    cfg = _config(config, config_path)
    run = _OwnRun(mlflow_block, mlflow_run_id, cfg, agent_block, candidate_model, "profile", ("profile",))
    ok = False
    try:
        with routed_to(agent_block, candidate_model):
            profile_task = run_profile.with_options(timeout_seconds=profile_timeout_s(cfg.profile))
            outcome = profile_task(agent_block, cfg.profile, str(_out_dir("profile")))
        log_profile(mlflow_block, run.run_id, outcome)
        gantt = _image(run.ui_url, run.run_id, "profile/gantt.png", "Gantt chart of a median request")
        create_markdown_artifact(
            markdown=profile_markdown(outcome, run.link(), gantt),
            key="profile-report",
            description=f"Profile of {cfg.app}",
        )
        ok = True
        return {"mlflow_run_id": run.run_id, **outcome.model_dump()}
    finally:
        run.close(ok)


@flow(name="load-sweep", log_prints=True)
def load_sweep(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
    config: ScalingConfig | None = None,
    mlflow_run_id: str | None = None,
) -> dict[str, Any]:
    """Sweep the agent with load (closed loop per concurrency, open loop per rate); the tables go to MLflow."""
    cfg = _config(config, config_path)
    run = _OwnRun(mlflow_block, mlflow_run_id, cfg, agent_block, candidate_model, "load-sweep", ("load_sweep",))
    ok = False
    try:
        with routed_to(agent_block, candidate_model):
            sweep_task = run_load_sweep.with_options(timeout_seconds=sweep_timeout_s(cfg.load_sweep))
            outcome = sweep_task(agent_block, cfg.load_sweep, cfg.profile, str(_out_dir("sweep")))
        log_sweep(mlflow_block, run.run_id, outcome)
        create_table_artifact(
            table=sweep_table(outcome),
            key="load-sweep",
            description=f"Load sweep of {cfg.app}: one row per level, passes merged ({run.link()})",
        )
        ok = True
        return {"mlflow_run_id": run.run_id, **outcome.model_dump()}
    finally:
        run.close(ok)


@flow(name="sizing", log_prints=True)
def sizing(
    sweep_csv: str,
    config_path: str = DEFAULT_CONFIG,
    mlflow_block: str = "local",
    config: ScalingConfig | None = None,
    llm_calls_csv: str | None = None,
    mlflow_run_id: str | None = None,
    agent_block: str = "local",
) -> dict[str, Any]:
    """Size from a sweep table (per request or per level): C*, GPUs with an interval, cost, plots."""
    cfg = _config(config, config_path)
    run = _OwnRun(mlflow_block, mlflow_run_id, cfg, agent_block, None, "sizing", ("sizing",))
    ok = False
    try:
        outcome = run_sizing(sweep_csv, llm_calls_csv, cfg.sizing, str(_out_dir("sizing")))
        log_sizing(mlflow_block, run.run_id, outcome)
        plots = [
            _image(run.ui_url, run.run_id, "latency_vs_concurrency.png", "p95 latency vs concurrency"),
            _image(run.ui_url, run.run_id, "sizing.png", "GPUs with their interval"),
        ]
        create_markdown_artifact(
            markdown=sizing_markdown(outcome, run.link(), plots),
            key="sizing-report",
            description=f"Sizing of {cfg.app} for {cfg.sizing.target_users} users",
        )
        ok = True
        return {"mlflow_run_id": run.run_id, **outcome.model_dump()}
    finally:
        run.close(ok)


@flow(name="scaling", log_prints=True)
def scaling(
    config_path: str = DEFAULT_CONFIG,
    agent_block: str = "local",
    mlflow_block: str = "local",
    candidate_model: str | None = None,
    config: ScalingConfig | None = None,
) -> dict[str, Any]:
    """Profile, load-sweep and size the agent (with ``candidate_model`` serving every user, when given).

    One MLflow run in ``sizing/<app>`` holds the profile, the sweep and the answer; ``config`` (a form in
    the Prefect UI) wins over ``config_path``.
    """
    logger = get_run_logger()
    cfg = _config(config, config_path)
    run_id, mlflow_url = start_tracking_run(
        mlflow_block,
        sizing_experiment(cfg.app),
        f"scaling {current_run.name or _run_id()}",
        _tags(cfg, agent_block, candidate_model, "scaling"),
        _params(cfg, "profile", "load_sweep", "sizing") | {"candidate_model": candidate_model or ""},
    )
    logger.info(
        "scaling %s%s: MLflow run %s", cfg.app, f" with {candidate_model}" if candidate_model else "", mlflow_url
    )
    status = "FAILED"
    try:
        prof = profile(
            agent_block=agent_block,
            mlflow_block=mlflow_block,
            candidate_model=candidate_model,
            config=cfg,
            mlflow_run_id=run_id,
        )
        if prof["traces"] == 0:
            logger.warning("profile: no traces collected; the sweep and sizing go on without a profile")
        sweep = load_sweep(
            agent_block=agent_block,
            mlflow_block=mlflow_block,
            candidate_model=candidate_model,
            config=cfg,
            mlflow_run_id=run_id,
        )
        answer = sizing(
            sweep_csv=sweep["requests_csv"],
            llm_calls_csv=sweep["llm_calls_csv"],
            mlflow_block=mlflow_block,
            config=cfg,
            mlflow_run_id=run_id,
            agent_block=agent_block,
        )
        status = "FINISHED"
    finally:
        end_tracking_run(mlflow_block, run_id, status)
    result = answer["answer"]
    logger.info("scaling %s: %s", cfg.app, result["reason"])
    return {
        "app": cfg.app,
        "candidate_model": candidate_model,
        "mlflow_run_id": run_id,
        "mlflow_url": mlflow_url,
        "profile": {k: prof[k] for k in ("requests", "failed", "traces", "source", "summary")},
        "sweep": {k: sweep[k] for k in ("requests", "errors", "warnings", "seconds", "levels")},
        "sizing": result,
        "markdown": answer["markdown"],
    }
