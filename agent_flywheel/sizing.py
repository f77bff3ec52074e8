"""Sizing: from a load sweep to the largest concurrency that meets the latency SLO, and GPUs with an interval.

The method, and why it differs from the NeMo Agent Toolkit's ``nat sizing calc``:

1. **Measured bracketing.** Per level, p95 of workflow latency (failed or timed-out requests count as
   infinitely slow: they did not meet any target) and optionally p95 of LLM-call latency. The answer lies
   between the highest level that meets the target below the first level that fails and that failing
   level. Levels above the first failure that pass again are reported as noise and not trusted. The
   toolkit instead fits one straight line through all levels after IQR outlier removal, which tends to
   delete the knee — the very points that decide the answer.
2. **Interpolation inside the bracket with a capacity model.** We fit the asymptotic-bounds model of a
   closed system, ``R(N) = max(D, N/X - Z)``, written as the hinge ``D + s·max(0, N - K)`` (``X = 1/s``,
   knee ``K``, ``Z = s·K - D``), by weighted least squares on relative error with a grid search over the
   knee. Inside the bracket we interpolate in the model's shape but anchored at the two measured points,
   so the answer always honours the measurements; if the model is flat across the bracket we interpolate
   ``log p95`` linearly. No point is ever dropped as an outlier.
3. **Unreachable is an answer.** If the lowest level already misses the target: ``reachable=False`` with the
   reason. If every level meets it, C* is *at least* the highest level (used for the GPU count, so the GPU
   count is an upper bound); the capacity model's extrapolation is reported separately and flagged.
4. **GPUs in whole replicas.** ``replicas = ceil(target_users / floor(C*))``, ``GPUs = replicas × test_gpus``:
   a replica serves a whole number of concurrent users, so an interpolated C* of 10.6 means that 10 fit
   (11 miss the target); dividing by 10.6 would place 11 users on some replicas.
5. **Bootstrap interval.** Resample passes within each level, then requests within each chosen pass; recompute
   every level's p95, the fit, C* and the GPU count; report the percentile interval at the configured
   confidence. With per-level input (no per-request samples) no interval exists and low = high = point.

Throughput at the SLO is interpolated between the bracket's measured throughputs (or from Little's law,
``X = N / mean R``, in a closed loop without think time); cost per 1,000 workflows is
``price_per_gpu_hour × test_gpus / (X × 3600) × 1000``, the cost when each replica runs at C*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from agent_flywheel.config import SizingTargets

Metric = Literal["workflow", "llm"]


class SweepFormatError(ValueError):
    """A sweep file or table cannot be used; the message says what is missing or wrong."""


# --------------------------------------------------------------------------------------------------
# Quantiles that tolerate failures (inf)
# --------------------------------------------------------------------------------------------------


def quantile_with_failures(values: np.ndarray, q: float, axis: int = -1) -> np.ndarray:
    """Linear-interpolated quantile (numpy's default method) where ``inf`` marks a failed request.

    Why: numpy's interpolation between a finite value and ``inf`` can give NaN; here any interpolation that
    touches a failure is a failure (``inf``), so "more than 5 % failed" means "p95 not met".
    """
    arr = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = arr.shape[axis]
    if n == 0:
        return np.full(np.delete(arr.shape, axis), np.nan) if arr.ndim > 1 else np.array(np.nan)
    h = (n - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    a = np.take(arr, lo, axis=axis)
    b = np.take(arr, hi, axis=axis)
    with np.errstate(invalid="ignore"):
        lerp = a + (b - a) * frac
    if frac == 0:
        return np.asarray(a)
    return np.where(np.isinf(b) | np.isinf(a), np.inf, lerp)


# --------------------------------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------------------------------


@dataclass
class LevelData:
    """One concurrency level: per-pass raw samples, or only the level's p95 values."""

    concurrency: float
    workflow: list[np.ndarray] = field(default_factory=list)  # per pass, inf = failed request
    llm: list[np.ndarray] = field(default_factory=list)  # per pass, LLM latencies
    workflow_p95_s: float | None = None  # given directly (per-level input)
    llm_p95_s: float | None = None
    throughput_rps: float | None = None

    @property
    def has_samples(self) -> bool:
        """True when per-request samples exist (a bootstrap is possible)."""
        return any(len(p) for p in self.workflow)

    def p95(self, metric: Metric) -> float | None:
        """Point p95 of the metric at this level (None when the metric was not measured)."""
        if metric == "workflow":
            if self.has_samples:
                return float(quantile_with_failures(np.concatenate(self.workflow), 0.95))
            return self.workflow_p95_s
        if any(len(p) for p in self.llm):
            return float(quantile_with_failures(np.concatenate(self.llm), 0.95))
        return self.llm_p95_s


@dataclass
class SweepData:
    """The measured latency curve: levels sorted by concurrency, plus notes on rows that were not used."""

    levels: list[LevelData]
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.levels.sort(key=lambda lv: lv.concurrency)
        if not self.levels:
            raise SweepFormatError("the sweep has no levels")

    @property
    def concurrencies(self) -> np.ndarray:
        """The measured concurrency levels, ascending."""
        return np.array([lv.concurrency for lv in self.levels], dtype=float)

    @property
    def has_samples(self) -> bool:
        """True when every level has per-request samples."""
        return all(lv.has_samples for lv in self.levels)

    @property
    def has_llm(self) -> bool:
        """True when every level has an LLM latency measurement."""
        return all(lv.p95("llm") is not None for lv in self.levels)

    # constructors ------------------------------------------------------------------------------
    @classmethod
    def from_requests_frame(cls, frame: pd.DataFrame) -> SweepData:
        """Per-request rows: ``concurrency, workflow_latency_s[, llm_latency_s, pass, ok, sent_s]``.

        Rows with ``ok`` false count as failures (infinitely slow). Rows whose latency is missing or negative
        are not used and are counted in ``notes``; open-loop rows (no concurrency) are ignored, with a note.
        """
        df = _normalise_columns(frame)
        _require(df, ["concurrency", "workflow_latency_s"])
        notes: list[str] = []
        if "mode" in df.columns:
            open_rows = int((df["mode"].astype(str) == "open").sum())
            if open_rows:
                notes.append(f"{open_rows} open-loop rows ignored (sizing uses the closed-loop concurrency sweep)")
            df = df[df["mode"].astype(str) != "open"]
        conc = _numeric(df["concurrency"], "concurrency")
        lat = _numeric(df["workflow_latency_s"], "workflow_latency_s", allow_nan=True)
        ok = _booleans(df["ok"]) if "ok" in df.columns else pd.Series(True, index=df.index)
        bad = (~ok) | lat.isna()
        bad_latency = lat.isna() & ok
        if (lat.dropna() < 0).any():
            raise SweepFormatError("workflow_latency_s has negative values")
        if bad_latency.any():
            notes.append(f"{int(bad_latency.sum())} rows without workflow_latency_s counted as failed requests")
        if conc.isna().any() or (conc <= 0).any():
            raise SweepFormatError("concurrency must be a positive number on every row")
        workflow = lat.where(~bad, np.inf)
        llm = (
            _numeric(df["llm_latency_s"], "llm_latency_s", allow_nan=True)
            if "llm_latency_s" in df.columns
            else pd.Series(np.nan, index=df.index)
        )
        passes = df["pass"] if "pass" in df.columns else pd.Series(0, index=df.index)
        sent = _numeric(df["sent_s"], "sent_s", allow_nan=True) if "sent_s" in df.columns else None
        levels: list[LevelData] = []
        for c in sorted(conc.unique()):
            mask = conc == c
            level = LevelData(concurrency=float(c))
            windows = 0.0
            completed = 0
            for p in sorted(passes[mask].unique(), key=str):
                pm = mask & (passes == p)
                level.workflow.append(workflow[pm].to_numpy(dtype=float))
                level.llm.append(llm[pm & llm.notna()].to_numpy(dtype=float))
                if sent is not None and sent[pm].notna().all():
                    ends = sent[pm] + lat[pm].fillna(0.0)
                    windows += float(ends.max() - sent[pm].min())
                    completed += int((pm & ~bad).sum())
            samples = np.concatenate(level.workflow)
            finite = samples[np.isfinite(samples)]
            if windows > 0:
                level.throughput_rps = completed / windows
            elif len(finite):  # Little's law in a closed loop without think time
                level.throughput_rps = float(c) / float(finite.mean()) * len(finite) / len(samples)
            levels.append(level)
        return cls(levels, notes)

    @classmethod
    def from_levels_frame(cls, frame: pd.DataFrame) -> SweepData:
        """Per-level rows: ``concurrency, workflow_p95_s[, llm_p95_s, throughput_rps, error_rate]``.

        A level whose ``error_rate`` exceeds 5 % cannot meet a p95 target, so its p95 is taken as infinite.
        """
        df = _normalise_columns(frame)
        _require(df, ["concurrency", "workflow_p95_s"])
        notes: list[str] = []
        if "mode" in df.columns:
            df = df[df["mode"].astype(str) != "open"]
        conc = _numeric(df["concurrency"], "concurrency")
        if conc.isna().any() or (conc <= 0).any():
            raise SweepFormatError("concurrency must be a positive number on every row")
        dupes = sorted({float(c) for c in conc[conc.duplicated()]})
        if dupes:
            raise SweepFormatError(f"concurrency {dupes[0]:g} appears on more than one row of a per-level sweep")
        p95 = _numeric(df["workflow_p95_s"], "workflow_p95_s", allow_nan=True)
        llm = _numeric(df["llm_p95_s"], "llm_p95_s", allow_nan=True) if "llm_p95_s" in df.columns else None
        thr = (
            _numeric(df["throughput_rps"], "throughput_rps", allow_nan=True) if "throughput_rps" in df.columns else None
        )
        err = _numeric(df["error_rate"], "error_rate", allow_nan=True) if "error_rate" in df.columns else None
        levels = []
        for idx in df.index:
            w = float(p95[idx])
            if math.isnan(w):
                w = math.inf
                notes.append(f"concurrency {conc[idx]:g}: no workflow_p95_s (no successful request); not met")
            if err is not None and not math.isnan(float(err[idx])) and float(err[idx]) > 0.05:
                notes.append(f"concurrency {conc[idx]:g}: error rate {float(err[idx]):.1%} > 5%; p95 target not met")
                w = math.inf
            if w < 0:
                raise SweepFormatError("workflow_p95_s has negative values")
            lv = LevelData(concurrency=float(conc[idx]), workflow_p95_s=w)
            if llm is not None and not math.isnan(float(llm[idx])):
                lv.llm_p95_s = float(llm[idx])
            if thr is not None and not math.isnan(float(thr[idx])):
                lv.throughput_rps = float(thr[idx])
            levels.append(lv)
        return cls(levels, notes)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SweepData:
        """Per-request or per-level, whichever the columns say."""
        cols = set(_normalise_columns(frame).columns)
        if "workflow_latency_s" in cols:
            return cls.from_requests_frame(frame)
        if "workflow_p95_s" in cols:
            return cls.from_levels_frame(frame)
        raise SweepFormatError(
            "a sweep needs a concurrency column and either workflow_latency_s (one row per request) "
            f"or workflow_p95_s (one row per level); found {', '.join(sorted(cols)) or 'no columns'}"
        )

    @classmethod
    def from_sweep(cls, sweep: Any) -> SweepData:
        """From a :class:`agent_flywheel.loadgen.SweepResult`: per-request rows plus every LLM call."""
        data = cls.from_requests_frame(sweep.requests_frame())
        calls = sweep.llm_calls_frame()
        calls = calls[calls["mode"] == "closed"]
        for level in data.levels:
            sel = calls[calls["concurrency"] == level.concurrency]
            level.llm = [g["latency_s"].to_numpy(dtype=float) for _, g in sel.groupby("pass")] if len(sel) else []
        return data


def _normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    df = frame.copy()
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def _require(df: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise SweepFormatError(f"missing column(s): {', '.join(missing)}")
    if df.empty:
        raise SweepFormatError("the sweep has no rows")


def _numeric(col: pd.Series, name: str, allow_nan: bool = False) -> pd.Series:
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        first = col[bad].iloc[0]
        raise SweepFormatError(f"column {name}: {first!r} is not a number")
    if not allow_nan and values.isna().any():
        raise SweepFormatError(f"column {name} has empty cells")
    return values.astype(float)


def _booleans(col: pd.Series) -> pd.Series:
    def parse(v: Any) -> bool:
        if isinstance(v, bool | np.bool_):
            return bool(v)
        text = str(v).strip().lower()
        if text in ("true", "1", "yes", "ok", "1.0"):
            return True
        if text in ("false", "0", "no", "error", "0.0", "nan", ""):
            return False
        raise SweepFormatError(f"column ok: {v!r} is not true/false")

    return col.map(parse).astype(bool)


def read_sweep_csv(path: str | Path) -> SweepData:
    """Read a sweep CSV (per request or per level, see :meth:`SweepData.from_frame`)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise SweepFormatError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise SweepFormatError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    try:
        return SweepData.from_frame(frame)
    except SweepFormatError as exc:
        raise SweepFormatError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Capacity model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapacityFit:
    """``R(N) = max(D, N/X - Z)`` fitted to p95 latency, as the hinge ``D + s·max(0, N - K)``."""

    d_s: float  # latency floor (p95 at low load)
    slope_s: float  # s = 1/X: seconds of p95 per extra concurrent workflow past the knee
    knee: float  # K: the concurrency where queueing starts
    r_squared: float  # on relative (log-like) scale
    saturated: bool  # True when the knee lies inside the measured range

    @property
    def x_max_rps(self) -> float | None:
        """Bottleneck throughput implied by the slope (workflows/s), None when no saturation was measured."""
        return 1.0 / self.slope_s if self.slope_s > 0 else None

    @property
    def z_s(self) -> float | None:
        """The model's ``Z`` (think-time-like offset): ``s·K - D``."""
        return self.slope_s * self.knee - self.d_s if self.slope_s > 0 else None

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        """Model p95 at concurrency ``n``."""
        arr = np.asarray(n, dtype=float)
        return self.d_s + self.slope_s * np.maximum(0.0, arr - self.knee)

    def inverse(self, target_s: float) -> float | None:
        """Concurrency at which the model reaches ``target_s`` (None if flat or below the floor)."""
        if target_s < self.d_s or self.slope_s <= 0:
            return None
        return self.knee + (target_s - self.d_s) / self.slope_s

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "model": "R(N) = max(D, N/X - Z)",
            "d_s": self.d_s,
            "x_max_rps": self.x_max_rps,
            "z_s": self.z_s,
            "knee": self.knee,
            "slope_s": self.slope_s,
            "r_squared": self.r_squared,
            "saturated": self.saturated,
        }


def fit_capacity(concurrency: Sequence[float] | np.ndarray, p95_s: Sequence[float] | np.ndarray) -> CapacityFit | None:
    """Fit the hinge model by weighted least squares on relative error, grid-searching the knee.

    Why: latency against concurrency is flat, then linear with slope 1/X_max past saturation (operational laws
    of a closed system); a straight line through both regimes misplaces C*. Weights ``1/p95²`` make the fit
    care about relative error, so the low-latency points are not drowned by the large ones. Failed levels
    (infinite p95) are left out of the fit, never out of the bracketing.
    """
    x = np.asarray(concurrency, dtype=float)
    y = np.asarray(p95_s, dtype=float)
    keep = np.isfinite(y) & (y > 0)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return None
    w = 1.0 / y**2
    grid = np.unique(np.concatenate([x, np.geomspace(x.min(), x.max(), 64)]))
    h = np.maximum(0.0, x[None, :] - grid[:, None])  # (G, L)
    sw, sy = w.sum(), (w * y).sum()
    sh, shh, shy = (w * h).sum(1), (w * h * h).sum(1), (w * h * y).sum(1)
    det = sw * shh - sh**2
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(det > 1e-12, (sw * shy - sh * sy) / det, 0.0)
    s = np.maximum(s, 0.0)
    d = (sy - s * sh) / sw
    sse = (w * (y[None, :] - d[:, None] - s[:, None] * h) ** 2).sum(1)
    best = int(np.argmin(sse + 1e-12 * grid))  # ties: the smaller knee
    d_b, s_b, k_b = float(d[best]), float(s[best]), float(grid[best])
    mean_w = sy / sw
    sst = float((w * (y - mean_w) ** 2).sum())
    r2 = 1.0 - float(sse[best]) / sst if sst > 0 else 1.0
    saturated = s_b > 0 and k_b < x.max() and (x > k_b).sum() >= 1
    return CapacityFit(d_b, s_b, k_b, r2, bool(saturated))


# --------------------------------------------------------------------------------------------------
# Bracketing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    """Where one metric's p95 curve crosses its target."""

    status: Literal["bracketed", "unreachable", "lower_bound"]
    concurrency: float  # 0 when unreachable, the highest level when lower_bound
    bracket: tuple[float, float] | None
    method: str
    extrapolated: float | None = None
    noisy_levels: tuple[float, ...] = ()


def find_crossing(x: np.ndarray, y: np.ndarray, target_s: float, fit: CapacityFit | None) -> Crossing:
    """The largest concurrency meeting ``target_s``, by bracketing on the measured points.

    The bracket is the first failing level and the level just below it; inside it we interpolate in the
    capacity model's shape anchored at both measured points (log-linear when the model is flat there).
    """
    meets = y <= target_s
    if not meets[0]:
        return Crossing("unreachable", 0.0, None, "none")
    failing = np.flatnonzero(~meets)
    if len(failing) == 0:
        extra = fit.inverse(target_s) if (fit is not None and fit.saturated) else None
        return Crossing(
            "lower_bound",
            float(x[-1]),
            None,
            "all levels meet the target",
            extrapolated=extra if extra is not None and extra > x[-1] else None,
        )
    f = int(failing[0])
    noisy = tuple(float(v) for v in x[f + 1 :][meets[f + 1 :]])
    x_lo, x_hi, y_lo, y_hi = float(x[f - 1]), float(x[f]), float(y[f - 1]), float(y[f])
    c: float | None = None
    method = "capacity-model shape"
    if fit is not None:
        m_lo, m_hi = float(fit.predict(x_lo)), float(fit.predict(x_hi))
        if m_hi > m_lo * (1 + 1e-9) and math.isfinite(y_hi):
            m_target = m_lo + (target_s - y_lo) / (y_hi - y_lo) * (m_hi - m_lo)
            inv = fit.inverse(m_target)
            if inv is not None:
                c = min(max(inv, x_lo), x_hi)
    if c is None:
        if math.isfinite(y_hi) and y_lo > 0:
            method = "log-linear"
            frac = (math.log(target_s) - math.log(y_lo)) / (math.log(y_hi) - math.log(y_lo))
            c = x_lo + frac * (x_hi - x_lo)
        else:
            method = "lower bracket end (the failing level had too many failures to interpolate)"
            c = x_lo
    return Crossing("bracketed", float(c), (x_lo, x_hi), method, noisy_levels=noisy)


# --------------------------------------------------------------------------------------------------
# The NeMo Agent Toolkit's straight-line method (for comparison)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NatLinearEstimate:
    """What ``nat sizing calc`` would answer: C* and (fractional) GPUs from a straight line, or its error."""

    slope: float | None
    intercept: float | None
    r_squared: float | None
    outliers_removed: list[float]
    slo_concurrency: float | None
    gpus: float | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "r_squared": self.r_squared,
            "outliers_removed": self.outliers_removed,
            "slo_concurrency": self.slo_concurrency,
            "gpus": self.gpus,
            "error": self.error,
        }


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    n = len(x)
    sx, sy, sxy, sxx = x.sum(), y.sum(), (x * y).sum(), (x * x).sum()
    slope = (n * sxy - sx * sy) / (n * sxx - sx**2)
    return float(slope), float((sy - slope * sx) / n)


