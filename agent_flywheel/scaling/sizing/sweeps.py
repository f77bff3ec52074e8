"""The measured latency curve that sizing reads: per level, per-pass samples or the level's p95 alone.

Read from a load generator's :class:`~agent_flywheel.scaling.loadgen.sweep.SweepResult`, from its CSV tables
(one row per request, or one per level), or from plain rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from agent_flywheel.scaling.sizing.quantiles import quantile_with_failures

Metric = Literal["workflow", "llm"]


class SweepFormatError(ValueError):
    """A sweep file or table cannot be used; the message says what is missing or wrong."""


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
        df = normalise_columns(frame)
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
        df = normalise_columns(frame)
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
        cols = set(normalise_columns(frame).columns)
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
        """From a :class:`~agent_flywheel.scaling.loadgen.sweep.SweepResult`: per-request rows plus every LLM call."""
        data = cls.from_requests_frame(sweep.requests_frame())
        calls = sweep.llm_calls_frame()
        calls = calls[calls["mode"] == "closed"]
        for level in data.levels:
            sel = calls[calls["concurrency"] == level.concurrency]
            level.llm = [g["latency_s"].to_numpy(dtype=float) for _, g in sel.groupby("pass")] if len(sel) else []
        return data


def normalise_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with column names stripped and in lower case (CSV headers written by hand vary)."""
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


def sweep_data(requests_csv: str | Path, llm_calls_csv: str | Path | None = None) -> SweepData:
    """The sweep for sizing from the per-request CSV, with every LLM call's latency when the calls CSV exists.

    Why: the per-request table keeps only the slowest call per request; an LLM-call p95 target should
    see every call, as :meth:`SweepData.from_sweep` does in memory.
    """
    data = read_sweep_csv(requests_csv)
    if llm_calls_csv is None or not Path(llm_calls_csv).exists():
        return data
    calls = pd.read_csv(llm_calls_csv)
    if calls.empty or "concurrency" not in calls.columns:
        return data
    if "mode" in calls.columns:
        calls = calls[calls["mode"].astype(str) == "closed"]
    for level in data.levels:
        sel = calls[pd.to_numeric(calls["concurrency"], errors="coerce") == level.concurrency]
        if len(sel):
            level.llm = [g["latency_s"].to_numpy(dtype=float) for _, g in sel.groupby("pass")]
    return data
