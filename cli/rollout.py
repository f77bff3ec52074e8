"""``flywheel rollout check`` and ``flywheel rollout serve``: canary vs baseline from observed spans.

- ``rollout check --traces FILE --baseline-model A --canary-model B [--window 1h] [--until T] [--json]``: the
  verdict (promote / hold / rollback) on the requests in the traces file (OTLP JSON lines from ``flywheel otlp
  serve`` or a collector's file exporter; the toolkit's files too), split by the model that served them.
- ``rollout serve --traces FILE --port P``: the same check over HTTP for a rollout engine,
  ``GET /check?baseline=A&canary=B&window=10m`` (an Argo Rollouts ``web`` metric; ``deploy/kubernetes/``).

The SLO comes from ``--config`` (a scaling config's ``rollout`` section; default: the built-in SLO) and the
``--availability``, ``--p95-latency``, ``--llm-p95-latency``, ``--min-quality`` flags, which win. Nothing here
routes a user or sends a request to the agent. A bad file or flag is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from agent_flywheel.config import RolloutConfig, RolloutSLO, ScalingConfig, load_config
from agent_flywheel.scaling.jsonable import json_safe
from agent_flywheel.scaling.rollout.check import check_observed
from agent_flywheel.scaling.rollout.policy import RolloutPolicy
from agent_flywheel.scaling.rollout.service import (
    CheckService,
    CheckSettings,
    RolloutCheckServer,
    TracesUnavailable,
    load_observed_traces,
)
from agent_flywheel.scaling.rollout.window import parse_duration, parse_instant, resolve_window
from cli.errors import CliError, one_line_errors

rollout_app = typer.Typer(
    help="Canary vs baseline from the agent's observed spans: promote, hold or rollback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

TracesOpt = Annotated[
    Path | None, typer.Option("--traces", help="OTLP JSON lines (flywheel otlp serve --out, a collector's file)")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Scaling config YAML whose rollout section gives the SLO and window")
]
Availability = Annotated[
    float | None, typer.Option("--availability", help="SLO: target share of successful requests, e.g. 0.99")
]
P95Latency = Annotated[float | None, typer.Option("--p95-latency", help="SLO: workflow p95 target (s)")]
LlmP95Latency = Annotated[
    float | None, typer.Option("--llm-p95-latency", help="SLO: per-LLM-call p95 target (s); judged when given")
]
MinQuality = Annotated[float | None, typer.Option("--min-quality", help="SLO: minimum mean quality score")]
MinRequests = Annotated[
    int | None, typer.Option("--min-requests", help="Canary requests needed to promote (default 50)")
]


@rollout_app.callback()
def _rollout_group() -> None:
    """Canary vs baseline from the agent's observed spans."""


def _rollout_config(
    config: Path | None,
    availability: float | None,
    p95_latency: float | None,
    llm_p95_latency: float | None,
    min_quality: float | None,
) -> RolloutConfig:
    """The config's rollout section (or the defaults) with the SLO flags applied; a bad value is one line."""
    rollout = load_config(config, ScalingConfig).rollout if config else RolloutConfig()
    flags = {
        "availability": availability,
        "p95_latency_s": p95_latency,
        "llm_p95_latency_s": llm_p95_latency,
        "min_quality": min_quality,
    }
    try:
        slo = RolloutSLO.model_validate(rollout.slo.model_dump() | {k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        flag = {
            "availability": "--availability",
            "p95_latency_s": "--p95-latency",
            "llm_p95_latency_s": "--llm-p95-latency",
            "min_quality": "--min-quality",
        }.get(str(first["loc"][0]) if first["loc"] else "", "SLO")
        raise CliError(f"{flag}: {first['msg']} (got {first.get('input')!r})") from None
    return rollout.model_copy(update={"slo": slo})


def _policy(min_requests: int | None) -> RolloutPolicy:
    if min_requests is None:
        return RolloutPolicy()
    if min_requests < 1:
        raise CliError(f"--min-requests: must be at least 1 (got {min_requests})")
    return RolloutPolicy(min_requests=min_requests)


def _seconds(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}") from None


@rollout_app.command("check")
@one_line_errors
def rollout_check(
    traces: TracesOpt = None,
    baseline_model: Annotated[
        str | None, typer.Option("--baseline-model", help="The model serving the baseline (default: the config's)")
    ] = None,
    canary_model: Annotated[str | None, typer.Option("--canary-model", help="The canary's model")] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Judge this long a window (600, 10m, 1h); default: every trace")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End of the window: epoch seconds or ISO 8601 (default: now)")
    ] = None,
    config: ConfigOpt = None,
    availability: Availability = None,
    p95_latency: P95Latency = None,
    llm_p95_latency: LlmP95Latency = None,
    min_quality: MinQuality = None,
    min_requests: MinRequests = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as one JSON object")] = False,
) -> None:
    """Judge the canary against the baseline on the observed requests: promote, hold or rollback, with reasons."""
    if traces is None or canary_model is None:
        missing = [name for name, v in (("--traces", traces), ("--canary-model", canary_model)) if v is None]
        raise CliError(f"missing required option(s): {', '.join(missing)}")
    rollout = _rollout_config(config, availability, p95_latency, llm_p95_latency, min_quality)
    baseline = baseline_model or rollout.baseline_model
    window_s = _seconds(window, "--window")
    try:
        until_s = parse_instant(until) if until is not None else None
    except ValueError as exc:
        raise CliError(f"--until: {exc}") from None
    try:
        found, problems = load_observed_traces(traces)
    except TracesUnavailable as exc:
        raise CliError(f"cannot read the traces: {exc}") from None
    for problem in problems[:5]:
        typer.echo(f"warning: {problem}", err=True)
    start, end = resolve_window(found, window_s, until_s, time.time())
    try:
        result = check_observed(
            found,
            baseline,
            canary_model,
            rollout.slo,
            start,
            end,
            policy=_policy(min_requests),
            quality_attribute=rollout.quality_attribute,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(json_safe(result.to_dict())))
    else:
        typer.echo(result.to_markdown())


@rollout_app.command("serve")
@one_line_errors
def rollout_serve(
    traces: TracesOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    baseline_model: Annotated[
        str | None, typer.Option("--baseline-model", help="Baseline when a query names none (default: the config's)")
    ] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Window when a query names none (default: the config's window_s)")
    ] = None,
    config: ConfigOpt = None,
    availability: Availability = None,
    p95_latency: P95Latency = None,
    llm_p95_latency: LlmP95Latency = None,
    min_quality: MinQuality = None,
    min_requests: MinRequests = None,
) -> None:
    """Answer GET /check?baseline=A&canary=B&window=10m with the verdict as JSON until SIGINT or SIGTERM."""
    if traces is None:
        raise CliError("missing required option: --traces")
    rollout = _rollout_config(config, availability, p95_latency, llm_p95_latency, min_quality)
    settings = CheckSettings(
        slo=rollout.slo,
        baseline_model=baseline_model or rollout.baseline_model,
        window_s=_seconds(window, "--window") or rollout.window_s,
        policy=_policy(min_requests),
        quality_attribute=rollout.quality_attribute,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[signal.Signals, Any] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        try:
            server = RolloutCheckServer(CheckService(traces, settings), host, port).start()
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        typer.echo(
            f"rollout check at {server.url}/check?baseline={settings.baseline_model}&canary=MODEL"
            f"&window={settings.window_s:g}s, reading {traces} (Ctrl-C to stop)",
            err=True,
        )
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("stopped", err=True)
