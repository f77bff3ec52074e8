"""The data flywheel: logs → datasets → for every candidate NIM, three-mode eval (and a LoRA fine-tune) → gate.

extract_logs → preflight → build_datasets → upload_datasets
teacher base-eval  ‖  per candidate (under the `gpu` concurrency limit):
    deploy → base-eval ‖ icl-eval ‖ (customize → customized-eval) → teardown
promotion gate → MLflow decision + `champion` alias → event → watermark

The flow loads its three blocks once (``nemo_block``, ``log_store_block``, ``mlflow_block``) and hands the
tasks what they need: the log store block, one NeMo client per flow run (and one per candidate subflow),
one MLflow tracker.

One run per workload at a time (:mod:`tasks.workload_lock`): a run that finds its workload held by a live
run is skipped (outcome ``workload-busy``, naming the holder), or waits ``wait_for_workload_minutes`` first.
A run with nothing new to learn from stops early: no new records since the watermark (outcome
``no-new-data``, before any dataset or GPU job), or a promoted candidate that already is the ``champion``
(outcome ``unchanged``: no new model version, no ``flywheel.candidate.promoted``).

A run that fails, crashes or is cancelled stops every job it started and leaves every deployment it used
(the hooks below; a job or deployment another live run uses stays up). What a run started carries its flow
run id on the NeMo side, so a run killed outright is cleaned up from any machine: the next run takes over
the jobs it needs, the ``reaper`` flow marks the dead run crashed and stops the rest (:mod:`tasks.reaping`).
Evaluations and fine-tunes are cached by their inputs, so running again after any failure redoes only
what did not finish. When an evaluation fails
for good, the run records what it has and fails without a decision: a decision made on a partial
comparison could be the wrong one.

Before any dataset, job or deployment, the preflight (:mod:`tasks.preflight`) checks everything the run needs
and fails it listing every problem. A local embedding model is deployed for the dataset build, the teacher and
a local judge for the evaluations, each left again when its phase is done (:mod:`tasks.serving`).

The run ends in a Completed state whose message is the decision in one line (what
``prefect deployment run ... --watch`` prints last: "Finished in state Completed('...')"), with the
:class:`FlywheelOutcome` as its result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, cast

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.concurrency.asyncio import concurrency
from prefect.events import emit_event
from prefect.flows import Flow
from prefect.runtime import flow_run as current_run
from prefect.states import Completed
from pydantic import BaseModel

from agent_flywheel.config import FlywheelConfig, NIMConfig, load_config
from agent_flywheel.evaluation.gate import GateDecision, decide_promotion
from agent_flywheel.evaluation.metrics import ALL_METRICS
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.names import registered_model_name
from agent_flywheel.nemo.payloads import DEFAULT_NIM_TAG
from agent_flywheel.tracking import gate_verdicts
from blocks.log_store import LogStore
from blocks.mlflow_tracking import MlflowTracking
from blocks.nemo_platform import NemoPlatform
from blocks.resolve import load_block
from tasks.datasets import UploadedDatasets, build_datasets_task, upload_datasets
from tasks.extract import ExtractedLogs, commit_watermark, extract_logs
from tasks.links import flow_run_ui_url
from tasks.nemo_jobs import (
    EvalOutcome,
    RunContext,
    customize,
    deploy_nim,
    evaluate,
    teardown_deployment,
    was_on_nemo,
)
from tasks.ownership import claim_run_dir, run_dir
from tasks.preflight import preflight
from tasks.reaping import cleanup_run, reap_orphans
from tasks.serving import RunModels, release_models, serve_models
from tasks.tracking import (
    current_champion,
    end_parent_run,
    log_datasets,
    log_eval_run,
    metric_intervals,
    record_decision,
    run_tags,
    start_parent_run,
    tag_verdicts,
)
from tasks.workload_lock import hold_workload

DEFAULT_CONFIG = "configs/flywheel.yaml"
#: Column names of the ``flywheel-scores`` artifact (short, so the table fits the page).
SHORT_METRIC_NAMES = {
    "function_name_accuracy": "fn name",
    "function_name_and_args_accuracy": "fn name+args",
    "tool_calling_correctness": "tool calls",
    "similarity": "similarity",
}


class FlywheelRunError(RuntimeError):
    """The run could not reach a decision; the message lists each failed step with what to do about it."""


class FlywheelOutcome(BaseModel):
    """What a flywheel run decided, and where to read more.

    ``outcome``: ``promoted``, ``no-candidate`` (the gate's words), ``unchanged`` (the promoted candidate
    already is the champion), ``no-new-data`` or ``workload-busy`` (nothing evaluated; no MLflow run).
    """

    outcome: str
    promoted: str | None = None
    served_model: str | None = None
    reason: str
    mlflow_run_id: str = ""
    mlflow_url: str = ""
    scores: list[dict[str, Any]] = []
    markdown: str = ""

    def summary(self, workload_id: str, client_id: str) -> str:
        """The decision in one line: the final state's message."""
        return f"flywheel {workload_id}/{client_id}: {self.outcome}: {self.reason}"


