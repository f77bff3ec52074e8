"""Scaling commands, mounted on ``flywheel`` as ``flywheel sizing ...``, ``flywheel profile ...`` and
``flywheel sweep ...``.

Offline, from files:

- ``sizing calc --sweep FILE.csv --target-workflow-p95 S [--target-llm-p95 S] --target-users N --test-gpus G
  [--gpus-per-replica R] [--sticky-sessions] [--json]``
- ``profile analyze --traces FILE [--json] [--gantt PNG]``

Against a running agent the project did not write (no Prefect server needed; spans from ``--traces FILE``, written
by ``flywheel otlp serve`` or a collector, or from a receiver started here with ``--otlp-port P``):

- ``profile run --agent-url URL --preset NAME --inputs FILE --traces FILE [--json] [--out DIR]``
- ``sweep run --agent-url URL --preset NAME --inputs FILE --concurrency 1,2,4 --passes N --traces FILE --out DIR
  [--processes N] [--json]``

A bad file or argument prints one line, ``error: ...``, on stderr and exits with code 2; never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from agent_flywheel.config import LoadSweepConfig, SizingTargets
from agent_flywheel.scaling.inputs import DEFAULT_INPUTS, Input, read_inputs
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.loadgen.processes import GeneratorError
from agent_flywheel.scaling.loadgen.sweep import SweepResult
from agent_flywheel.scaling.otlp.sources import collecting_spans
from agent_flywheel.scaling.profile_run import drive_profile, profile_report, write_profile
from agent_flywheel.scaling.profiling.files import TraceFormatError, load_traces
from agent_flywheel.scaling.profiling.gantt import gantt_png
from agent_flywheel.scaling.profiling.report import analyze, representative_trace
from agent_flywheel.scaling.sizing.plots import plot_all
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import SweepFormatError, read_sweep_csv
from agent_flywheel.scaling.sweep_run import sweep_with_spans
from cli.agent_options import (
    AdminOtlp,
    AgentUrl,
    AnswerPath,
    BodyTemplate,
    Headers,
    Inputs,
    Method,
    OptionError,
    OtlpHost,
    OtlpPort,
    PathOpt,
    Preset,
    SpanWait,
    TraceIdPath,
    Traces,
    Variables,
    agent_target,
    spans_settings,
)

sizing_app = typer.Typer(
    help="Size the GPUs for an agent from a load sweep.", no_args_is_help=True, pretty_exceptions_enable=False
)
profile_app = typer.Typer(
    help="Profile an agent from its traces (OTLP JSON or NeMo Agent Toolkit), or live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sweep_app = typer.Typer(
    help="Sweep a running agent with load: latency per concurrency, LLM calls from its spans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@sizing_app.callback()
def _sizing_group() -> None:
    """Size the GPUs for an agent from a load sweep."""


@profile_app.callback()
def _profile_group() -> None:
    """Profile an agent from its traces, or live."""


@sweep_app.callback()
def _sweep_group() -> None:
    """Sweep a running agent with load."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@sizing_app.command("calc")
