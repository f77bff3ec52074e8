"""The sizing plots: p95 against concurrency with the fitted model and the SLO, and the GPU answer with its interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agent_flywheel.scaling.sizing.capacity import CapacityFit
from agent_flywheel.scaling.sizing.result import SizingResult
from agent_flywheel.scaling.sizing.sweeps import normalise_columns


def latency_vs_concurrency_png(
    sweep_summary: pd.DataFrame,
    fit: CapacityFit | None,
    slo: float,
    path: str | Path,
    *,
    slo_concurrency: float | None = None,
    title: str = "p95 workflow latency vs concurrency",
) -> Path:
    """Measured p95 per level (with its interval), the fitted capacity curve, the SLO line and C*.

    ``sweep_summary`` needs ``concurrency`` and ``workflow_p95_s``; ``workflow_p95_low_s`` / ``_high_s`` draw the
    interval (a dashed line up where the data leave the p95 unbounded). Why: the picture shows whether the
    answer sits on measured ground or on the model.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = normalise_columns(sweep_summary)
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = df["concurrency"].to_numpy(dtype=float)
    y = pd.to_numeric(df["workflow_p95_s"], errors="coerce").to_numpy(dtype=float)
    ax.plot(x, y, "o", color="C0", label="measured p95")
    if "workflow_p95_low_s" in df.columns and "workflow_p95_high_s" in df.columns:
        lo = pd.to_numeric(df["workflow_p95_low_s"], errors="coerce").to_numpy(dtype=float)
        hi = pd.to_numeric(df["workflow_p95_high_s"], errors="coerce").to_numpy(dtype=float)
        known = np.isfinite(lo)
        bounded = known & np.isfinite(hi)
        ax.vlines(x[bounded], lo[bounded], hi[bounded], color="C0", alpha=0.6, label="p95 interval")
        if (known & ~bounded).any():  # too few requests to bound the p95 from above: a dashed line upwards
            top = np.nanmax(np.concatenate([y[np.isfinite(y)], lo[known], [slo]])) * 1.3
            unbounded = known & ~bounded
            ax.vlines(x[unbounded], lo[unbounded], top, color="C0", alpha=0.6, ls="--", label="no upper bound")
    if fit is not None and len(x):
        grid = np.geomspace(max(x.min(), 1e-3), x.max() * 1.5, 200)
        ax.plot(grid, fit.predict(grid), "-", color="C1", label=f"capacity model (knee {fit.knee:.1f})")
    ax.axhline(slo, color="red", ls="--", label=f"SLO p95 {slo:g} s")
    if slo_concurrency is not None:
        ax.axvline(slo_concurrency, color="green", ls=":", label=f"C* ≈ {slo_concurrency:.1f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent workflows")
    ax.set_ylabel("p95 latency (s)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def sizing_png(result: SizingResult, path: str | Path) -> Path:
    """The GPU answer with its interval (and C* with its interval), for reports and MLflow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if not result.reachable or result.gpus is None or result.slo_concurrency is None:
        for ax in (ax1, ax2):
            ax.axis("off")
        ax1.text(0, 0.5, "\n".join(_wrap(result.reason, 60)), fontsize=9, va="center")
    else:
        c, cl, ch = result.slo_concurrency, result.slo_concurrency_low, result.slo_concurrency_high
        ax1.errorbar(
            [0],
            [c],
            yerr=[[c - (cl if cl is not None else c)], [(ch if ch is not None else c) - c]],
            fmt="o",
            capsize=6,
        )
        ax1.set_xticks([0], ["C*"])
        ax1.set_ylabel("concurrent workflows per test system")
        ax1.set_title(("C* ≥ " if result.slo_concurrency_is_lower_bound else "C* = ") + f"{c:.1f}", fontsize=9)
        g = result.gpus
        lo = result.gpus_low if result.gpus_low is not None else g
        hi = result.gpus_high if result.gpus_high is not None else g
        ax2.bar([0], [g], color="C2", alpha=0.8)
        ax2.errorbar([0], [g], yerr=[[g - lo], [hi - g]], fmt="none", ecolor="black", capsize=8)
        ax2.set_xticks([0], [f"{result.targets['target_users']} users"])
        ax2.set_ylabel("GPUs")
        ax2.set_title(f"{g} GPUs ({result.interval_text(result.gpus_low, result.gpus_high, 'd')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return lines


def plot_all(result: SizingResult, directory: str | Path) -> dict[str, Path]:
    """Both sizing plots into a directory (names: ``latency_vs_concurrency.png``, ``sizing.png``)."""
    directory = Path(directory)
    return {
        "latency_vs_concurrency": latency_vs_concurrency_png(
            result.levels_frame(),
            result.fit,
            float(result.targets["target_workflow_p95_s"]),
            directory / "latency_vs_concurrency.png",
            slo_concurrency=result.slo_concurrency,
        ),
        "sizing": sizing_png(result, directory / "sizing.png"),
    }