async def _stop_left_behind(run_id: str, platform: NemoPlatform) -> list[str]:
    async with platform.get_client() as nemo:
        return await cleanup_run(run_id, nemo)


def _cleanup_hook(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """On failure, crash or cancellation: stop every job this run started or took over that no other live run
    uses, and leave every deployment it used; NeMo lists them (their labels), no file does.

    The flow's client is closed by then, so the hook builds one of its own from the run's ``nemo_block``,
    and only when the run created or joined anything on NeMo.
    """
    run_id = str(flow_run.id)
    if not was_on_nemo(run_id):
        return
    try:
        platform = load_block(NemoPlatform, str((flow_run.parameters or {}).get("nemo_block", "local")))
    except Exception as exc:
        print(f"flywheel cleanup ({state.name}): could not load the NeMo block ({exc}); the reaper stops what is left")
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the hook may run inside the flow's event loop
        done = pool.submit(asyncio.run, _stop_left_behind(run_id, platform)).result()
    for line in done:
        print(f"flywheel cleanup ({state.name}): {line}")


async def _guarded(mode: str, model: str, work: Any) -> EvalOutcome:
    """Run one eval mode; a failure becomes an outcome with the error, so other modes and candidates go on."""
    try:
        return await work
    except Exception as exc:
        get_run_logger().error("%s of %s failed: %s", mode, model, exc)
        return EvalOutcome(model=model, eval_mode=mode, error=str(exc))


async def _customize_then_evaluate(
    nim: NIMConfig, ctx: RunContext, uploaded: UploadedDatasets, nemo: NemoClient
) -> EvalOutcome:
    tuned = await customize(nim, uploaded.train, ctx, nemo)
    outcome = await evaluate(tuned.output_model, "customized-eval", uploaded.base, ctx, nemo)
    return outcome.model_copy(update={"model": nim.model_name, "customization": tuned})


@flow(name="flywheel-candidate", log_prints=True)
async def evaluate_candidate(
    nim: NIMConfig, ctx: RunContext, uploaded: UploadedDatasets, platform: NemoPlatform
) -> list[EvalOutcome]:
    """One candidate NIM: deploy, then base-eval, icl-eval and customize → customized-eval at once, then teardown.

    It gets the platform block, not the parent's client: a subflow's parameters are recorded by Prefect
    (the block's secrets masked), and a client is no value to record.
    """
    async with platform.get_client(ctx.cfg) as nemo, concurrency("gpu", occupy=nim.gpus or 1, strict=False):
        try:
            deployment = await deploy_nim(nim, ctx, nemo)
        except Exception as exc:
            get_run_logger().error("deploying %s failed: %s", nim.model_name, exc)
            return [EvalOutcome(model=nim.model_name, eval_mode="base-eval", error=f"deployment failed: {exc}")]
        try:
            base = evaluate(nim.model_name, "base-eval", uploaded.base, ctx, nemo)
            work = [_guarded("base-eval", nim.model_name, base)]
            icl_dataset = uploaded.icl.get(nim.model_name)
            if icl_dataset:
                icl = evaluate(nim.model_name, "icl-eval", icl_dataset, ctx, nemo)
                work.append(_guarded("icl-eval", nim.model_name, icl))
            if nim.customization_enabled:
                tuned = _customize_then_evaluate(nim, ctx, uploaded, nemo)
                work.append(_guarded("customized-eval", nim.model_name, tuned))
            return list(await asyncio.gather(*work))
        finally:
            await teardown_deployment(deployment, ctx, nemo)


def _scores_artifact(
    outcomes: list[EvalOutcome], confidence: float, verdicts: dict[tuple[str, str], str]
) -> list[dict[str, Any]]:
    """The ``flywheel-scores`` table: each metric as ``mean [low, high]`` (3 decimals), short column names."""
    rows = []
    for outcome in outcomes:
        intervals = metric_intervals(outcome, confidence)
        row: dict[str, Any] = {"model": outcome.model, "mode": outcome.eval_mode, "n": len(outcome.samples)}
        for metric in ALL_METRICS:
            if metric in intervals:
                i = intervals[metric]
                row[SHORT_METRIC_NAMES[metric]] = f"{outcome.metrics[metric]:.3f} [{i.low:.3f}, {i.high:.3f}]"
            elif metric in outcome.metrics:
                row[SHORT_METRIC_NAMES[metric]] = f"{outcome.metrics[metric]:.3f}"
        row["verdict"] = "failed" if outcome.error else verdicts.get((outcome.model, outcome.eval_mode), "")
        if outcome.error:
            row["error"] = outcome.error if len(outcome.error) <= 120 else outcome.error[:117] + "..."
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{column: row.get(column, "") for column in columns} for row in rows]


