"""The profile task: the example inputs one at a time through the agent, their spans, the profile report.

Spans come from an OTLP/HTTP receiver started for the task: the agent's export is pointed at it through
``/admin/otlp`` and restored afterwards, also when the task fails; traces that do not arrive are looked up in
the agent's spans file when this machine can read it (``AgentTarget.spans_file`` or what ``/admin/otlp`` names).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from agent_flywheel.config import ProfileConfig
from agent_flywheel.scaling.agent_admin import OTLP_PATH, point_otlp
from agent_flywheel.scaling.inputs import load_inputs, request_body
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.otlp.receiver import OtlpReceiver
from agent_flywheel.scaling.outcomes import ProfileOutcome
from agent_flywheel.scaling.profiling.collect import doc_trace_ids, read_new_lines, traces_of
from agent_flywheel.scaling.profiling.gantt import gantt_png
from agent_flywheel.scaling.profiling.report import analyze, representative_trace
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
    agent: AgentTarget, cfg: ProfileConfig, out_dir: str, span_wait_s: float = 10.0, request_timeout_s: float = 60.0
) -> ProfileOutcome:
    """Send the example inputs one at a time, collect their spans, and profile them (stats, critical path, Gantt)."""
    logger = get_run_logger()
    inputs, problems = load_inputs(cfg)
    for p in problems:
        logger.warning("profile input skipped: %s", p)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trace_ids: list[str] = []
    failures: list[str] = []
    with OtlpReceiver() as receiver, agent.get_client(timeout_s=request_timeout_s) as http:
        pointing = point_otlp(http, receiver.endpoint)
        spans_file = Path(agent.spans_file) if agent.spans_file else pointing.spans_file
        offset = spans_file.stat().st_size if spans_file is not None and spans_file.exists() else 0
        if not pointing.done:
            logger.warning("the agent has no %s endpoint; reading spans from %s", OTLP_PATH, spans_file or "nowhere")
        try:
            for i in range(cfg.num_requests):
                body = request_body(inputs, i, "profile-user")
                try:
                    answer = http.post(agent.chat_path, json=body)
                    data = answer.json() if answer.content else {}
                except (httpx.HTTPError, ValueError) as exc:
                    failures.append(f"request {i}: {type(exc).__name__}: {exc}")
                    continue
                if isinstance(data, dict) and data.get("trace_id"):
                    trace_ids.append(str(data["trace_id"]).lower())
                if answer.status_code >= 400:
                    failures.append(f"request {i}: HTTP {answer.status_code}")
                if (i + 1) % 5 == 0 or i + 1 == cfg.num_requests:
                    logger.info("profile: %d/%d requests sent, %d failed", i + 1, cfg.num_requests, len(failures))
            missing = receiver.store.wait_for(trace_ids, span_wait_s) if pointing.done and trace_ids else set(trace_ids)
        finally:
            if pointing.done:
                try:
                    http.post(OTLP_PATH, json={"endpoint": pointing.previous})
                except httpx.HTTPError as exc:
                    logger.warning("could not restore the agent's OTLP endpoint %r: %s", pointing.previous, exc)
    if len(failures) == cfg.num_requests:
        raise RuntimeError(f"every profile request failed; first: {failures[0]}")
    wanted = set(trace_ids) or None
    docs = receiver.store.documents() if pointing.done else []
    source = "otlp-receiver" if docs else "none"
    if missing or not docs:
        # Traces that did not reach the receiver: from the agent's spans file, only those still missing.
        still = set(missing) if docs else wanted
        from_file = [d for d in read_new_lines(spans_file, offset) if still is None or doc_trace_ids(d) & still]
        if from_file:
            docs = [*docs, *from_file]
            source = "spans-file" if source == "none" else "otlp-receiver+spans-file"
    if wanted is not None:
        docs = [d for d in docs if doc_trace_ids(d) & wanted]
    span_problems: list[str] = []
    traces = traces_of(docs, wanted, span_problems)
    logger.info(
        "profile: %d requests (%d failed), %d traces with spans from %s",
        cfg.num_requests,
        len(failures),
        len(traces),
        source,
    )
    if not traces:
        text = (
            f"# Profile: no traces\n\n{cfg.num_requests} requests were sent ({len(failures)} failed) but no spans "
            "arrived: point the agent's OTLP/HTTP exporter at a collector, or set the AgentTarget block's "
            "`spans_file`.\n"
        )
        return ProfileOutcome(
            requests=cfg.num_requests,
            failed=len(failures),
            traces=0,
            source="none",
            problems=[*problems, *failures[:20]],
            markdown=text,
        )
    report = analyze(traces, [*problems, *failures[:20], *span_problems], "otlp")
    traces_file = out / "traces.jsonl"
    traces_file.write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in docs), encoding="utf-8")
    report_json = out / "profile.json"
    report_json.write_text(json.dumps(json_safe(report.to_dict()), indent=2), encoding="utf-8")
    report_md = out / "profile.md"
    report_md.write_text(report.to_markdown(), encoding="utf-8")
    gantt = gantt_png(representative_trace(traces), out / "gantt.png")
    summary = {
        "workflow": report.workflow,
        "llm": report.llm,
        "llm_calls_per_workflow": report.tokens.get("llm_calls_per_workflow"),
        "bottleneck": report.bottleneck,
    }
    return ProfileOutcome(
        requests=cfg.num_requests,
        failed=len(failures),
        traces=len(traces),
        source=source,
        problems=report.problems,
        summary=json_safe(summary),
        markdown=report.to_markdown(),
        report_json=str(report_json),
        report_md=str(report_md),
        gantt_png=str(gantt),
        traces_file=str(traces_file),
    )
