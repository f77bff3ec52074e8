"""Collecting a profile's traces: the documents a receiver got, topped up from the agent's spans file.

Why both: the profile points the agent's exporter at its own receiver, but an agent that cannot be re-pointed
(or spans that arrive late) may still have written them to a file this machine can read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_flywheel.config import ProfileConfig
from agent_flywheel.scaling.profiling.otlp import spans_from_otlp
from agent_flywheel.scaling.profiling.spans import Span, Trace


def read_new_lines(path: Path | None, offset: int) -> list[dict[str, Any]]:
    """The OTLP JSON documents appended to a JSONL spans file after byte ``offset`` (unreadable lines skipped)."""
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


def doc_trace_ids(doc: Mapping[str, Any]) -> set[str]:
    """The trace ids of the usable spans of one OTLP document."""
    return {s.trace_id for s in spans_from_otlp(doc, [], "")}


def traces_of(docs: Sequence[Mapping[str, Any]], wanted: set[str] | None, problems: list[str]) -> list[Trace]:
    """The traces in ``docs`` (only those in ``wanted`` when given), spans grouped by trace id."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for i, doc in enumerate(docs):
        for span in spans_from_otlp(doc, problems, f"document {i}: "):
            if wanted is None or span.trace_id in wanted:
                by_trace[span.trace_id].append(span)
    return [Trace(tid, spans, problems) for tid, spans in by_trace.items()]


def profile_timeout_s(cfg: ProfileConfig, request_timeout_s: float = 60.0, slack_s: float = 60.0) -> float:
    """An upper bound on a profile's duration: every request timing out, plus the wait for spans and slack."""
    return cfg.num_requests * request_timeout_s + slack_s