def _scores_description(workload_id: str, client_id: str, confidence: float) -> str:
    names = ", ".join(f"{short} = {metric}" for metric, short in SHORT_METRIC_NAMES.items())
    return (
        f"Scores by candidate and eval mode for {workload_id}/{client_id}: mean [{confidence:.0%} bootstrap "
        f"interval] over the n samples ({names})"
    )


def _scores_table(outcomes: list[EvalOutcome]) -> list[dict[str, Any]]:
    rows = []
    for outcome in outcomes:
        row: dict[str, Any] = {"model": outcome.model, "eval_mode": outcome.eval_mode, "samples": len(outcome.samples)}
        for metric in ALL_METRICS:
            if metric in outcome.metrics:
                row[metric] = round(outcome.metrics[metric], 4)
        row["error"] = outcome.error or ""
        rows.append(row)
    return rows


def _failure_report(workload_id: str, client_id: str, failed: list[EvalOutcome], total: int, mlflow_url: str) -> str:
    lines = [
        f"flywheel {workload_id}/{client_id}: {len(failed)} of {total} evaluations did not finish, "
        "so no promotion decision was made (it would compare an incomplete set of candidates):"
    ]
    lines += [f"- {o.eval_mode} of {o.model}: {o.error}" for o in failed]
    finished = total - len(failed)
    if finished:
        lines.append(
            f"The {finished} finished evaluations are recorded in MLflow ({mlflow_url}) and cached: "
            "running the flywheel again reuses them and redoes only the failed steps."
        )
    else:
        lines.append(f"The run is recorded in MLflow ({mlflow_url}).")
    return "\n".join(lines)


def _decision_markdown(decision: GateDecision, mlflow_url: str, served_model: str | None) -> str:
    served = f"\n\nServed as `{served_model}`." if served_model and decision.promoted else ""
    return decision.to_markdown() + served + f"\n\n[MLflow run]({mlflow_url})\n"


def _image(nim: NIMConfig) -> str:
    return f"{nim.registry_base.rstrip('/')}/{nim.model_name}:{nim.tag or DEFAULT_NIM_TAG}"


def _finished(outcome: FlywheelOutcome, workload_id: str, client_id: str) -> FlywheelOutcome:
    """The run's final state: Completed with the decision line as its message and ``outcome`` as its result.

    Prefect makes a state a flow returns its final state and hands a caller of the flow its data, so callers
    still get the :class:`FlywheelOutcome`.
    """
    summary = outcome.summary(workload_id, client_id)
    get_run_logger().info("flywheel decision: %s", summary)
    return cast(FlywheelOutcome, Completed(message=summary[:2000], data=outcome))


@flow(
    name="flywheel",
    log_prints=True,
    on_failure=[_cleanup_hook],
    on_cancellation=[_cleanup_hook],
    on_crashed=[_cleanup_hook],
)
async def flywheel(
    workload_id: str,
    client_id: str,
    config_path: str = DEFAULT_CONFIG,
    nemo_block: str = "local",
    log_store_block: str = "local",
    mlflow_block: str = "local",
    full_rebuild: bool = False,
    config: FlywheelConfig | None = None,
    wait_for_workload_minutes: float = 0.0,
) -> FlywheelOutcome:
    """Turn one workload's traffic into candidate models, evaluate them against the teacher, and decide.

    ``config`` (a form in the Prefect UI) wins over ``config_path``; the run records the whole config in
    MLflow either way. When another run holds the workload, this one waits up to
    ``wait_for_workload_minutes`` for it (0: skipped at once, outcome ``workload-busy``).
    """
    logger = get_run_logger()
    cfg = config or load_config(config_path, FlywheelConfig)
    if full_rebuild:
        cfg = cfg.model_copy(update={"extraction": cfg.extraction.model_copy(update={"full_rebuild": True})})
    flow_run_id = str(current_run.id or "local")
    async with hold_workload(workload_id, flow_run_id, wait_s=60.0 * wait_for_workload_minutes) as claim:
        if not claim.acquired:
            reason = (
                f"skipped: workload {workload_id} is held by {claim.holder}; its result stands, and the next "
                "trigger or schedule asks again (set wait_for_workload_minutes to wait instead)"
            )
            logger.warning("flywheel %s/%s %s", workload_id, client_id, reason)
            return _finished(FlywheelOutcome(outcome="workload-busy", reason=reason), workload_id, client_id)
        outcome = await _run(
            workload_id, client_id, cfg, nemo_block, log_store_block, mlflow_block, flow_run_id, config_path
        )
    return _finished(outcome, workload_id, client_id)