def nat_linear_estimate(
    concurrencies: Sequence[float],
    p95_s: Sequence[float],
    target_s: float,
    target_users: int,
    test_gpus: int,
    *,
    remove_outliers: bool = True,
    small_range_threshold: int = 8,
    extreme_iqr: float = 2.0,
    residual_iqr: float = 1.5,
    min_r_squared: float = 0.7,
) -> NatLinearEstimate:
    """The toolkit's estimate, re-implemented from its documented maths, for benchmarks against ours.

    With more than 4 points: if at most 8, drop points whose raw p95 is outside ``[Q1 - 2·IQR, Q3 + 2·IQR]``;
    then always drop points whose OLS residual is outside ``[Q1 - 1.5·IQR, Q3 + 1.5·IQR]`` (quartiles by linear
    interpolation). Closed-form OLS; R² < 0.7 means no estimate. ``C* = (T - intercept) / slope`` (error if
    ``T <= intercept`` or ``C* <= 0``) and ``GPUs = target_users / C* × test_gpus``, unrounded. Where the
    toolkit raises, this returns the message in ``error``.
    """
    x = np.asarray(concurrencies, dtype=float)
    y = np.asarray(p95_s, dtype=float)
    if len(x) != len(y) or len(x) < 2:
        return NatLinearEstimate(None, None, None, [], None, None, "need at least 2 points of equal length")
    removed: list[float] = []
    if remove_outliers and len(x) > 4:
        if len(x) <= small_range_threshold:
            q1, q3 = np.percentile(y, 25), np.percentile(y, 75)
            iqr = q3 - q1
            keep = (y >= q1 - extreme_iqr * iqr) & (y <= q3 + extreme_iqr * iqr)
            removed += x[~keep].tolist()
            x, y = x[keep], y[keep]
        if len(x) == 0:
            return NatLinearEstimate(None, None, None, removed, None, None, "no points left after outlier removal")
        slope, intercept = _ols(x, y)
        resid = y - (slope * x + intercept)
        q1, q3 = np.percentile(resid, 25), np.percentile(resid, 75)
        iqr = q3 - q1
        keep = (resid >= q1 - residual_iqr * iqr) & (resid <= q3 + residual_iqr * iqr)
        removed += x[~keep].tolist()
        x, y = x[keep], y[keep]
    if len(x) < 2 or len(np.unique(x)) < 2:
        return NatLinearEstimate(None, None, None, removed, None, None, "fewer than 2 distinct points to fit")
    slope, intercept = _ols(x, y)
    pred = slope * x + intercept
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    r2 = 1 - ss_res / ss_tot if ss_tot != 0 else 0.0
    if r2 < min_r_squared:
        return NatLinearEstimate(
            slope, intercept, r2, removed, None, None, f"Poor linear fit detected (R² = {r2:.3f} < {min_r_squared})"
        )
    if target_s <= intercept:
        return NatLinearEstimate(
            slope,
            intercept,
            r2,
            removed,
            None,
            None,
            f"Target time metric ({target_s}) must be greater than the intercept ({intercept})",
        )
    c = (target_s - intercept) / slope
    if c <= 0:
        return NatLinearEstimate(
            slope, intercept, r2, removed, None, None, f"Calculated target concurrency ({c}) is not positive"
        )
    return NatLinearEstimate(slope, intercept, r2, removed, float(c), target_users / c * test_gpus, None)


