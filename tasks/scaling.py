"""Tasks of the scaling lifecycle: profile the agent, sweep it with load, size it, check a staged rollout.

Each task is a thin shell over the functional core (:mod:`agent_flywheel.profiling`, :mod:`~.loadgen`,
:mod:`~.sizing`, :mod:`~.rollout`): it talks to the agent named by an ``AgentTarget`` block, writes its
files under the run's directory, logs progress with counts, and returns a small pydantic outcome that a
flow can pass on, show as an artifact and record in MLflow (``sizing/<app>``, ``rollout/<app>``).

Nothing here changes the agent for longer than a task runs: routing and OTLP export are restored in
``finally`` blocks, also when the task fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import math
import time
from collections import defaultdict
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from agent_flywheel.config import LoadSweepConfig, ProfileConfig, RolloutConfig, RolloutStage, SizingTargets
from agent_flywheel.loadgen import DEFAULT_CHAT_MESSAGES, LevelRun, chat_sender, make_client, run_sweep
from agent_flywheel.otlp_receiver import OtlpReceiver
from agent_flywheel.profiling import Trace, analyze, gantt_png, representative_trace, spans_from_otlp
from agent_flywheel.rollout import Observation, RolloutPolicy, analyze_rollout, analyze_stage
from agent_flywheel.sizing import SweepData, plot_all, read_sweep_csv, size
from agent_flywheel.tracking import CHAMPION_ALIAS
from blocks.agent_target import AgentTarget
from blocks.resolve import load_block
from tasks.clients import tracker

ROUTING_PATH = "/admin/routing"
OTLP_PATH = "/admin/otlp"
ROLLOUT_USERS = 1000  # simulated users of a rollout check; each keeps its arm across stages (routing by user id)
T = TypeVar("T")
DECISION_CODES = {"promote": 1.0, "hold": 0.0, "rollback": -1.0}


# --------------------------------------------------------------------------------------------------
# Small helpers (pure)
# --------------------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """Non-finite floats become None and numpy scalars plain numbers, recursively: MLflow, Prefect and JSON agree."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def frame_rows(frame: pd.DataFrame, digits: int = 4) -> list[dict[str, Any]]:
    """A DataFrame as JSON-safe rows, floats rounded (for Prefect table artifacts and flow results)."""
    rows = []
    for record in frame.to_dict(orient="records"):
        row = {}
        for key, value in json_safe(record).items():
            row[key] = round(value, digits) if isinstance(value, float) else value
        rows.append(row)
    return rows


def artifact_url(ui_url: str | None, run_id: str, path: str) -> str | None:
    """A direct link to one file of an MLflow run, served by the MLflow UI (None without a UI).

    Why: Prefect artifacts can show images only by URL; the MLflow server serves run files at
    ``/get-artifact``, so the Gantt and sizing PNGs are shown from there.
    """
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/get-artifact?path={quote(path)}&run_uuid={run_id}"