def sizing_calc(
    sweep: Annotated[Path | None, typer.Option("--sweep", help="Sweep CSV: one row per level or per request")] = None,
    target_workflow_p95: Annotated[
        float | None, typer.Option("--target-workflow-p95", help="Target p95 workflow latency (s)")
    ] = None,
    target_llm_p95: Annotated[
        float | None, typer.Option("--target-llm-p95", help="Target p95 LLM-call latency (s)")
    ] = None,
    target_users: Annotated[int | None, typer.Option("--target-users", help="Concurrent workflows to serve")] = None,
    test_gpus: Annotated[int | None, typer.Option("--test-gpus", help="GPUs behind the system under test")] = None,
    gpus_per_replica: Annotated[
        int | None,
        typer.Option(
            "--gpus-per-replica", help="GPUs of one serving replica (default: the system under test is one replica)"
        ),
    ] = None,
    sticky_sessions: Annotated[
        bool,
        typer.Option(
            "--sticky-sessions",
            help="Users are pinned to replicas (whole users per replica); default: requests balanced over replicas",
        ),
    ] = False,
    gpu_price_per_hour: Annotated[
        float | None, typer.Option("--gpu-price-per-hour", help="For cost per 1,000 workflows")
    ] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="Interval confidence")] = 0.90,
    bootstrap_samples: Annotated[int, typer.Option("--bootstrap-samples", help="Bootstrap resamples")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed")] = 0,
    plots: Annotated[Path | None, typer.Option("--plots", help="Directory for the PNG plots")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """C* (largest concurrency meeting the p95 targets), replicas and GPUs with an interval, cost; offline from a CSV.

    The answer states its assumptions: how many GPUs a replica has and whether users are pinned to replicas.
    """
    missing = [
        name
        for name, value in (
            ("--sweep", sweep),
            ("--target-workflow-p95", target_workflow_p95),
            ("--target-users", target_users),
            ("--test-gpus", test_gpus),
        )
        if value is None
    ]
    if missing:
        raise _fail(f"missing required option(s): {', '.join(missing)}")
    try:
        targets = SizingTargets(
            target_users=target_users,
            target_workflow_p95_s=target_workflow_p95,
            target_llm_p95_s=target_llm_p95,
            test_gpus=test_gpus,
            gpus_per_replica=gpus_per_replica,
            sticky_sessions=sticky_sessions,
            gpu_price_per_hour=gpu_price_per_hour,
            confidence=confidence,
            bootstrap_samples=bootstrap_samples,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across fields: test GPUs in whole replicas
            raise _fail(f"--gpus-per-replica: {first['msg'].removeprefix('Value error, ')}") from None
        flag = {
            "target_users": "--target-users",
            "target_workflow_p95_s": "--target-workflow-p95",
            "target_llm_p95_s": "--target-llm-p95",
            "test_gpus": "--test-gpus",
            "gpus_per_replica": "--gpus-per-replica",
            "gpu_price_per_hour": "--gpu-price-per-hour",
            "confidence": "--confidence",
            "bootstrap_samples": "--bootstrap-samples",
        }.get(str(first["loc"][0]) if first["loc"] else "", "argument")
        raise _fail(f"{flag}: {first['msg']} (got {first.get('input')!r})") from None
    assert sweep is not None
    try:
        data = read_sweep_csv(sweep)
        result = size(data, targets, seed=seed)
        if plots is not None:
            plot_all(result, plots)
    except SweepFormatError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write plots to {plots}: {exc.strerror or exc}") from None
    if as_json:
        typer.echo(json.dumps(json_safe(result.to_dict())))
    else:
        typer.echo(result.to_markdown())


@profile_app.command("analyze")
def profile_analyze(
    traces: Annotated[
        Path | None, typer.Option("--traces", help="OTLP JSON / JSONL or all_requests_profiler_traces.json")
    ] = None,
    gantt: Annotated[Path | None, typer.Option("--gantt", help="Write a Gantt chart of a median request")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object")] = False,
) -> None:
    """Per-step latency, LLM calls (paired by id), the critical path and the bottleneck, from a trace file."""
    if traces is None:
        raise _fail("missing required option: --traces")
    try:
        trace_set = load_traces(traces)
        report = analyze(trace_set.traces, trace_set.problems, trace_set.source_format)
        if gantt is not None:
            gantt_png(representative_trace(trace_set.traces), gantt)
    except TraceFormatError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot write {gantt}: {exc.strerror or exc}") from None
    if as_json:
        typer.echo(json.dumps(json_safe(report.to_dict())))
    else:
        typer.echo(report.to_markdown())


def _inputs(path: Path | None) -> list[Input]:
    if path is None:
        return list(DEFAULT_INPUTS)
    inputs, problems = read_inputs(path)
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    return inputs


def _levels(text: str, option: str, kind: type[int] | type[float]) -> list[int] | list[float]:
    try:
        values = [kind(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise OptionError(f"{option}: expected a comma-separated list of numbers, got {text!r}") from None
    if not values:
        raise OptionError(f"{option}: no value in {text!r}")
    return values


@profile_app.command("run")
def profile_run(
    agent_url: AgentUrl = None,
    preset: Preset = "demo",
    path: PathOpt = None,
    method: Method = None,
    body_template: BodyTemplate = None,
    answer_path: AnswerPath = None,
    trace_id_path: TraceIdPath = None,
    header: Headers = None,
    var: Variables = None,
    admin_otlp: AdminOtlp = None,
    inputs: Inputs = None,
    traces: Traces = None,
    otlp_port: OtlpPort = None,
    otlp_host: OtlpHost = "127.0.0.1",
    span_wait: SpanWait = 10.0,
    requests: Annotated[
        int | None, typer.Option("--requests", help="How many requests (default: each input once)")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request timeout (s)")] = 60.0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write profile.json, profile.md, gantt.png, traces.jsonl here")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report and request counts as one JSON object")
    ] = False,
) -> None:
    """Send the inputs one at a time (each with its own traceparent) and profile the spans of their traces."""
    try:
        agent = agent_target(
            agent_url, preset, path, method, body_template, answer_path, trace_id_path, header, var, admin_otlp
        )
        spans = spans_settings(traces, otlp_port, otlp_host, span_wait)
        if spans.otlp_receiver is None and spans.traces_file is None:
            raise OptionError("no span source: give --traces FILE (flywheel otlp serve, a collector) or --otlp-port P")
        items = _inputs(inputs)
        count = requests if requests is not None else len(items)
        if count < 1:
            raise OptionError("--requests: must be at least 1")
        with (
            agent.get_client(timeout_s=timeout) as http,
            collecting_spans(spans, http if agent.uses_admin_otlp else None) as sources,
        ):
            typer.echo(f"profiling {agent.url}: {count} requests; spans from {sources.describe}", err=True)
            run = drive_profile(http, agent.request_template(), items, count, sources, spans.wait_s)
    except (OptionError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot start the OTLP receiver or read the traces: {exc.strerror or exc}") from None
    if run.failed == run.requests:
        raise _fail(f"every request failed; first: {run.failures[0]} (is --preset / --path right for this agent?)")
    if not run.traces:
        raise _fail(
            f"{run.requests} requests sent ({run.failed} failed) but no spans of their traces arrived: is the agent "
            "exporting OTLP there, and does it continue the incoming traceparent?"
        )
    report = profile_report(run)
    if out is not None:
        try:
            write_profile(run, report, out)
        except OSError as exc:
            raise _fail(f"cannot write to {out}: {exc.strerror or exc}") from None
    if as_json:
        typer.echo(json.dumps(json_safe(report.to_dict() | run.counts())))
    else:
        typer.echo(report.to_markdown())
        typer.echo(
            f"{run.requests} requests, {run.failed} failed, {len(run.traces)} traces from {run.source}, "
            f"{run.without_spans} answered without spans"
        )


def _sweep_json(result: SweepResult, spans: dict[str, int], files: dict[str, str]) -> dict[str, object]:
    return {
        "levels": [s.to_dict() for s in result.summaries()],
        "spans": spans,
        "warnings": result.warnings,
        **files,
    }


@sweep_app.command("run")
def sweep_run(
    agent_url: AgentUrl = None,
    preset: Preset = "demo",
    path: PathOpt = None,
    method: Method = None,
    body_template: BodyTemplate = None,
    answer_path: AnswerPath = None,
    trace_id_path: TraceIdPath = None,
    header: Headers = None,
    var: Variables = None,
    admin_otlp: AdminOtlp = None,
    inputs: Inputs = None,
    traces: Traces = None,
    otlp_port: OtlpPort = None,
    otlp_host: OtlpHost = "127.0.0.1",
    span_wait: SpanWait = 10.0,
    concurrency: Annotated[str | None, typer.Option("--concurrency", help="Closed-loop levels, e.g. 1,2,4,8")] = None,
    rate: Annotated[str | None, typer.Option("--rate", help="Open-loop Poisson rates (req/s), e.g. 5,10")] = None,
    passes: Annotated[int, typer.Option("--passes", help="Interleaved passes over the levels")] = 3,
    requests_per_level: Annotated[
        int, typer.Option("--requests-per-level", help="Measured requests per level and pass")
    ] = 64,
    warmup: Annotated[int, typer.Option("--warmup", help="Warm-up requests per level and pass, not measured")] = 4,
    timeout: Annotated[float, typer.Option("--timeout", help="Per-request timeout (s)")] = 30.0,
    processes: Annotated[
        int,
        typer.Option(
            "--processes", help="Generator processes; each level is split over them (one holds ~1,000 agent users)"
        ),
    ] = 1,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write requests.csv, levels.csv, llm_calls.csv here")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the levels as one JSON object")] = False,
) -> None:
    """Closed loop per concurrency (open loop per rate), each request with its own traceparent; per level the
    workflow p50/p95/p99 and, from the spans, the per-LLM-call p95 by model. ``sizing calc --sweep
    OUT/requests.csv`` sizes from the result. With ``--processes N`` every level is split over N generator
    processes started together; their histograms are merged exactly and each one's lateness is checked."""
    try:
        if out is None:
            raise OptionError("missing required option: --out")
        if concurrency is None and rate is None:
            raise OptionError("missing required option: --concurrency (or --rate)")
        agent = agent_target(
            agent_url, preset, path, method, body_template, answer_path, trace_id_path, header, var, admin_otlp
        )
        spans = spans_settings(traces, otlp_port, otlp_host, span_wait)
        try:
            cfg = LoadSweepConfig(
                concurrencies=_levels(concurrency, "--concurrency", int) if concurrency else [],
                arrival_rates=_levels(rate, "--rate", float) if rate else [],
                num_passes=passes,
                requests_per_level=requests_per_level,
                warmup_requests=warmup,
                request_timeout_s=timeout,
                processes=processes,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            message = first["msg"].removeprefix("Value error, ")
            raise OptionError(f"{'.'.join(str(p) for p in first['loc']) or 'sweep'}: {message}") from None
        items = _inputs(inputs)
        with (
            agent.get_client() as http,
            collecting_spans(spans, http if agent.uses_admin_otlp else None) as sources,
        ):
            split = f", every level split over {processes} processes" if processes > 1 else ""
            typer.echo(f"sweeping {agent.url}{split}; spans from {sources.describe}", err=True)
            result, match = sweep_with_spans(
                agent.load_generator(items, timeout),
                cfg,
                sources,
                spans.wait_s,
                on_run=lambda r: typer.echo(
                    f"  pass {r.pass_index + 1}, "
                    + (f"concurrency {r.concurrency}" if r.mode == "closed" else f"rate {r.rate_rps:g}/s")
                    + (f", generator {r.generator} of {r.generators}" if r.generators > 1 else "")
                    + f": {len(r.records)} measured",
                    err=True,
                ),
            )
        files = {
            "requests_csv": str(result.to_csv(out / "requests.csv", per="request")),
            "levels_csv": str(result.to_csv(out / "levels.csv", per="level")),
            "llm_calls_csv": str(out / "llm_calls.csv"),
        }
        result.llm_calls_frame().to_csv(out / "llm_calls.csv", index=False)
    except (OptionError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except GeneratorError as exc:
        raise _fail(f"load generator: {exc}") from None
    except OSError as exc:
        raise _fail(f"{exc.strerror or exc}: {getattr(exc, 'filename', None) or 'the receiver or the files'}") from None
    if match.without_spans:
        typer.echo(
            f"warning: {match.without_spans} of {match.requests} measured requests have no spans; "
            "their LLM calls are not counted",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(json_safe(_sweep_json(result, match.to_dict(), files))))
        return

    def fmt(v: float | int | None) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    typer.echo(
        "| level | requests | errors | workflow p50 s | p95 s | p99 s | LLM p95 s by model | sent late "
        "| client CPU ms/request |"
    )
    typer.echo("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for level in result.summaries():
        w = level.workflow.summary()
        label = f"c={level.concurrency}" if level.mode == "closed" else f"{level.rate_rps:g}/s"
        models = ", ".join(f"`{m}` {fmt(h.percentile(95))}" for m, h in sorted(level.llm_by_model.items())) or "—"
        typer.echo(
            f"| {label} | {level.requests} | {level.requests - level.ok} | {fmt(w['p50_s'])} | {fmt(w['p95_s'])} "
            f"| {fmt(w['p99_s'])} | {models} | {level.late_share:.1%} | {level.client_cpu_per_request_s * 1000:.3f} |"
        )
    for level in result.summaries():
        if len(level.generators) > 1:
            label = f"c={level.concurrency}" if level.mode == "closed" else f"{level.rate_rps:g}/s"
            parts = [
                f"{g.generator}: {g.late_share:.1%} late, {g.cpu_per_request_s * 1000:.3f} ms CPU/request, "
                f"loop lag p99 {g.loop_lag_p99_s * 1000:.0f} ms"
                for g in level.generators
            ]
            typer.echo(f"{label} by generator: " + "; ".join(parts))
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
