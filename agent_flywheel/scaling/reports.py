"""The markdown and tables the scaling flows show as Prefect artifacts, with links into MLflow."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from agent_flywheel.scaling.outcomes import ProfileOutcome, RolloutOutcome, SizingOutcome, SweepOutcome

SWEEP_TABLE_COLUMNS = (
    "concurrency",
    "rate_rps",
    "passes",
    "requests",
    "error_rate",
    "throughput_rps",
    "workflow_p50_s",
    "workflow_p95_s",
    "workflow_p99_s",
    "llm_p50_s",
    "llm_p95_s",
    "llm_p99_s",
    "late_share",
    "warnings",
)


def artifact_url(ui_url: str | None, run_id: str, path: str) -> str | None:
    """A direct link to one file of an MLflow run, served by the MLflow UI (None without a UI).

    Why: Prefect artifacts can show images only by URL; the MLflow server serves run files at
    ``/get-artifact``, so the Gantt and sizing PNGs are shown from there.
    """
    if not ui_url:
        return None
    return f"{ui_url.rstrip('/')}/get-artifact?path={quote(path)}&run_uuid={run_id}"


def image_markdown(ui_url: str | None, run_id: str, path: str, title: str) -> str:
    """An image of an MLflow run embedded by URL, or where to find it when there is no UI to serve it."""
    url = artifact_url(ui_url, run_id, path)
    if url is None:
        return f"{title}: `{path}` in the MLflow run."
    return f"![{title}]({url})\n\n[{title} (PNG)]({url})"


def run_link(run_id: str, url: str) -> str:
    """Markdown link to an MLflow run."""
    return f"[MLflow run `{run_id[:8]}`]({url})"


def profile_markdown(outcome: ProfileOutcome, link: str, gantt: str) -> str:
    """The ``profile-report`` artifact: the profile report, a link to the MLflow run and the Gantt chart."""
    head = f"{outcome.requests} requests ({outcome.failed} failed), spans from {outcome.source}. {link}\n\n"
    return head + outcome.markdown + ("\n" + gantt + "\n" if outcome.traces else "")


def sizing_markdown(outcome: SizingOutcome, link: str, plots: list[str]) -> str:
    """The ``sizing-report`` artifact: the answer with its interval, the per-level table, the plots, the link."""
    return outcome.markdown + f"\n{link}\n\n" + "\n\n".join(plots) + "\n"


def sweep_table(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """The ``load-sweep`` table artifact: one row per level."""
    return [{k: row.get(k) for k in SWEEP_TABLE_COLUMNS if k in row} for row in outcome.levels]


def rollout_markdown(outcome: RolloutOutcome, canary: str, baseline: str, link: str) -> str:
    """The ``rollout-report`` artifact: the models, the counts, an early stop, the link, then the report."""
    early = f" Stage `{outcome.stopped_early}` was cut short by a rollback alarm." if outcome.stopped_early else ""
    head = (
        f"Canary `{canary}` vs baseline `{baseline}`: {outcome.requests} requests, "
        f"{outcome.canary_requests} on the canary.{early} {link}\n\n"
    )
    return head + outcome.markdown
