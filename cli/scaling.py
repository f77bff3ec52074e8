"""Offline scaling commands, mounted on ``flywheel`` as ``flywheel sizing ...`` and ``flywheel profile ...``.

- ``sizing calc --sweep FILE.csv --target-workflow-p95 S [--target-llm-p95 S] --target-users N --test-gpus G
  [--gpus-per-replica R] [--sticky-sessions] [--json]``
- ``profile analyze --traces FILE [--json] [--gantt PNG]``

A bad file or argument prints one line, ``error: ...``, on stderr and exits with code 2; never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from agent_flywheel.config import SizingTargets
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.profiling.files import TraceFormatError, load_traces
from agent_flywheel.scaling.profiling.gantt import gantt_png
from agent_flywheel.scaling.profiling.report import analyze, representative_trace
from agent_flywheel.scaling.sizing.plots import plot_all
from agent_flywheel.scaling.sizing.solve import size
from agent_flywheel.scaling.sizing.sweeps import SweepFormatError, read_sweep_csv

sizing_app = typer.Typer(
    help="Size the GPUs for an agent from a load sweep.", no_args_is_help=True, pretty_exceptions_enable=False
)
profile_app = typer.Typer(
    help="Profile an agent from its traces (OTLP JSON or NeMo Agent Toolkit).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@sizing_app.callback()
def _sizing_group() -> None:
    """Size the GPUs for an agent from a load sweep."""


@profile_app.callback()
def _profile_group() -> None:
    """Profile an agent from its traces."""


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
