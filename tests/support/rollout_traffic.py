"""Observed canary traffic for the rollout tests: requests served by a baseline or a canary model, written as the
OTLP JSON documents an agent's exporter (through ``flywheel otlp serve``) or a collector's file exporter writes.

Each request is a trace: a root ``AGENT`` span, a planner LLM call (a third model, so a request is attributed by
its *responder* call) and the responder call, whose model is the arm. The responder's model attribute follows one
of the conventions people use (``style``): OpenInference ``llm.model_name``, GenAI ``gen_ai.request.model``, or
GenAI with only a dated ``gen_ai.response.model``. A failed request has an error status on its responder call and
its root span. Times are epoch seconds from :data:`T0`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent_flywheel.scaling.profiling.files import parse_traces
from agent_flywheel.scaling.profiling.spans import Trace
from tests.support.traces import otlp_attr

T0 = 1_750_000_000.0
PLANNER = "acme/planner-70b"
BASELINE = "meta/llama-3.1-8b-instruct"
CANARY = "acme/support-1b-lora"
STYLES = ("openinference", "genai-request", "genai-response")


@dataclass(frozen=True)
class Request:
    """One observed request: when it started (epoch s), the responder's model, its outcome and timing."""

    start_s: float
    model: str
    ok: bool = True
    latency_s: float = 0.5
    style: str = "openinference"
    quality: float | None = None
    planner: bool = True


def traffic(
    seed: int,
    *,
    start_s: float = T0,
    duration_s: float = 600.0,
    rate: float = 1.0,
    canary_share: float = 0.5,
    canary: str = CANARY,
    baseline: str = BASELINE,
    canary_errors: float = 0.0,
    baseline_errors: float = 0.0,
    canary_latency_factor: float = 1.0,
    quality: tuple[float, float] | None = None,
) -> list[Request]:
    """Poisson arrivals split by ``canary_share``; lognormal latency around 0.5 s; styles cycle; optional quality
    (canary's, baseline's probability of a good answer, every request scored)."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.uniform(start_s, start_s + duration_s, rng.poisson(rate * duration_s)))
    out = []
    for i, t in enumerate(times):
        is_canary = rng.random() < canary_share
        error = canary_errors if is_canary else baseline_errors
        factor = canary_latency_factor if is_canary else 1.0
        score = None
        if quality is not None:
            score = float(rng.random() < (quality[0] if is_canary else quality[1]))
        out.append(
            Request(
                start_s=float(t),
                model=canary if is_canary else baseline,
                ok=bool(rng.random() >= error),
                latency_s=float(rng.lognormal(math.log(0.5 * factor), 0.3)),
                style=STYLES[i % len(STYLES)],
                quality=score,
            )
        )
    return out


def _model_attributes(model: str, style: str) -> dict[str, Any]:
    if style == "openinference":
        return {"openinference.span.kind": "LLM", "llm.model_name": model}
    if style == "genai-request":
        return {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
    if style == "genai-response":  # a provider answering with a dated name; only the answer is recorded
        return {"gen_ai.operation.name": "chat", "gen_ai.response.model": model}
    raise ValueError(style)


def _span(
    trace_id: str, span_id: str, parent: str, name: str, start: float, end: float, attrs: dict[str, Any], ok: bool
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "startTimeUnixNano": str(round(start * 1e9)),
        "endTimeUnixNano": str(round(end * 1e9)),
        "attributes": [otlp_attr(k, v) for k, v in attrs.items()],
        "status": {} if ok else {"code": 2, "message": "failed"},
    }


def spans_of(index: int, request: Request) -> list[dict[str, Any]]:
    """The OTLP JSON spans of one request (trace id from ``index``)."""
    trace_id = f"{index + 1:032x}"
    root, plan, answer = (f"{index * 3 + k + 1:016x}" for k in range(3))
    t0, t1 = request.start_s, request.start_s + request.latency_s
    plan_end = t0 + 0.2 * request.latency_s
    root_attrs: dict[str, Any] = {"openinference.span.kind": "AGENT"}
    if request.quality is not None:
        root_attrs["flywheel.quality"] = request.quality
    spans = [_span(trace_id, root, "", "react_agent", t0, t1, root_attrs, request.ok)]
    if request.planner:
        planner = {"openinference.span.kind": "LLM", "llm.model_name": PLANNER}
        spans.append(_span(trace_id, plan, root, f"chat {PLANNER}", t0 + 0.01, plan_end, planner, True))
    attrs = _model_attributes(request.model, request.style)
    spans.append(_span(trace_id, answer, root, f"chat {request.model}", plan_end, t1 - 0.01, attrs, request.ok))
    return spans


def otlp_documents(requests: Sequence[Request], per_document: int = 25, first_index: int = 0) -> list[dict[str, Any]]:
    """The requests as OTLP JSON export documents of ``per_document`` requests each (one per exporter batch);
    trace ids count from ``first_index``."""
    documents = []
    for first in range(0, len(requests), per_document):
        batch = range(first, min(first + per_document, len(requests)))
        spans = [s for i in batch for s in spans_of(first_index + i, requests[i])]
        documents.append(
            {
                "resourceSpans": [
                    {
                        "resource": {"attributes": [otlp_attr("service.name", "support-agent")]},
                        "scopeSpans": [{"scope": {"name": "tests.rollout"}, "spans": spans}],
                    }
                ]
            }
        )
    return documents


def write_jsonl(path: Path, requests: Sequence[Request], append: bool = False, first_index: int = 0) -> Path:
    """The requests as OTLP JSON lines (what ``flywheel otlp serve --out`` writes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as out:
        for document in otlp_documents(requests, first_index=first_index):
            out.write(json.dumps(document) + "\n")
    return path


def traces_of(requests: Iterable[Request]) -> list[Trace]:
    """The requests read back as traces, through the profile's own OTLP reader."""
    text = "\n".join(json.dumps(d) for d in otlp_documents(list(requests)))
    return parse_traces(text).traces