# --------------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------------


@dataclass
class SizingResult:
    """The answer: C*, GPUs with an interval, reachability with its reason, throughput and cost at the SLO."""

    reachable: bool
    reason: str
    slo_concurrency: float | None
    slo_concurrency_low: float | None
    slo_concurrency_high: float | None
    slo_concurrency_is_lower_bound: bool
    extrapolated_slo_concurrency: float | None
    binding_metric: Metric | None
    bracket: tuple[float, float] | None
    interpolation: str
    replicas: int | None
    gpus: int | None
    gpus_low: int | None
    gpus_high: int | None
    throughput_at_slo_rps: float | None
    cost_per_1k_workflows: float | None
    fit: CapacityFit | None
    levels: list[dict[str, Any]]
    targets: dict[str, Any]
    confidence: float
    bootstrap_samples: int
    unreachable_share: float
    nat_linear: NatLinearEstimate | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``sizing calc --json``)."""
        return {
            "reachable": self.reachable,
            "reason": self.reason,
            "slo_concurrency": self.slo_concurrency,
            "slo_concurrency_low": self.slo_concurrency_low,
            "slo_concurrency_high": self.slo_concurrency_high,
            "slo_concurrency_is_lower_bound": self.slo_concurrency_is_lower_bound,
            "extrapolated_slo_concurrency": self.extrapolated_slo_concurrency,
            "binding_metric": self.binding_metric,
            "bracket": list(self.bracket) if self.bracket else None,
            "interpolation": self.interpolation,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "gpus_low": self.gpus_low,
            "gpus_high": self.gpus_high,
            "throughput_at_slo_rps": self.throughput_at_slo_rps,
            "cost_per_1k_workflows": self.cost_per_1k_workflows,
            "fit": self.fit.to_dict() if self.fit else None,
            "levels": self.levels,
            "targets": self.targets,
            "confidence": self.confidence,
            "bootstrap_samples": self.bootstrap_samples,
            "unreachable_share": self.unreachable_share,
            "nat_linear": self.nat_linear.to_dict() if self.nat_linear else None,
            "notes": self.notes,
        }

    def levels_frame(self) -> pd.DataFrame:
        """The per-level table the plots and reports use."""
        return pd.DataFrame(self.levels)

    def to_markdown(self) -> str:
        """A short human-readable answer with the per-level table."""

        def f(v: float | None, spec: str = ".2f") -> str:
            return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)

        lines = ["# Sizing", ""]
        if self.reachable:
            bound = "≥ " if self.slo_concurrency_is_lower_bound else ""
            lines.append(
                f"**C\\* = {bound}{f(self.slo_concurrency)}** concurrent workflows per {self.targets['test_gpus']} "
                f"GPU(s) (interval {f(self.slo_concurrency_low)}–{f(self.slo_concurrency_high)}); "
                f"{_whole(self.slo_concurrency)} users per replica: "
                f"**{self.gpus} GPUs** for {self.targets['target_users']} users "
                f"(interval {self.gpus_low}–{self.gpus_high if self.gpus_high is not None else '∞'}, "
                f"{self.confidence:.0%})."
            )
        else:
            lines.append(f"**Not reachable.** {self.reason}")
        lines += ["", self.reason if self.reachable else "", ""]
        if self.throughput_at_slo_rps is not None:
            lines.append(f"Throughput at the SLO: {self.throughput_at_slo_rps:.3f} workflows/s per test system.")
        if self.cost_per_1k_workflows is not None:
            lines.append(f"Cost: ${self.cost_per_1k_workflows:.4f} per 1,000 workflows.")
        lines += [
            "",
            "| concurrency | workflow p95 s | interval | LLM p95 s | throughput /s | meets |",
            "| ---: | ---: | --- | ---: | ---: | :---: |",
        ]
        for lv in self.levels:
            lines.append(
                f"| {lv['concurrency']:g} | {f(lv['workflow_p95_s'], '.3f')} | "
                f"{f(lv['workflow_p95_low_s'], '.3f')}–{f(lv['workflow_p95_high_s'], '.3f')} | "
                f"{f(lv['llm_p95_s'], '.3f')} | {f(lv['throughput_rps'], '.3f')} | {'yes' if lv['meets_target'] else 'no'} |"
            )
        if self.notes:
            lines += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"


def users_per_replica(c_star: float) -> float:
    """How many users one replica serves under the SLO: C* rounded down to whole users (a C* of 10.6 means
    that 11 users miss the target); below one user, C* itself."""
    return math.floor(c_star + 1e-9) if c_star >= 1 else c_star


def _whole(c_star: float | None) -> str:
    """:func:`users_per_replica` as text ("22", or "0.5" below one user)."""
    return "—" if c_star is None else f"{users_per_replica(c_star):g}"


def _gpus_for(c: float, users: int, test_gpus: int) -> tuple[int, int] | None:
    if c <= 0:
        return None
    replicas = max(1, math.ceil(users / users_per_replica(c) - 1e-9))
    return replicas, replicas * test_gpus


def _solve(
    x: np.ndarray, y_w: np.ndarray, y_llm: np.ndarray | None, t_w: float, t_llm: float | None
) -> tuple[Crossing, Metric, CapacityFit | None]:
    fit_w = fit_capacity(x, y_w)
    best = find_crossing(x, y_w, t_w, fit_w)
    metric: Metric = "workflow"
    fit = fit_w
    if y_llm is not None and t_llm is not None:
        fit_l = fit_capacity(x, y_llm)
        cross_l = find_crossing(x, y_llm, t_llm, fit_l)
        if cross_l.concurrency < best.concurrency or (
            cross_l.concurrency == best.concurrency and cross_l.status == "unreachable"
        ):
            best, metric, fit = cross_l, "llm", fit_l
    return best, metric, fit


def _level_samples(level: LevelData, metric: Metric) -> list[np.ndarray]:
    return level.workflow if metric == "workflow" else level.llm


def _bootstrap_p95(passes: list[np.ndarray], rng: np.random.Generator, b: int, resample_passes: bool) -> np.ndarray:
    """``b`` bootstrap replicates of the pooled p95: passes resampled, then requests within each chosen pass."""
    passes = [p for p in passes if len(p)]
    if not passes:
        return np.full(b, np.nan)
    sizes = np.array([len(p) for p in passes])
    n_max = int(sizes.max())
    padded = np.full((len(passes), n_max), np.nan)
    for i, p in enumerate(passes):
        padded[i, : len(p)] = p
    cols = []
    for slot, n_slot in enumerate(sizes):
        chosen = rng.integers(0, len(passes), size=b) if resample_passes and len(passes) > 1 else np.full(b, slot)
        idx = (rng.random((b, int(n_slot))) * sizes[chosen][:, None]).astype(int)
        cols.append(padded[chosen[:, None], idx])
    return quantile_with_failures(np.concatenate(cols, axis=1), 0.95, axis=1)


def _interp_throughput(levels: Sequence[LevelData], c: float) -> float | None:
    pts = [(lv.concurrency, lv.throughput_rps) for lv in levels if lv.throughput_rps is not None]
    if not pts:
        return None
    xs, ys = zip(*pts, strict=True)
    return float(np.interp(c, xs, ys))


def size(
    data: SweepData,
    targets: SizingTargets,
    *,
    seed: int = 0,
    resample_passes: bool = True,
    compare_nat: bool = True,
) -> SizingResult:
    """Size the system: C* by measured bracketing, GPUs in whole replicas, a bootstrap interval, cost.

    Why: an answer with an interval, honest about what was measured (never a crash when the SLO cannot be
    met, never a straight line through the knee). See the module docstring for the method.
    """
    x = data.concurrencies
    t_w, t_llm = targets.target_workflow_p95_s, targets.target_llm_p95_s
    notes = list(data.notes)
    y_w = np.array([lv.p95("workflow") for lv in data.levels], dtype=float)
    use_llm = t_llm is not None
    if use_llm and not data.has_llm:
        notes.append("an LLM-call target was given but the sweep has no LLM latencies; only the workflow target used")
        use_llm = False
    y_l = np.array([lv.p95("llm") for lv in data.levels], dtype=float) if use_llm else None
    crossing, metric, fit = _solve(x, y_w, y_l, t_w, t_llm if use_llm else None)
    users, tg = targets.target_users, targets.test_gpus

    # Bootstrap -------------------------------------------------------------------------------------
    b = targets.bootstrap_samples
    low_high_w: list[tuple[float | None, float | None]] = [(None, None)] * len(x)
    c_low = c_high = None
    g_low = g_high = None
    unreachable_share = 0.0
    if data.has_samples:
        rng = np.random.default_rng(seed)
        boot_w = np.stack([_bootstrap_p95(lv.workflow, rng, b, resample_passes) for lv in data.levels], axis=1)
        boot_l = (
            np.stack([_bootstrap_p95(lv.llm, rng, b, resample_passes) for lv in data.levels], axis=1)
            if use_llm
            else None
        )
        alpha = (1 - targets.confidence) / 2
        with np.errstate(invalid="ignore"):
            lo_w = np.quantile(boot_w, alpha, axis=0, method="inverted_cdf")
            hi_w = np.quantile(boot_w, 1 - alpha, axis=0, method="inverted_cdf")
        low_high_w = [(float(a), float(c)) for a, c in zip(lo_w, hi_w, strict=True)]
        cs = np.empty(b)
        for i in range(b):
            cr, _, _ = _solve(x, boot_w[i], boot_l[i] if boot_l is not None else None, t_w, t_llm if use_llm else None)
            cs[i] = cr.concurrency
        unreachable_share = float((cs <= 0).mean())
        c_low = float(np.quantile(cs, alpha, method="inverted_cdf"))
        c_high = float(np.quantile(cs, 1 - alpha, method="inverted_cdf"))
        g_low_pair, g_high_pair = _gpus_for(c_high, users, tg), _gpus_for(c_low, users, tg)
        g_low = g_low_pair[1] if g_low_pair else None
        g_high = g_high_pair[1] if g_high_pair else None
    else:
        notes.append("no interval: per-level input has no per-request samples to resample")

    # Per-level table -------------------------------------------------------------------------------
    meets_all = y_w <= t_w
    if y_l is not None and t_llm is not None:
        meets_all = meets_all & (y_l <= t_llm)
    levels = []
    for i, lv in enumerate(data.levels):
        levels.append(
            {
                "concurrency": float(lv.concurrency),
                "workflow_p95_s": _finite_or_none(y_w[i]),
                "workflow_p95_low_s": _finite_or_none(low_high_w[i][0]),
                "workflow_p95_high_s": _finite_or_none(low_high_w[i][1]),
                "llm_p95_s": _finite_or_none(lv.p95("llm")),
                "throughput_rps": lv.throughput_rps,
                "requests": int(sum(len(p) for p in lv.workflow)) if lv.has_samples else None,
                "meets_target": bool(meets_all[i]),
            }
        )

    # NeMo Agent Toolkit comparison -----------------------------------------------------------------
    nat = None
    if compare_nat:
        finite = np.isfinite(y_w)
        nat = nat_linear_estimate(x[finite], y_w[finite], t_w, users, tg)

    targets_d = {
        "target_workflow_p95_s": t_w,
        "target_llm_p95_s": t_llm,
        "target_users": users,
        "test_gpus": tg,
        "gpu_price_per_hour": targets.gpu_price_per_hour,
    }
    label = "LLM-call p95" if metric == "llm" else "workflow p95"
    target_of = t_llm if metric == "llm" and t_llm is not None else t_w
    if crossing.status == "unreachable":
        first = data.levels[0]
        p = first.p95(metric)
        shown = "∞ (more than 5% of requests failed)" if p is None or not math.isfinite(p) else f"{p:.2f} s"
        reason = (
            f"not reachable: {label} at concurrency {first.concurrency:g} is already {shown} (target {target_of:g} s)"
        )
        if first.concurrency > 1:
            reason += "; measure lower concurrency to know whether any load meets it"
        return SizingResult(
            reachable=False,
            reason=reason,
            slo_concurrency=None,
            slo_concurrency_low=c_low,
            slo_concurrency_high=c_high,
            slo_concurrency_is_lower_bound=False,
            extrapolated_slo_concurrency=None,
            binding_metric=metric,
            bracket=None,
            interpolation=crossing.method,
            replicas=None,
            gpus=None,
            gpus_low=g_low,
            gpus_high=g_high,
            throughput_at_slo_rps=None,
            cost_per_1k_workflows=None,
            fit=fit,
            levels=levels,
            targets=targets_d,
            confidence=targets.confidence,
            bootstrap_samples=b if data.has_samples else 0,
            unreachable_share=unreachable_share,
            nat_linear=nat,
            notes=notes,
        )

    c_star = crossing.concurrency
    pair = _gpus_for(c_star, users, tg)
    assert pair is not None  # c_star > 0 when reachable
    replicas, gpus = pair
    if crossing.status == "lower_bound":
        reason = (
            f"every measured level meets the target; C* ≥ {c_star:g} (the highest level measured), so {gpus} GPUs "
            "is an upper bound"
        )
        if crossing.extrapolated is not None:
            reason += f"; the capacity model extrapolates C* ≈ {crossing.extrapolated:.1f} (unmeasured, flagged)"
        reason += "; measure higher concurrency for a tighter answer"
    else:
        assert crossing.bracket is not None
        reason = (
            f"{label} meets {target_of:g} s up to concurrency {crossing.bracket[0]:g} and misses it at "
            f"{crossing.bracket[1]:g}; C* ≈ {c_star:.1f} ({crossing.method} interpolation inside that bracket)"
        )
    if crossing.noisy_levels:
        notes.append(
            "levels "
            + ", ".join(f"{v:g}" for v in crossing.noisy_levels)
            + " meet the target again above the first failing level; treated as noise (conservative)"
        )
    if unreachable_share > 0:
        notes.append(f"in {unreachable_share:.1%} of bootstrap resamples the target was not reachable at all")
    # The point estimate always lies inside its interval.
    if c_low is not None and c_high is not None:
        c_low, c_high = min(c_low, c_star), max(c_high, c_star)
    if g_low is not None:
        g_low = min(g_low, gpus)
    if data.has_samples:
        g_high = max(g_high, gpus) if g_high is not None else None
    else:
        g_low = g_high = gpus
        c_low = c_high = c_star
    throughput = _interp_throughput(data.levels, c_star)
    cost = None
    if throughput and targets.gpu_price_per_hour is not None:
        cost = targets.gpu_price_per_hour * tg / (throughput * 3600.0) * 1000.0
    return SizingResult(
        reachable=True,
        reason=reason,
        slo_concurrency=c_star,
        slo_concurrency_low=c_low,
        slo_concurrency_high=c_high,
        slo_concurrency_is_lower_bound=crossing.status == "lower_bound",
        extrapolated_slo_concurrency=crossing.extrapolated,
        binding_metric=metric,
        bracket=crossing.bracket,
        interpolation=crossing.method,
        replicas=replicas,
        gpus=gpus,
        gpus_low=g_low,
        gpus_high=g_high,
        throughput_at_slo_rps=throughput,
        cost_per_1k_workflows=cost,
        fit=fit,
        levels=levels,
        targets=targets_d,
        confidence=targets.confidence,
        bootstrap_samples=b if data.has_samples else 0,
        unreachable_share=unreachable_share,
        nat_linear=nat,
        notes=notes,
    )


def _finite_or_none(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def size_sweep(sweep: Any, targets: SizingTargets, *, seed: int = 0) -> SizingResult:
    """Size straight from a :class:`agent_flywheel.loadgen.SweepResult` (per-call LLM latencies)."""
    return size(SweepData.from_sweep(sweep), targets, seed=seed)


# --------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------


def latency_vs_concurrency_png(
    sweep_summary: pd.DataFrame,
    fit: CapacityFit | None,
    slo: float,
    path: str | Path,
    *,
    slo_concurrency: float | None = None,
    title: str = "p95 workflow latency vs concurrency",
) -> Path:
    """Measured p95 per level (with bootstrap error bars), the fitted capacity curve, the SLO line and C*.

    ``sweep_summary`` needs ``concurrency`` and ``workflow_p95_s``; ``workflow_p95_low_s`` / ``_high_s`` give error
    bars. Why: the picture shows whether the answer sits on measured ground or on the model.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = _normalise_columns(sweep_summary)
    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = df["concurrency"].to_numpy(dtype=float)
    y = pd.to_numeric(df["workflow_p95_s"], errors="coerce").to_numpy(dtype=float)
    if "workflow_p95_low_s" in df.columns and "workflow_p95_high_s" in df.columns:
        lo = pd.to_numeric(df["workflow_p95_low_s"], errors="coerce").to_numpy(dtype=float)
        hi = pd.to_numeric(df["workflow_p95_high_s"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
        ax.errorbar(
            x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], fmt="o", capsize=3, label="measured p95 (interval)"
        )
        ax.plot(x[~ok & np.isfinite(y)], y[~ok & np.isfinite(y)], "o", color="C0")
    else:
        ax.plot(x, y, "o", label="measured p95")
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
        ax2.set_title(f"{g} GPUs (interval {lo}–{hi}, {result.confidence:.0%})", fontsize=9)
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


def size_from_mapping(rows: Sequence[Mapping[str, Any]], targets: SizingTargets, *, seed: int = 0) -> SizingResult:
    """Size from plain dict rows (per request or per level), e.g. rows fetched from MLflow."""
    return size(SweepData.from_frame(pd.DataFrame(list(rows))), targets, seed=seed)