def load_inputs(cfg: ProfileConfig) -> tuple[list[dict[str, Any]], list[str]]:
    """The example inputs: request bodies from ``inputs_file`` (JSONL) or the built-in demo messages.

    A line may be a JSON string (the message) or an object (the request body, e.g. ``{"message": ...}``).
    Bad lines are skipped and returned as problems with their line number; no usable line is an error.
    """
    if not cfg.inputs_file:
        return [{"message": m} for m in DEFAULT_CHAT_MESSAGES], []
    path = Path(cfg.inputs_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the profile inputs: {exc.strerror or exc}") from None
    inputs: list[dict[str, Any]] = []
    problems: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: not JSON ({exc.msg}); skipped")
            continue
        if isinstance(item, str) and item.strip():
            inputs.append({"message": item})
        elif isinstance(item, dict) and item:
            inputs.append(item)
        else:
            problems.append(f"{path}:{lineno}: expected a message string or a request object; skipped")
    if not inputs:
        raise ValueError(f"{path}: no usable input (of {len(lines)} lines; {len(problems)} bad)")
    return inputs, problems


def request_body(inputs: Sequence[Mapping[str, Any]], i: int, user_prefix: str) -> dict[str, Any]:
    """Body of request ``i``: the inputs in turn; a chat input without a user gets ``<prefix>-<i>`` (one user each)."""
    body = dict(inputs[i % len(inputs)])
    if "message" in body and "user_id" not in body:
        body["user_id"] = f"{user_prefix}-{i}"
    return body


def observation_of(
    t_s: float, status: int | None, body: Any, latency_s: float, canary_model: str
) -> tuple[float, Literal["baseline", "canary"], bool, float, None]:
    """One rollout observation ``(t_s, variant, ok, latency_s, quality)`` from the agent's answer.

    The variant is the answer's ``route`` (``baseline``/``canary``), else its ``model`` compared with the
    canary. A failure that names no model (a timeout, a connection error) cannot be attributed and counts
    against the canary: a rollout check must not look better because its failures are anonymous. Quality
    is not measured by the traffic driver (None).
    """
    data = body if isinstance(body, Mapping) else {}
    ok = status is not None and 200 <= status < 300
    route = data.get("route")
    variant: Literal["baseline", "canary"]
    if route in ("baseline", "canary"):
        variant = "canary" if route == "canary" else "baseline"
    elif isinstance(data.get("model"), str):
        variant = "canary" if data["model"] == canary_model else "baseline"
    else:
        variant = "canary"
    return (t_s, variant, ok, latency_s, None)


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop.

    Why: these tasks are sync (the core's load generator is async); a sync task called from an async
    flow would otherwise fail in ``asyncio.run``.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def sweep_timeout_s(cfg: LoadSweepConfig, slack_s: float = 120.0) -> float:
    """An upper bound on a sweep's duration: every round of every level timing out, plus slack."""
    rounds = 0
    per_level = cfg.requests_per_level + cfg.warmup_requests
    for c in cfg.concurrencies:
        rounds += math.ceil(per_level / c) + 1
    rounds += len(cfg.arrival_rates) * (per_level + 1)
    return cfg.num_passes * rounds * cfg.request_timeout_s + slack_s


def sweep_data(requests_csv: str | Path, llm_calls_csv: str | Path | None = None) -> SweepData:
    """The sweep for sizing from the per-request CSV, with every LLM call's latency when the calls CSV exists.

    Why: the per-request table keeps only the slowest call per request; an LLM-call p95 target should
    see every call, as :meth:`SweepData.from_sweep` does in memory.
    """
    data = read_sweep_csv(requests_csv)
    if llm_calls_csv is None or not Path(llm_calls_csv).exists():
        return data
    calls = pd.read_csv(llm_calls_csv)
    if calls.empty or "concurrency" not in calls.columns:
        return data
    if "mode" in calls.columns:
        calls = calls[calls["mode"].astype(str) == "closed"]
    for level in data.levels:
        sel = calls[pd.to_numeric(calls["concurrency"], errors="coerce") == level.concurrency]
        if len(sel):
            level.llm = [g["latency_s"].to_numpy(dtype=float) for _, g in sel.groupby("pass")]
    return data


# --------------------------------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------------------------------


class AgentInfo(BaseModel):
    """What may be shown about the agent under test (never its API key)."""

    app: str
    url: str
    chat_path: str
    simulated: bool


def _target(agent_block: str) -> AgentTarget:
    return load_block(AgentTarget, agent_block)


def _headers(target: AgentTarget) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.api_key.get_secret_value()}"} if target.api_key else {}


def agent_info(agent_block: str) -> AgentInfo:
    """The agent block's public fields (for tags and reports)."""
    target = _target(agent_block)
    return AgentInfo(app=target.app, url=target.url, chat_path=target.chat_path, simulated=target.simulated)


def agent_routing_state(agent_block: str) -> dict[str, Any] | None:
    """The agent's routing (``GET /admin/routing``: teacher, canary, weight), or None when it has no such endpoint."""
    target = _target(agent_block)
    try:
        answer = httpx.get(f"{target.url.rstrip('/')}{ROUTING_PATH}", headers=_headers(target), timeout=5.0)
        return dict(answer.json()) if answer.status_code == 200 else None
    except (httpx.HTTPError, ValueError, TypeError):
        return None


def profile_timeout_s(cfg: ProfileConfig, request_timeout_s: float = 60.0, slack_s: float = 60.0) -> float:
    """An upper bound on a profile's duration: every request timing out, plus the wait for spans and slack."""
    return cfg.num_requests * request_timeout_s + slack_s


@task(name="agent-routing", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def set_agent_routing(agent_block: str, canary_model: str | None, weight: float) -> dict[str, Any]:
    """Send ``weight`` of the agent's users to ``canary_model``; returns the routing before, to restore it.

    Why: the scaling lifecycle measures a candidate through the real agent, so the agent's own router picks
    the model (``POST /admin/routing``, the demo agent's staged-rollout switch). An agent without that
    endpoint cannot be pointed at a candidate; that is an error, not a silent measurement of the wrong model.
    """
    target = _target(agent_block)
    with httpx.Client(base_url=target.url, headers=_headers(target), timeout=10.0) as http:
        before = http.get(ROUTING_PATH)
        if before.status_code == 404:
            raise RuntimeError(
                f"the agent at {target.url} has no {ROUTING_PATH} endpoint, so it cannot be routed to "
                f"{canary_model!r}; deploy the candidate behind the agent yourself and run without a candidate"
            )
        before.raise_for_status()
        answer = http.post(ROUTING_PATH, json={"canary_model": canary_model, "canary_weight": weight})
        answer.raise_for_status()
    get_run_logger().info("agent routing: %s of users on %s", f"{weight:.0%}", canary_model)
    return dict(before.json())


@task(name="agent-routing-restore", retries=3, retry_delay_seconds=[1, 5, 15], cache_policy=NO_CACHE)
def restore_agent_routing(agent_block: str, previous: Mapping[str, Any]) -> None:
    """Put the agent's routing back as it was before this run."""
    target = _target(agent_block)
    body = {
        "canary_model": previous.get("canary_model"),
        "canary_weight": float(previous.get("canary_weight") or 0.0) if previous.get("canary_model") else 0.0,
    }
    with httpx.Client(base_url=target.url, headers=_headers(target), timeout=10.0) as http:
        http.post(ROUTING_PATH, json=body).raise_for_status()
    get_run_logger().info("agent routing restored: %s", body)


@contextmanager
def routed_to(agent_block: str, model: str | None, weight: float = 1.0) -> Iterator[dict[str, Any] | None]:
    """Within the block, ``weight`` of the agent's users get ``model`` (nothing changes when ``model`` is None)."""
    if not model:
        yield None
        return
    previous = set_agent_routing(agent_block, model, weight)
    try:
        yield previous
    finally:
        restore_agent_routing(agent_block, previous)


# --------------------------------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------------------------------


class ProfileOutcome(BaseModel):
    """A profile run: counts, where the spans came from, the report's headline numbers and its files."""

    requests: int
    failed: int
    traces: int
    source: str  # otlp-receiver | spans-file | none
    problems: list[str] = []
    summary: dict[str, Any] = {}
    markdown: str
    report_json: str | None = None
    report_md: str | None = None
    gantt_png: str | None = None
    traces_file: str | None = None


def _point_otlp(http: httpx.Client, endpoint: str | None) -> tuple[bool, str | None, Path | None]:
    """Point the agent's OTLP export at ``endpoint``; returns (done, previous endpoint, the agent's spans file)."""
    try:
        current = http.get(OTLP_PATH)
        if current.status_code != 200:
            return False, None, None
        info = current.json()
        answer = http.post(OTLP_PATH, json={"endpoint": endpoint})
        answer.raise_for_status()
    except (httpx.HTTPError, ValueError):
        return False, None, None
    spans_file = info.get("spans_file")
    return True, info.get("endpoint"), Path(spans_file) if spans_file else None


def _read_new_lines(path: Path | None, offset: int) -> list[dict[str, Any]]:
    if path is None or not path.exists():
        return []
    docs: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle.read().splitlines():
            try:
                doc = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


def _traces_of(docs: Sequence[Mapping[str, Any]], wanted: set[str] | None, problems: list[str]) -> list[Trace]:
    by_trace: dict[str, list[Any]] = defaultdict(list)
    for i, doc in enumerate(docs):
        for span in spans_from_otlp(doc, problems, f"document {i}: "):
            if wanted is None or span.trace_id in wanted:
                by_trace[span.trace_id].append(span)
    return [Trace(tid, spans, problems) for tid, spans in by_trace.items()]


@task(name="profile-agent", retries=1, retry_delay_seconds=[10], cache_policy=NO_CACHE)
def run_profile(
    agent_block: str, cfg: ProfileConfig, out_dir: str, span_wait_s: float = 10.0, request_timeout_s: float = 60.0
) -> ProfileOutcome:
    """Send the example inputs one at a time, collect their spans, and profile them (stats, critical path, Gantt).

    Spans come from an OTLP/HTTP receiver started for this task (the agent's export is pointed at it through
    ``/admin/otlp`` and restored afterwards); traces that do not arrive are looked up in the agent's spans
    file when this machine can read it (``AgentTarget.spans_file`` or what ``/admin/otlp`` names).
    """
    logger = get_run_logger()
    target = _target(agent_block)
    inputs, problems = load_inputs(cfg)
    for p in problems:
        logger.warning("profile input skipped: %s", p)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trace_ids: list[str] = []
    failures: list[str] = []
    with (
        OtlpReceiver() as receiver,
        httpx.Client(base_url=target.url, headers=_headers(target), timeout=request_timeout_s) as http,
    ):
        pointed, previous, spans_file = _point_otlp(http, receiver.endpoint)
        if target.spans_file:
            spans_file = Path(target.spans_file)
        offset = spans_file.stat().st_size if spans_file is not None and spans_file.exists() else 0
        if not pointed:
            logger.warning("the agent has no %s endpoint; reading spans from %s", OTLP_PATH, spans_file or "nowhere")
        try:
            for i in range(cfg.num_requests):
                body = request_body(inputs, i, "profile-user")
                try:
                    answer = http.post(target.chat_path, json=body)
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
            missing = receiver.store.wait_for(trace_ids, span_wait_s) if pointed and trace_ids else set(trace_ids)
        finally:
            if pointed:
                try:
                    http.post(OTLP_PATH, json={"endpoint": previous})
                except httpx.HTTPError as exc:
                    logger.warning("could not restore the agent's OTLP endpoint %r: %s", previous, exc)
    if len(failures) == cfg.num_requests:
        raise RuntimeError(f"every profile request failed; first: {failures[0]}")
    wanted = set(trace_ids) or None
    docs = receiver.store.documents() if pointed else []
    source = "otlp-receiver" if docs else "none"
    if missing or not docs:
        # Traces that did not reach the receiver: from the agent's spans file, only those still missing.
        still = set(missing) if docs else wanted
        from_file = [d for d in _read_new_lines(spans_file, offset) if still is None or _doc_trace_ids(d) & still]
        if from_file:
            docs = [*docs, *from_file]
            source = "spans-file" if source == "none" else "otlp-receiver+spans-file"
    if wanted is not None:
        docs = [d for d in docs if _doc_trace_ids(d) & wanted]
    span_problems: list[str] = []
    traces = _traces_of(docs, wanted, span_problems)
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
            "arrived: point the agent's OTLP/HTTP JSON exporter at a collector, or set the AgentTarget block's "
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


def _doc_trace_ids(doc: Mapping[str, Any]) -> set[str]:
    return {s.trace_id for s in spans_from_otlp(doc, [], "")}


# --------------------------------------------------------------------------------------------------
# Load sweep
# --------------------------------------------------------------------------------------------------


class SweepOutcome(BaseModel):
    """A load sweep: its three tables on disk and the per-level rows."""

    requests_csv: str
    levels_csv: str
    llm_calls_csv: str
    levels: list[dict[str, Any]]
    requests: int
    errors: int
    warnings: list[str] = []
    seconds: float


def _progress(total: int) -> Any:
    logger = get_run_logger()
    done = itertools.count(1)

    def on_run(run: LevelRun) -> None:
        ok = [r.latency_s for r in run.records if r.result.ok]
        p95 = f"{float(np.percentile(ok, 95)):.3f} s" if ok else "—"
        label = f"concurrency {run.concurrency}" if run.mode == "closed" else f"rate {run.rate_rps:g}/s"
        logger.info(
            "load sweep: pass %d, %s: %d measured, %d failed, p95 %s (%d/%d level-passes)",
            run.pass_index + 1,
            label,
            len(run.records),
            len(run.records) - len(ok),
            p95,
            next(done),
            total,
        )

    return on_run


@task(name="load-sweep", cache_policy=NO_CACHE)
def run_load_sweep(agent_block: str, cfg: LoadSweepConfig, inputs_cfg: ProfileConfig, out_dir: str) -> SweepOutcome:
    """Closed loop at every concurrency (and open loop at every rate), ``num_passes`` interleaved passes.

    Why a task of its own: the sweep is the long, expensive measurement; its tables are written before
    anything else reads them, so sizing can be re-run from the files without sweeping again.
    """
    target = _target(agent_block)
    inputs, problems = load_inputs(inputs_cfg)
    logger = get_run_logger()
    for p in problems:
        logger.warning("sweep input skipped: %s", p)
    send = chat_sender(
        path=target.chat_path, body=lambda i: request_body(inputs, i, "load-user"), headers=_headers(target)
    )
    total = cfg.num_passes * (len(cfg.concurrencies) + len(cfg.arrival_rates))
    biggest = max([*cfg.concurrencies, 1])
    logger.info(
        "load sweep of %s: concurrencies %s, rates %s, %d passes, %d measured requests per level",
        target.url,
        cfg.concurrencies,
        cfg.arrival_rates,
        cfg.num_passes,
        cfg.requests_per_level,
    )

    async def main() -> Any:
        async with make_client(target.url, max_connections=max(256, 2 * biggest), timeout_s=cfg.request_timeout_s) as c:
            return await run_sweep(send, c, cfg, on_run=_progress(total))

    started = time.monotonic()
    result = run_coroutine(main())
    seconds = time.monotonic() - started
    out = Path(out_dir)
    requests_csv = result.to_csv(out / "requests.csv", per="request")
    levels_csv = result.to_csv(out / "levels.csv", per="level")
    llm_calls_csv = out / "llm_calls.csv"
    result.llm_calls_frame().to_csv(llm_calls_csv, index=False)
    summary = result.summary_frame()
    requests = int(summary["requests"].sum()) if len(summary) else 0
    errors = requests - (int(summary["ok"].sum()) if len(summary) else 0)
    for w in result.warnings:
        logger.warning("load generator: %s", w)
    logger.info("load sweep done: %d measured requests, %d failed, in %.0f s", requests, errors, seconds)
    return SweepOutcome(
        requests_csv=str(requests_csv),
        levels_csv=str(levels_csv),
        llm_calls_csv=str(llm_calls_csv),
        levels=frame_rows(summary),
        requests=requests,
        errors=errors,
        warnings=result.warnings,
        seconds=seconds,
    )


# --------------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------------


class SizingOutcome(BaseModel):
    """The sizing answer (``SizingResult.to_dict``, JSON-safe), its report and its files."""

    answer: dict[str, Any]
    markdown: str
    json_path: str
    markdown_path: str
    latency_plot: str
    sizing_plot: str


@task(name="size", retries=0, cache_policy=NO_CACHE)
def run_sizing(
    requests_csv: str, llm_calls_csv: str | None, targets: SizingTargets, out_dir: str, seed: int = 0
) -> SizingOutcome:
    """C*, GPUs with a bootstrap interval, cost; the two plots; ``sizing.json`` and ``sizing.md``.

    Never fails on an unreachable target: that is an answer (``reachable: false`` with the reason).
    """
    result = size(sweep_data(requests_csv, llm_calls_csv), targets, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_all(result, out)
    answer = json_safe(result.to_dict())
    json_path = out / "sizing.json"
    json_path.write_text(json.dumps(answer, indent=2), encoding="utf-8")
    md_path = out / "sizing.md"
    md_path.write_text(result.to_markdown(), encoding="utf-8")
    logger = get_run_logger()
    if result.reachable:
        logger.info(
            "sizing: C* %s %.1f (%.1f–%.1f), %s GPUs for %d users (%s–%s)",
            "≥" if result.slo_concurrency_is_lower_bound else "=",
            result.slo_concurrency or 0.0,
            result.slo_concurrency_low or 0.0,
            result.slo_concurrency_high or 0.0,
            result.gpus,
            targets.target_users,
            result.gpus_low,
            result.gpus_high,
        )
    else:
        logger.warning("sizing: %s", result.reason)
    return SizingOutcome(
        answer=answer,
        markdown=result.to_markdown(),
        json_path=str(json_path),
        markdown_path=str(md_path),
        latency_plot=str(plots["latency_vs_concurrency"]),
        sizing_plot=str(plots["sizing"]),
    )


# --------------------------------------------------------------------------------------------------
# Rollout check
# --------------------------------------------------------------------------------------------------


class RolloutOutcome(BaseModel):
    """A staged rollout check: the decision, the core's report, counts and files."""

    decision: str
    report: dict[str, Any]
    markdown: str
    requests: int
    canary_requests: int
    stopped_early: str | None = None  # the stage cut short by a rollback, if any
    json_path: str
    markdown_path: str
    observations_csv: str


async def _drive_stage(
    client: httpx.AsyncClient,
    target: AgentTarget,
    inputs: Sequence[Mapping[str, Any]],
    stage: RolloutStage,
    start_s: float,
    config: RolloutConfig,
    canary_model: str,
    concurrency: int,
    policy: RolloutPolicy,
    observations: list[tuple[float, str, bool, float, None]],
    counter: Iterator[int],
    check_interval_s: float,
) -> float | None:
    """Closed-loop traffic for one stage; returns the (rollout) time it was cut short by a rollback, if it was."""
    origin = time.perf_counter()
    stop = asyncio.Event()
    cut_at: list[float] = []

    async def user() -> None:
        while not stop.is_set():
            sent = time.perf_counter() - origin
            if sent >= stage.duration_s:
                return
            i = next(counter)
            body = request_body(inputs, i, "rollout")
            if "message" in body:
                body["user_id"] = f"rollout-user-{i % ROLLOUT_USERS}"
            t0 = time.perf_counter()
            status: int | None = None
            data: Any = None
            try:
                answer = await client.post(target.chat_path, json=body)
                status = answer.status_code
                try:
                    data = answer.json()
                except ValueError:
                    data = None
            except httpx.HTTPError:
                pass
            observations.append(observation_of(start_s + sent, status, data, time.perf_counter() - t0, canary_model))

    async def monitor() -> None:
        # A real controller aborts at the first alarm: judge the stage so far, roll back early if it must.
        while not stop.is_set():
            await asyncio.sleep(check_interval_s)
            now = start_s + time.perf_counter() - origin
            report = analyze_stage(observations, stage, config.slo, start_s=start_s, now_s=now, policy=policy)
            if report.decision == "rollback":
                cut_at.append(now)
                stop.set()

    watcher = asyncio.create_task(monitor())
    await asyncio.gather(*(user() for _ in range(concurrency)))
    stop.set()
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    return cut_at[0] if cut_at else None


@task(name="rollout-stages", cache_policy=NO_CACHE)
def run_rollout_stages(
    agent_block: str,
    canary_model: str,
    config: RolloutConfig,
    inputs_cfg: ProfileConfig,
    out_dir: str,
    concurrency: int = 8,
    min_canary_requests: int | None = None,
    check_interval_s: float = 1.0,
) -> RolloutOutcome:
    """Walk the stages: route each stage's weight to the canary, drive traffic, judge; stop at the first non-promote.

    Observations are ``(t_s, variant, ok, latency_s, None)`` with ``t_s`` the send time on the rollout's
    clock (stage ``k`` starts at the sum of the earlier stages' durations). The routing is restored at the
    end whatever the outcome; acting on the decision is left to whoever receives ``flywheel.rollout.decided``.
    """
    logger = get_run_logger()
    target = _target(agent_block)
    inputs, _ = load_inputs(inputs_cfg)
    policy = RolloutPolicy(min_requests=min_canary_requests) if min_canary_requests else RolloutPolicy()
    observations: list[tuple[float, str, bool, float, None]] = []
    counter = itertools.count()
    cut_at: float | None = None
    stopped_early: str | None = None

    async def drive(stage: RolloutStage, start_s: float) -> float | None:
        limits = httpx.Limits(max_connections=max(64, 2 * concurrency))
        async with httpx.AsyncClient(
            base_url=target.url, headers=_headers(target), timeout=60.0, limits=limits
        ) as client:
            return await _drive_stage(
                client,
                target,
                inputs,
                stage,
                start_s,
                config,
                canary_model,
                concurrency,
                policy,
                observations,
                counter,
                check_interval_s,
            )

    previous = set_agent_routing(agent_block, canary_model, 0.0)
    try:
        start_s = 0.0
        for k, stage in enumerate(config.stages):
            set_agent_routing(agent_block, canary_model, stage.weight)
            cut_at = run_coroutine(drive(stage, start_s))
            so_far = RolloutConfig(stages=config.stages[: k + 1], slo=config.slo)
            report = analyze_rollout(observations, so_far, now_s=cut_at, policy=policy)
            in_stage = [o for o in observations if start_s <= o[0] < start_s + stage.duration_s]
            canary_n = sum(o[1] == "canary" for o in in_stage)
            logger.info(
                "rollout stage %s (%s canary): %d requests, %d on the canary, %d failed -> %s",
                stage.name,
                f"{stage.weight:.0%}",
                len(in_stage),
                canary_n,
                sum(not o[2] for o in in_stage),
                report.stages[-1].decision if report.stages else report.decision,
            )
            if cut_at is not None:
                stopped_early = stage.name
            if report.decision != "promote":
                break
            start_s += stage.duration_s
    finally:
        restore_agent_routing(agent_block, previous)
    final = analyze_rollout(observations, config, now_s=cut_at, policy=policy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        [Observation.of(o).__dict__ for o in observations], columns=["t_s", "variant", "ok", "latency_s", "quality"]
    )
    observations_csv = out / "observations.csv"
    frame.to_csv(observations_csv, index=False)
    report_dict = json_safe(final.to_dict())
    json_path = out / "rollout.json"
    json_path.write_text(json.dumps(report_dict, indent=2), encoding="utf-8")
    md_path = out / "rollout.md"
    md_path.write_text(final.to_markdown(), encoding="utf-8")
    logger.info("rollout check of %s: %s", canary_model, final.decision)
    return RolloutOutcome(
        decision=final.decision,
        report=report_dict,
        markdown=final.to_markdown(),
        requests=len(observations),
        canary_requests=sum(o[1] == "canary" for o in observations),
        stopped_early=stopped_early,
        json_path=str(json_path),
        markdown_path=str(md_path),
        observations_csv=str(observations_csv),
    )


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------


@task(name="mlflow-start-run", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def start_tracking_run(
    mlflow_block: str, experiment: str, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]
) -> tuple[str, str]:
    """A run in ``experiment`` with its tags and params; returns (run id, link to it)."""
    mlflow, ui_url = tracker(mlflow_block)
    run_id = mlflow.start_run(experiment, run_name, tags=dict(tags))
    if params:
        mlflow.log(run_id, params=params)
    return run_id, mlflow.run_url(ui_url, run_id)


@task(name="mlflow-end-run", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def end_tracking_run(mlflow_block: str, run_id: str, status: str) -> None:
    """FINISHED, FAILED or KILLED."""
    tracker(mlflow_block)[0].end_run(run_id, status)


def _stats_metrics(prefix: str, stats: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("p50_s", "p95_s", "p99_s", "mean_s", "max_s", "count"):
        value = stats.get(key)
        if isinstance(value, int | float) and math.isfinite(float(value)):
            out[f"{prefix}_{key}"] = float(value)
    return out


@task(name="mlflow-log-profile", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def log_profile(mlflow_block: str, run_id: str, outcome: ProfileOutcome) -> None:
    """Profile metrics (``profile.*``) and files (``profile/``: JSON, markdown, Gantt PNG, the traces)."""
    mlflow, _ = tracker(mlflow_block)
    metrics = {"profile.requests": float(outcome.requests), "profile.failed": float(outcome.failed)}
    metrics["profile.traces"] = float(outcome.traces)
    metrics.update(_stats_metrics("profile.workflow", outcome.summary.get("workflow") or {}))
    metrics.update(_stats_metrics("profile.llm", outcome.summary.get("llm") or {}))
    per_workflow = outcome.summary.get("llm_calls_per_workflow")
    if isinstance(per_workflow, int | float):
        metrics["profile.llm_calls_per_workflow"] = float(per_workflow)
    mlflow.log(run_id, metrics=metrics, tags={"profile.source": outcome.source})
    for path in (outcome.report_json, outcome.report_md, outcome.gantt_png, outcome.traces_file):
        if path:
            mlflow.log_file(run_id, Path(path), "profile")
    if outcome.traces == 0:
        mlflow.log_text(run_id, outcome.markdown, "profile/profile.md")


LEVEL_METRICS = (
    "workflow_p50_s",
    "workflow_p95_s",
    "workflow_p99_s",
    "llm_p50_s",
    "llm_p95_s",
    "llm_p99_s",
    "throughput_rps",
    "error_rate",
    "late_share",
    "requests",
)


@task(name="mlflow-log-sweep", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def log_sweep(mlflow_block: str, run_id: str, outcome: SweepOutcome) -> None:
    """Per-level metrics with ``step`` = concurrency (open-loop levels: ``open_loop.*`` with step = level index)
    and the three sweep tables under ``sweep/``."""
    mlflow, _ = tracker(mlflow_block)
    for row in outcome.levels:
        closed = row.get("mode") == "closed"
        prefix = "" if closed else "open_loop."
        step = int(row["concurrency"]) if closed and row.get("concurrency") is not None else int(row.get("level", 0))
        metrics = {
            f"{prefix}{k}": float(row[k])
            for k in LEVEL_METRICS
            if isinstance(row.get(k), int | float) and math.isfinite(float(row[k]))
        }
        if not closed and isinstance(row.get("rate_rps"), int | float):
            metrics["open_loop.rate_rps"] = float(row["rate_rps"])
        mlflow.log(run_id, metrics=metrics, step=step)
    mlflow.log(
        run_id,
        metrics={"sweep.requests": float(outcome.requests), "sweep.errors": float(outcome.errors)},
        tags={"sweep.warnings": str(len(outcome.warnings))},
    )
    for path in (outcome.requests_csv, outcome.levels_csv, outcome.llm_calls_csv):
        mlflow.log_file(run_id, Path(path), "sweep")
    if outcome.warnings:
        mlflow.log_text(run_id, "\n".join(outcome.warnings) + "\n", "sweep/warnings.txt")


@task(name="mlflow-log-sizing", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def log_sizing(mlflow_block: str, run_id: str, outcome: SizingOutcome) -> None:
    """The answer as metrics and tags, ``sizing.json`` / ``sizing.md`` and the two plots at the run's root."""
    mlflow, _ = tracker(mlflow_block)
    a = outcome.answer
    metrics: dict[str, float] = {"reachable": 1.0 if a.get("reachable") else 0.0}
    for key in (
        "slo_concurrency",
        "slo_concurrency_low",
        "slo_concurrency_high",
        "extrapolated_slo_concurrency",
        "replicas",
        "gpus",
        "gpus_low",
        "gpus_high",
        "throughput_at_slo_rps",
        "cost_per_1k_workflows",
        "unreachable_share",
    ):
        if isinstance(a.get(key), int | float):
            metrics[key] = float(a[key])
    fit = a.get("fit") or {}
    for key in ("d_s", "slope_s", "knee", "r_squared"):
        if isinstance(fit.get(key), int | float):
            metrics[f"fit.{key}"] = float(fit[key])
    tags = {
        "sizing.reachable": str(bool(a.get("reachable"))).lower(),
        "sizing.lower_bound": str(bool(a.get("slo_concurrency_is_lower_bound"))).lower(),
        "sizing.reason": str(a.get("reason", ""))[:5000],
    }
    mlflow.log(run_id, metrics=metrics, tags=tags)
    for level in a.get("levels") or []:
        low, high = level.get("workflow_p95_low_s"), level.get("workflow_p95_high_s")
        step_metrics = {}
        if isinstance(low, int | float):
            step_metrics["workflow_p95_low_s"] = float(low)
        if isinstance(high, int | float):
            step_metrics["workflow_p95_high_s"] = float(high)
        step_metrics["meets_target"] = 1.0 if level.get("meets_target") else 0.0
        mlflow.log(run_id, metrics=step_metrics, step=int(level["concurrency"]))
    for path in (outcome.json_path, outcome.markdown_path, outcome.latency_plot, outcome.sizing_plot):
        mlflow.log_file(run_id, Path(path))


@task(name="mlflow-log-rollout", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def log_rollout(mlflow_block: str, run_id: str, outcome: RolloutOutcome) -> None:
    """Decision per stage as tags (``stage.<name>.decision``) and metrics (step = stage index), report files."""
    mlflow, _ = tracker(mlflow_block)
    mlflow.log(
        run_id,
        metrics={
            "decision": DECISION_CODES.get(outcome.decision, 0.0),
            "requests": float(outcome.requests),
            "canary_requests": float(outcome.canary_requests),
        },
        tags={"rollout.decision": outcome.decision, "rollout.stopped_early": outcome.stopped_early or "no"},
    )
    for k, stage in enumerate(outcome.report.get("stages") or []):
        metrics = {"stage.decision": DECISION_CODES.get(stage["decision"], 0.0), "stage.weight": float(stage["weight"])}
        for variant in ("baseline", "canary"):
            slis = stage.get(variant) or {}
            for key in ("requests", "errors", "error_rate", "p95_latency_s", "slow_share", "quality_mean"):
                if isinstance(slis.get(key), int | float):
                    metrics[f"{variant}.{key}"] = float(slis[key])
        tags = {
            f"stage.{stage['stage']}.decision": stage["decision"],
            f"stage.{stage['stage']}.reason": "; ".join(stage.get("reasons") or [])[:5000],
        }
        mlflow.log(run_id, metrics=metrics, tags=tags, step=k)
    for path in (outcome.json_path, outcome.markdown_path, outcome.observations_csv):
        mlflow.log_file(run_id, Path(path))


@task(name="mlflow-champion", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def champion_served_model(mlflow_block: str, registered_model: str) -> str | None:
    """The model the registry's ``champion`` of ``registered_model`` is served as (tag ``served_model``), if any."""
    mlflow, _ = tracker(mlflow_block)
    try:
        version = mlflow.client.get_model_version_by_alias(registered_model, CHAMPION_ALIAS)
    except MlflowException:
        return None
    tags = version.tags or {}
    served = tags.get("served_model") or tags.get("candidate")
    return str(served) if served else None
