"""What each stage of the scaling lifecycle produced: small typed records a flow passes on, shows and records.

The files they name are on the machine that ran the stage; MLflow keeps copies (:mod:`tasks.scaling_tracking`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ProfileOutcome(BaseModel):
    """A profile run: counts, where the spans came from, the report's headline numbers and its files."""

    requests: int
    failed: int
    traces: int
    source: str  # otlp-receiver | traces-file | otlp-receiver+traces-file | none
    problems: list[str] = []
    summary: dict[str, Any] = {}
    markdown: str
    report_json: str | None = None
    report_md: str | None = None
    gantt_png: str | None = None
    traces_file: str | None = None


class SweepOutcome(BaseModel):
    """A load sweep: its three tables on disk, the per-level rows, and how many requests had spans."""

    requests_csv: str
    levels_csv: str
    llm_calls_csv: str
    levels: list[dict[str, Any]]
    requests: int
    errors: int
    warnings: list[str] = []
    seconds: float
    spans: dict[str, int] = {}  # requests, with_spans, without_spans, llm_calls (SpanMatch)


class SizingOutcome(BaseModel):
    """The sizing answer (``SizingResult.to_dict``, JSON-safe, with ``confirmation`` once confirmed), its report
    and its files."""

    answer: dict[str, Any]
    markdown: str
    json_path: str
    markdown_path: str
    latency_plot: str
    sizing_plot: str
    confirmation_csv: str | None = None  # the re-measurement's requests, when the answer was confirmed


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
