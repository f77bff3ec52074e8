"""The command-line options that describe an agent and where its spans are, shared by ``profile run`` and
``sweep run``: they become the same ``AgentTarget`` block and ``spans`` settings the flows take."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr, ValidationError

from agent_flywheel.config import OtlpReceiverConfig, SpansConfig
from agent_flywheel.scaling.loadgen.template import PRESET_NAMES

if TYPE_CHECKING:  # Prefect is imported only once the command chose its server (cli/in_process.py)
    from blocks.agent_target import AgentTarget

API_KEY_ENV = "FLYWHEEL_AGENT_API_KEY"

AgentUrl = Annotated[str | None, typer.Option("--agent-url", help="The agent's base URL")]
Preset = Annotated[str, typer.Option("--preset", help=f"Request shape: {', '.join(PRESET_NAMES)}")]
PathOpt = Annotated[str | None, typer.Option("--path", help="Path that takes one user turn (default: the preset's)")]
Method = Annotated[str | None, typer.Option("--method", help="HTTP method (default: the preset's)")]
BodyTemplate = Annotated[
    str | None, typer.Option("--body-template", help='JSON body with {input} etc., e.g. \'{"q": "{input}"}\'')
]
AnswerPath = Annotated[
    str | None, typer.Option("--answer-path", help="Where the answer is in the reply, e.g. choices.0.message.content")
]
TraceIdPath = Annotated[
    str | None, typer.Option("--trace-id-path", help="Where the reply names the agent's own trace id, if anywhere")
]
Headers = Annotated[list[str] | None, typer.Option("--header", help="Extra request header 'Name: value' (repeat)")]
Variables = Annotated[list[str] | None, typer.Option("--var", help="Template variable name=value (repeat)")]
AdminOtlp = Annotated[
    bool | None,
    typer.Option("--admin-otlp/--no-admin-otlp", help="Point the agent's exporter via /admin/otlp (demo agent)"),
]
Inputs = Annotated[
    Path | None, typer.Option("--inputs", help="JSONL: a message string or a whole request body per line")
]
Traces = Annotated[Path | None, typer.Option("--traces", help="Read spans from this OTLP JSON lines file as it grows")]
OtlpPort = Annotated[int | None, typer.Option("--otlp-port", help="Start an OTLP/HTTP receiver on this port")]
OtlpHost = Annotated[str, typer.Option("--otlp-host", help="Address of that receiver")]
SpanWait = Annotated[float, typer.Option("--span-wait", help="Seconds to wait for spans after the last answer")]


class OptionError(ValueError):
    """A bad option value; the message names the option."""


def _pairs(values: list[str] | None, sep: str, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        name, found, rest = value.partition(sep)
        if not found or not name.strip():
            raise OptionError(f"{option}: expected 'name{sep}value', got {value!r}")
        out[name.strip()] = rest.strip()
    return out


def agent_target(
    url: str | None,
    preset: str,
    path: str | None = None,
    method: str | None = None,
    body_template: str | None = None,
    answer_path: str | None = None,
    trace_id_path: str | None = None,
    headers: list[str] | None = None,
    variables: list[str] | None = None,
    admin_otlp: bool | None = None,
) -> AgentTarget:
    """The ``AgentTarget`` the options describe (the API key from ``$FLYWHEEL_AGENT_API_KEY``)."""
    from blocks.agent_target import AgentTarget

    if not url:
        raise OptionError("missing required option: --agent-url")
    body: Any = None
    if body_template is not None:
        try:
            body = json.loads(body_template)
        except json.JSONDecodeError as exc:
            raise OptionError(f"--body-template: not JSON ({exc.msg})") from None
        if not isinstance(body, dict | list):
            raise OptionError("--body-template: expected a JSON object or list")
    api_key = os.environ.get(API_KEY_ENV)
    try:
        return AgentTarget(
            url=url,
            preset=preset,
            path=path,
            method=method,
            body_template=body,
            answer_path=answer_path,
            trace_id_path=trace_id_path,
            headers=_pairs(headers, ":", "--header"),
            variables=_pairs(variables, "=", "--var"),
            admin_otlp=admin_otlp,
            api_key=SecretStr(api_key) if api_key else None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "agent"
        raise OptionError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def spans_settings(traces: Path | None, otlp_port: int | None, otlp_host: str, span_wait_s: float) -> SpansConfig:
    """Where spans come from: the traces file and/or a receiver on ``--otlp-port`` (none unless asked for)."""
    try:
        return SpansConfig(
            otlp_receiver=OtlpReceiverConfig(host=otlp_host, port=otlp_port) if otlp_port is not None else None,
            traces_file=str(traces) if traces is not None else None,
            wait_s=span_wait_s,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise OptionError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
