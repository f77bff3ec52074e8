"""Trace files in any format we read, detected from the content: OTLP JSON / JSONL (an agent's exporter, a
collector's file exporter, ``flywheel otlp serve``), the toolkit's ``all_requests_profiler_traces.json`` and
its ``standardized_data_all.csv``."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_flywheel.scaling.profiling.nat import looks_like_nat_csv, spans_from_nat_csv, spans_from_nat_request
from agent_flywheel.scaling.profiling.otlp import spans_from_otlp
from agent_flywheel.scaling.profiling.spans import Span, Trace


class TraceFormatError(ValueError):
    """A trace file cannot be read at all (as opposed to single bad records, which become ``problems``)."""


@dataclass
class TraceSet:
    """Traces read from a file, plus every record that could not be used and why."""

    traces: list[Trace]
    problems: list[str]
    source_format: str


def _group(spans: Iterable[Span], problems: list[str]) -> list[Trace]:
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    return [Trace(tid, group, problems) for tid, group in by_trace.items()]


def parse_traces(text: str, source: str = "<traces>") -> TraceSet:
    """Parse OTLP JSON / JSONL or toolkit traces (JSON or CSV) from text, detecting the format.

    Why: the same ``profile analyze`` command must accept what an agent's exporter or a collector writes (OTLP
    JSONL) and what ``nat eval`` writes, without a flag the user could get wrong.
    """
    problems: list[str] = []
    stripped = text.strip()
    if not stripped:
        raise TraceFormatError(f"{source}: the file is empty")
    if looks_like_nat_csv(stripped):
        csv_spans = spans_from_nat_csv(stripped, problems)
        if not csv_spans:
            detail = f" ({problems[0]})" if problems else ""
            raise TraceFormatError(f"{source}: no spans found{detail}")
        return TraceSet(_group(csv_spans, problems), problems, "nat-csv")
    documents: list[tuple[str, Any]] = []
    try:
        documents.append(("", json.loads(stripped)))
    except json.JSONDecodeError:
        for lineno, line in enumerate(stripped.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append((f"line {lineno}: ", json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not JSON ({exc.msg}); skipped")
        if not documents:
            raise TraceFormatError(f"{source}: neither JSON nor JSON lines") from None
    spans: list[Span] = []
    formats: set[str] = set()
    for where, doc in documents:
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                problems.append(f"{where}expected an object, got {type(item).__name__}; skipped")
            elif "intermediate_steps" in item:
                formats.add("nat")
                spans.extend(spans_from_nat_request(item, problems))
            elif "resourceSpans" in item or "scopeSpans" in item:
                formats.add("otlp")
                spans.extend(spans_from_otlp(item, problems, where))
            else:
                problems.append(f"{where}neither an OTLP document nor a toolkit request; skipped")
    if not spans:
        detail = f" ({problems[0]})" if problems else ""
        raise TraceFormatError(f"{source}: no spans found{detail}")
    return TraceSet(_group(spans, problems), problems, "+".join(sorted(formats)))


def load_traces(path: str | Path) -> TraceSet:
    """Read a trace file (OTLP JSON or JSONL, the toolkit's ``all_requests_profiler_traces.json`` or
    ``standardized_data_all.csv``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceFormatError(f"{path}: cannot read: {exc}") from None
    return parse_traces(text, str(path))
