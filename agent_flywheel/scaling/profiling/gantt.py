"""One request drawn as a Gantt chart, critical path outlined."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent_flywheel.scaling.profiling.critical_path import critical_path
from agent_flywheel.scaling.profiling.spans import Trace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
#: Longer span names are cut (with an ellipsis) so the chart keeps room for the bars.
MAX_LABEL_CHARS = 64


def _label(name: str, depth: int) -> str:
    """A row label: the span's name, indented by its depth in the tree (``└`` marks a child)."""
    text = name if len(name) <= MAX_LABEL_CHARS else name[: MAX_LABEL_CHARS - 1] + "…"
    return f"{'   ' * (depth - 1)}└ {text}" if depth else text


def gantt_png(trace: Trace, path: str | Path, max_rows: int = 80) -> Path:
    """Draw one request as a Gantt chart (:func:`gantt_figure`) into a PNG file.

    Why: the picture shows at a glance which calls ran in parallel and which one the workflow waited on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gantt_figure(trace, max_rows).savefig(path)
    return path


def gantt_figure(trace: Trace, max_rows: int = 80) -> Figure:
    """One bar per span, nested by the tree, critical path outlined in red.

    Uses matplotlib's Agg canvas directly, so it works headless and never touches pyplot's global state.
    The layout is constrained: the labels (left-aligned, indented by depth), the axis title and the legend
    below the chart get the room they need, whatever the span names.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows = list(trace.walk())[:max_rows]
    origin = trace.root.start_s
    on_path = critical_path(trace)
    row_of = {span.span_id: i for i, (span, _) in enumerate(rows)}
    height = max(2.8, 0.32 * len(rows) + 1.6)
    fig = Figure(figsize=(12, height), dpi=110, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (span, _) in enumerate(rows):
        colour = _KIND_COLOURS.get(span.kind, "#999999")
        ax.barh(i, span.duration_s, left=span.start_s - origin, height=0.6, color=colour, alpha=0.85)
        ax.text(span.end_s - origin, i, f" {span.duration_s:.3f}s", va="center", fontsize=6, color="#333333")
    for seg in on_path:
        row = row_of.get(seg.span.span_id)
        if row is not None:
            ax.barh(row, seg.duration_s, left=seg.start_s - origin, height=0.6, fill=False, edgecolor="red", lw=1.4)
    ax.set_yticks(range(len(rows)), [_label(span.name, depth) for span, depth in rows], fontsize=7)
    ax.tick_params(axis="y", length=0)
    # Left-aligned labels read as a tree; the pad that keeps them clear of the axis is their widest one.
    renderer = canvas.get_renderer()
    widest = max((label.get_window_extent(renderer).width for label in ax.get_yticklabels()), default=0.0)
    ax.tick_params(axis="y", pad=widest * 72.0 / fig.dpi + 4)
    for label in ax.get_yticklabels():
        label.set_horizontalalignment("left")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, max(trace.duration_s, 1e-9) * 1.12)  # room for the last duration label
    ax.set_xlabel("seconds since the request started")
    ax.set_title(f"trace {trace.trace_id}: {trace.duration_s:.3f} s (critical path outlined in red)", fontsize=9)
    kinds = sorted({s.kind for s, _ in rows})
    fig.legend(
        handles=[Patch(color=_KIND_COLOURS.get(k, "#999999"), label=k) for k in kinds]
        + [Patch(fill=False, edgecolor="red", label="critical path")],
        loc="outside lower center",
        ncols=len(kinds) + 1,
        fontsize=7,
        frameon=False,
    )
    return fig
