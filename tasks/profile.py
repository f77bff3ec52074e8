"""The profile task: the example inputs one at a time through the agent, their spans, the profile report.

Spans come from the run's sources (``ScalingConfig.spans``): an OTLP/HTTP receiver started for the task on the
configured address (the agent exports to it with ``OTEL_EXPORTER_OTLP_ENDPOINT``) and/or a traces file written by
``flywheel otlp serve`` or a collector. Each request carries its own ``traceparent``; its spans are found by
that trace id. When the ``AgentTarget`` says the agent offers the demo agent's ``/admin/otlp``, its exporter is
pointed at the receiver for the task and pointed back afterwards, also when the task fails.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import ProfileConfig, SpansConfig
from agent_flywheel.scaling.inputs import load_inputs
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.otlp.sources import collecting_spans
from agent_flywheel.scaling.outcomes import ProfileOutcome
from agent_flywheel.scaling.profile_run import drive_profile, profile_report, write_profile
from blocks.agent_target import AgentTarget
from tasks.retries import retry_if_transient


@task(
    name="profile-agent",
    retries=1,
    retry_delay_seconds=[10],
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def run_profile(
    agent: AgentTarget, cfg: ProfileConfig, spans: SpansConfig, out_dir: str, request_timeout_s: float = 60.0
) -> ProfileOutcome:
    """Send the example inputs one at a time, collect their spans, and profile them (stats, critical path, Gantt)."""
    logger = get_run_logger()
    inputs, problems = load_inputs(cfg)
    for p in problems:
        logger.warning("profile input skipped: %s", p)
    template = agent.request_template()

    def progress(i: int, failed: int) -> None:
        if (i + 1) % 5 == 0 or i + 1 == cfg.num_requests:
            logger.info("profile: %d/%d requests sent, %d failed", i + 1, cfg.num_requests, failed)

    with (
        agent.get_client(timeout_s=request_timeout_s) as http,
        collecting_spans(spans, http if agent.uses_admin_otlp else None) as sources,
    ):
        where = sources.describe
        logger.info("profile of %s: spans from %s", agent.url, where)
        run = drive_profile(http, template, inputs, cfg.num_requests, sources, spans.wait_s, progress)
    if run.failed == cfg.num_requests:
        raise RuntimeError(f"every profile request failed; first: {run.failures[0]}")
    logger.info(
        "profile: %d requests (%d failed), %d traces with spans from %s, %d answered without spans",
        run.requests,
        run.failed,
        len(run.traces),
        run.source,
        run.without_spans,
    )
    if not run.traces:
        text = (
            f"# Profile: no traces\n\n{run.requests} requests were sent ({run.failed} failed) but no spans "
            f"arrived at {where}: point the agent's OTLP/HTTP exporter there "
            "(`OTEL_EXPORTER_OTLP_ENDPOINT`), or set `spans.traces_file` to where its spans are written.\n"
        )
        return ProfileOutcome(
            requests=run.requests,
            failed=run.failed,
            traces=0,
            source="none",
            problems=[*problems, *run.failures[:20], *run.problems],
            markdown=text,
        )
    report = profile_report(run, problems)
    files = write_profile(run, report, Path(out_dir))
    summary = {
        "workflow": report.workflow,
        "llm": report.llm,
        "llm_calls_per_workflow": report.tokens.get("llm_calls_per_workflow"),
        "bottleneck": report.bottleneck,
        "repaired_spans": report.repaired_spans,
        "without_spans": run.without_spans,
    }
    return ProfileOutcome(
        requests=run.requests,
        failed=run.failed,
        traces=len(run.traces),
        source=run.source,
        problems=report.problems,
        summary=json_safe(summary),
        markdown=report.to_markdown(),
        report_json=str(files.report_json),
        report_md=str(files.report_md),
        gantt_png=str(files.gantt_png),
        traces_file=str(files.traces_jsonl),
    )