def _no_new_data(workload_id: str, client_id: str, extracted: ExtractedLogs) -> FlywheelOutcome:
    quarantined = sum(extracted.quarantined.values())
    reason = (
        f"no new records since the last successful run ({extracted.scanned} scanned, {extracted.duplicates} "
        f"duplicates, {extracted.already_read} already read, {quarantined} quarantined): nothing to learn from, "
        "so no dataset, job, model version or event; the watermark is unchanged"
    )
    return FlywheelOutcome(outcome="no-new-data", reason=reason, markdown=f"## Flywheel: no new data\n\n{reason}\n")


async def _run(
    workload_id: str,
    client_id: str,
    cfg: FlywheelConfig,
    nemo_block: str,
    log_store_block: str,
    mlflow_block: str,
    flow_run_id: str,
    config_path: str,
) -> FlywheelOutcome:
    """The flywheel proper, with the workload held; ``config_path`` is named in messages about the config."""
    logger = get_run_logger()
    platform = load_block(NemoPlatform, nemo_block)
    store = load_block(LogStore, log_store_block)
    tracking = load_block(MlflowTracking, mlflow_block)
    mlflow = tracking.get_tracker()
    directory = run_dir(flow_run_id)
    claim_run_dir(directory)
    extracted = extract_logs(workload_id, client_id, cfg, store, directory, config_path)
    if extracted.new_records == 0:
        return _no_new_data(workload_id, client_id, extracted)
    await preflight(cfg, platform, store)  # before any dataset, job or deployment; lists every problem
    tags = run_tags(workload_id, client_id, flow_run_id, platform.simulated)
    parent_run_id, mlflow_url = start_parent_run(
        mlflow, tracking.ui_url, cfg, tags, f"flywheel {current_run.name or flow_run_id}", flow_run_ui_url()
    )
    logger.info(
        "flywheel %s/%s: MLflow run %s%s",
        workload_id,
        client_id,
        mlflow_url,
        " (simulated)" if platform.simulated else "",
    )
    nemo = platform.get_client(cfg)
    serving = RunModels.of(cfg, flow_run_id)
    try:
        embedders = await serve_models(cfg, "datasets", serving, nemo)  # a local embedding NIM, for semantic ICL
        try:
            built = build_datasets_task(
                extracted.records,
                workload_id,
                client_id,
                cfg,
                platform.nim_url,
                directory,
                nemo.remote_key("embedding"),
                config_path,
            )
        finally:
            await release_models(embedders, serving, nemo)
        log_datasets(
            mlflow,
            parent_run_id,
            built.manifest_path,
            extracted.quarantine_file,
            {
                "extraction": extracted.model_dump(exclude={"watermark", "records"}),
                "datasets": built.counts,
                "removed": built.removed,
            },
        )
        uploaded = await upload_datasets(workload_id, built, cfg, nemo)
        ctx = RunContext(
            workload_id=workload_id,
            client_id=client_id,
            flow_run_id=flow_run_id,
            cfg=cfg,
            tool_calling=built.tool_calling,
            namespace=cfg.namespace,
        )
        served = await serve_models(cfg, "evaluation", serving, nemo, tool_calling=built.tool_calling)
        try:  # the teacher and a local judge are served until every evaluation is done
            teacher_eval = evaluate(cfg.teacher.model_name, "base-eval", uploaded.base, ctx, nemo)
            teacher, *per_candidate = await asyncio.gather(
                _guarded("base-eval", cfg.teacher.model_name, teacher_eval),
                *(evaluate_candidate(nim, ctx, uploaded, platform) for nim in cfg.nims),
            )
        finally:
            await release_models(served, serving, nemo)
        outcomes = [o for group in per_candidate for o in group]

        gate_cfg = cfg.promotion_gate
        child_runs = {}
        for outcome, role in [(teacher, "teacher"), *((o, "candidate") for o in outcomes)]:
            child_runs[f"{outcome.model}|{outcome.eval_mode}"] = log_eval_run(
                mlflow, parent_run_id, outcome, role, tags, gate_cfg.confidence
            )
        failed = [o for o in (teacher, *outcomes) if o.error is not None]
        if failed:
            await acreate_table_artifact(
                table=_scores_artifact([teacher, *outcomes], gate_cfg.confidence, {}),
                key="flywheel-scores",
                description=_scores_description(workload_id, client_id, gate_cfg.confidence),
            )
            raise FlywheelRunError(_failure_report(workload_id, client_id, failed, 1 + len(outcomes), mlflow_url))

        decision = decide_promotion(  # every evaluation finished here (a failed one raised above)
            cfg.teacher,
            teacher.samples,
            cfg.nims,
            {(o.model, o.eval_mode): o.samples for o in outcomes},
            gate_cfg,
            seed=cfg.data_split_config.random_seed or 0,
        )
        tag_verdicts(mlflow, child_runs, decision)
        await acreate_table_artifact(
            table=_scores_artifact([teacher, *outcomes], gate_cfg.confidence, gate_verdicts(decision)),
            key="flywheel-scores",
            description=_scores_description(workload_id, client_id, gate_cfg.confidence),
        )
        served_model = None
        champion_card = None
        if decision.promoted is not None:
            match = next(
                (
                    o
                    for o in outcomes
                    if (o.model, o.eval_mode) == (decision.promoted.model_name, decision.promoted.eval_mode)
                ),
                None,
            )
            served_model = (
                match.customization.output_model if match and match.customization else decision.promoted.model_name
            )
            nim = next(n for n in cfg.nims if n.model_name == decision.promoted.model_name)
            champion_card = {"served_model": served_model, "image": _image(nim)}
        registered = gate_cfg.registered_model_name or registered_model_name(workload_id)
        unchanged = _unchanged_champion(current_champion(mlflow, registered), champion_card)
        version = record_decision(
            mlflow, parent_run_id, decision, child_runs, registered, champion_card, unchanged_version=unchanged
        )

        await acreate_markdown_artifact(
            markdown=_decision_markdown(decision, mlflow_url, served_model),
            key="flywheel-decision",
            description=f"Promotion decision for {workload_id}",
        )
        outcome_word = "unchanged" if unchanged is not None else decision.outcome
        summary = decision.reasons[-1]
        if unchanged is not None:
            summary = (
                f"{summary}; it already is the champion (version {unchanged} of {registered}, serving "
                f"{served_model}): no new version registered, no promotion event"
            )
        payload = {
            **decision.to_dict(),
            "outcome": outcome_word,
            "workload_id": workload_id,
            "client_id": client_id,
            "served_model": served_model,
            "registered_model": registered if version or unchanged else None,
            "model_version": version or unchanged,
            "mlflow_run_id": parent_run_id,
            "mlflow_url": mlflow_url,
        }
        emit_event(
            event="flywheel.candidate.promoted" if version else "flywheel.candidate.not-promoted",
            resource={"prefect.resource.id": f"flywheel.workload.{workload_id}", "prefect.resource.name": workload_id},
            payload={k: v for k, v in payload.items() if k != "rows"},
        )
        commit_watermark(workload_id, client_id, extracted.watermark)
        await reap_orphans(cfg.namespace, nemo)
        end_parent_run(mlflow, parent_run_id, "FINISHED")
        return FlywheelOutcome(
            outcome=outcome_word,
            promoted=None if decision.promoted is None else decision.promoted.name,
            served_model=served_model,
            reason=summary,
            mlflow_run_id=parent_run_id,
            mlflow_url=mlflow_url,
            scores=_scores_table([teacher, *outcomes]),
            markdown=decision.to_markdown(),
        )
    except BaseException:
        end_parent_run(mlflow, parent_run_id, "FAILED")
        raise
    finally:
        await nemo.aclose()


def _unchanged_champion(champion: tuple[int, dict[str, str]] | None, candidate: dict[str, str] | None) -> int | None:
    """The champion's version when the promoted candidate is it already: the same served model (a LoRA
    adapter's id names its fine-tune job, so new training data makes a new one) from the same NIM image."""
    if champion is None or candidate is None:
        return None
    version, tags = champion
    if tags.get("served_model") != candidate["served_model"]:
        return None
    if "image" in tags and tags["image"] != candidate["image"]:
        return None
    return version
