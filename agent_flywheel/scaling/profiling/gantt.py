"""One request drawn as a Gantt chart, critical path outlined."""

from __future__ import annotations

from pathlib import Path

from agent_flywheel.scaling.profiling.critical_path import critical_path
from agent_flywheel.scaling.profiling.spans import Trace

_KIND_COLOURS = {
    "llm": "#4C72B0",
    "tool": "#55A868",
    "function": "#DD8452",
    "workflow": "#8C8C8C",
    "agent": "#8172B3",
    "chain": "#937860",
    "embedding": "#DA8BC3",
    "retriever": "#64B5CD",
    "span": "#CCB974",
}


def gantt_png(trace: Trace, path: str | Path, max_rows: int = 80) -> Path:
    """Draw one request as a Gantt chart: one bar per span, nested by the tree, critical path outlined in red.

    Why: the picture shows at a glance which calls ran in parallel and which one the workflow waited on.
    Uses matplotlib's Agg canvas directly, so it works headless and never touches pyplot's global state.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(trace.walk())[:max_rows]
    origin = trace.root.start_s
    on_path = critical_path(trace)
    row_of = {span.span_id: i for i, (span, _) in enumerate(rows)}
    height = max(2.5, 0.32 * len(rows) + 1.2)
    fig = Figure(figsize=(11, height), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (span, depth) in enumerate(rows):
        colour = _KIND_COLOURS.get(span.kind, "#999999")
        ax.barh(i, span.duration_s, left=span.start_s - origin, height=0.6, color=colour, alpha=0.85)
        label = f"{'  ' * depth}{span.name}"
        ax.text(-0.01, i, label, ha="right", va="center", fontsize=7, transform=ax.get_yaxis_transform())
        ax.text(
            span.end_s - origin, i, f" {span.duration_s:.3f}s", va="center", fontsize=6, color="#333333", clip_on=True
        )
    for seg in on_path:
        row = row_of.get(seg.span.span_id)
        if row is not None:
            ax.barh(row, seg.duration_s, left=seg.start_s - origin, height=0.6, fill=False, edgecolor="red", lw=1.4)
    ax.set_yticks([])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("seconds since the request started")
    ax.set_title(f"trace {trace.trace_id}: {trace.duration_s:.3f} s (critical path outlined in red)", fontsize=9)
    kinds = sorted({s.kind for s, _ in rows})
    ax.legend(
        handles=[Patch(color=_KIND_COLOURS.get(k, "#999999"), label=k) for k in kinds]
        + [Patch(fill=False, edgecolor="red", label="critical path")],
        loc="lower right",
        fontsize=7,
    )
    fig.subplots_adjust(left=0.28, right=0.97)
    fig.savefig(path)
    return path
