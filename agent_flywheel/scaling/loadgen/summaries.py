"""All passes of one level together: percentiles from merged histograms, errors by kind, and the self-check.

A level split over several generators (:mod:`.shares`) is merged the same way as its passes: bucket counts
and counters are added, never percentiles averaged. The self-check is made per generator too: each one's
share of requests sent late, its CPU and its event-loop lag, so a summary can say *which* generator, not
the server, set the pace.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_flywheel.scaling.loadgen.histogram import LatencyHistogram
from agent_flywheel.scaling.loadgen.runs import LevelRun, Mode

UNKNOWN_MODEL = "(unknown)"
LATE_SHARE_WARNING = 0.01
LOOP_LAG_WARNING_S = 0.05
CPU_SHARE_WARNING = 0.9
START_LATE_WARNING_S = 1.0


@dataclass(frozen=True)
class GeneratorStats:
    """One generator's part of a level (all passes): how much it sent, how late, and what it cost the client.

    ``share`` is its users (closed loop) or requests per second (open loop); ``None`` when one generator drove
    the whole level. ``start_late_s`` is how long after the common start time it began, at worst.
    """

    generator: int
    share: float | None
    requests: int
    late: int
    cpu_s: float
    wall_s: float
    loop_lag_p99_s: float
    start_late_s: float

    @property
    def late_share(self) -> float:
        """Share of its requests sent more than the threshold after their intended time."""
        return self.late / self.requests if self.requests else 0.0

    @property
    def cpu_per_request_s(self) -> float:
        """The generator process's CPU time per request it measured: its overhead per call."""
        return self.cpu_s / self.requests if self.requests else 0.0

    @property
    def cpu_share(self) -> float:
        """Share of one core the generator used while its requests were measured."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def bottlenecks(self) -> list[str]:
        """Why this generator, not the server, may have set the pace (empty when it kept up)."""
        reasons = []
        if self.late_share > LATE_SHARE_WARNING:
            reasons.append(f"{self.late_share:.1%} of its requests sent late")
        if self.loop_lag_p99_s > LOOP_LAG_WARNING_S:
            reasons.append(f"event-loop lag p99 {self.loop_lag_p99_s * 1000:.0f} ms")
        if self.cpu_share > CPU_SHARE_WARNING:
            reasons.append(f"{self.cpu_share:.0%} of a CPU core")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "generator": self.generator,
            "share": self.share,
            "requests": self.requests,
            "late_share": self.late_share,
            "client_cpu_per_request_s": self.cpu_per_request_s,
            "client_cpu_share": self.cpu_share,
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "start_late_s": self.start_late_s,
        }


@dataclass
class LevelSummary:
    """All passes of one level together: latency percentiles from merged histograms, errors, self-check."""

    mode: Mode
    level: int
    concurrency: int | None
    rate_rps: float | None
    passes: int
    requests: int
    ok: int
    error_rate: float
    error_kinds: dict[str, int]
    throughput_rps: float
    workflow: LatencyHistogram
    llm: LatencyHistogram
    llm_by_model: dict[str, LatencyHistogram]
    late_share: float
    client_cpu_per_request_s: float
    client_cpu_share: float
    loop_lag_p99_s: float
    loop_lag_max_s: float
    warnings: list[str]
    generators: list[GeneratorStats]

    def to_row(self) -> dict[str, Any]:
        """One flat row for the per-level table."""
        w, m = self.workflow.summary(), self.llm.summary()
        return {
            "mode": self.mode,
            "level": self.level,
            "concurrency": self.concurrency,
            "rate_rps": self.rate_rps,
            "passes": self.passes,
            "requests": self.requests,
            "ok": self.ok,
            "error_rate": self.error_rate,
            "error_kinds": ";".join(f"{k}={v}" for k, v in sorted(self.error_kinds.items())),
            "throughput_rps": self.throughput_rps,
            **{f"workflow_{k}": v for k, v in w.items() if k != "count"},
            "llm_calls": m["count"],
            **{f"llm_{k}": v for k, v in m.items() if k != "count"},
            "llm_p95_s_by_model": ";".join(
                f"{model}={h.percentile(95):.6f}" for model, h in sorted(self.llm_by_model.items()) if h.count
            ),
            "late_share": self.late_share,
            "client_cpu_per_request_s": self.client_cpu_per_request_s,
            "client_cpu_share": self.client_cpu_share,
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "loop_lag_max_s": self.loop_lag_max_s,
            "generators": len(self.generators),
            "late_share_by_generator": ";".join(f"{g.generator}={g.late_share:.6f}" for g in self.generators),
            "warnings": " | ".join(self.warnings),
        }

    def to_dict(self) -> dict[str, Any]:
        """The level as JSON (``sweep run --json``): workflow and per-LLM-call percentiles, per model too."""

        def short(h: LatencyHistogram) -> dict[str, float | int | None]:
            return {k: v for k, v in h.summary().items() if k in ("count", "p50_s", "p95_s", "p99_s", "max_s")}

        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate_rps": self.rate_rps,
            "passes": self.passes,
            "requests": self.requests,
            "ok": self.ok,
            "error_rate": self.error_rate,
            "error_kinds": dict(self.error_kinds),
            "throughput_rps": self.throughput_rps,
            "workflow": short(self.workflow),
            "llm": short(self.llm),
            "llm_by_model": {model: short(h) for model, h in sorted(self.llm_by_model.items())},
            "late_share": self.late_share,
            "client_cpu_per_request_s": self.client_cpu_per_request_s,
            "generators": [g.to_dict() for g in self.generators],
            "warnings": list(self.warnings),
        }


def _window_s(runs: Sequence[LevelRun]) -> float:
    """The throughput denominator: per pass, from the first measured send to the last measured completion of any
    of its generators (on their common clock), added over passes."""
    spans: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        span = run.span_s
        if span is not None:
            spans[run.pass_index].append(span)
    return sum(max(end for _, end in s) - min(start for start, _ in s) for s in spans.values())


def _lag_p99(lags: Sequence[float]) -> float:
    return float(np.percentile(lags, 99)) if lags else 0.0


def generator_stats(runs: Sequence[LevelRun]) -> list[GeneratorStats]:
    """Each generator's requests, lateness, CPU and loop lag over the passes of one level, in generator order."""
    by_generator: dict[int, list[LevelRun]] = defaultdict(list)
    for run in runs:
        by_generator[run.generator].append(run)
    stats = []
    for g, own in sorted(by_generator.items()):
        shares = {run.share for run in own}
        stats.append(
            GeneratorStats(
                generator=g,
                share=shares.pop() if len(shares) == 1 else None,
                requests=sum(len(run.records) for run in own),
                late=sum(rec.lateness_s > run.late_threshold_s for run in own for rec in run.records),
                cpu_s=sum(run.cpu_s for run in own),
                wall_s=sum(run.wall_s for run in own),
                loop_lag_p99_s=_lag_p99([lag for run in own for lag in run.loop_lags_s]),
                start_late_s=max(run.start_late_s for run in own),
            )
        )
    return stats


def _generator_warnings(label: str, mode: str, stats: Sequence[GeneratorStats]) -> list[str]:
    """Per generator of a split level: which one, not the server, set the pace; which started late."""
    warnings = []
    for g in stats:
        reasons = g.bottlenecks()
        if reasons:
            driving = "" if g.share is None else f", driving {g.share:g}" + (" users" if mode == "closed" else "/s")
            warnings.append(
                f"{label}: generator {g.generator} of {len(stats)}{driving}, not the server, was the bottleneck: "
                f"{', '.join(reasons)}; split the level over more generators"
            )
        if g.start_late_s > START_LATE_WARNING_S:
            warnings.append(
                f"{label}: generator {g.generator} of {len(stats)} started {g.start_late_s:.1f} s after the common "
                "start time; the generators did not start together (give them a longer start lead)"
            )
    return warnings


def summarize_level(runs: Sequence[LevelRun]) -> LevelSummary:
    """Merge the passes (and generators) of one level, histograms exactly, and judge whether the generators kept up."""
    if not runs:
        raise ValueError("no runs to summarise")
    first = runs[0]
    llm_hists = []
    by_model: dict[str, LatencyHistogram] = {}
    errors: Counter[str] = Counter()
    requests = ok = late = 0
    cpu = wall = 0.0
    lags: list[float] = []
    for run in runs:
        lh = LatencyHistogram()
        for rec in run.records:
            requests += 1
            if rec.result.ok:
                ok += 1
            else:
                errors[rec.result.error_kind or "error"] += 1
            for call in rec.result.llm_calls:
                v = call.latency_s
                if math.isfinite(v) and v >= 0:
                    lh.record(v)
                    by_model.setdefault(call.model or UNKNOWN_MODEL, LatencyHistogram()).record(v)
            late += rec.lateness_s > run.late_threshold_s
        llm_hists.append(lh)
        cpu += run.cpu_s
        wall += run.wall_s
        lags.extend(run.loop_lags_s)
    window = _window_s(runs)
    late_share = late / requests if requests else 0.0
    cpu_share = cpu / wall if wall > 0 else 0.0
    lag_p99 = _lag_p99(lags)
    stats = generator_stats(runs)
    warnings: list[str] = []
    label = f"concurrency {first.concurrency}" if first.mode == "closed" else f"rate {first.rate_rps:g}/s"
    if late_share > LATE_SHARE_WARNING:
        warnings.append(
            f"{label}: {late_share:.1%} of requests were sent more than {first.late_threshold_s * 1000:.0f} ms late; "
            "the load generator could not keep up, so the offered load was lower than intended"
        )
    if lag_p99 > LOOP_LAG_WARNING_S:
        warnings.append(
            f"{label}: event-loop lag p99 {lag_p99 * 1000:.0f} ms; client-side delay is inflating measured latency"
        )
    if cpu_share > CPU_SHARE_WARNING:
        warnings.append(
            f"{label}: the client process used {cpu_share:.0%} of a CPU core; the generator may be the bottleneck"
        )
    if len(stats) > 1:
        warnings += _generator_warnings(label, first.mode, stats)
    return LevelSummary(
        mode=first.mode,
        level=first.level,
        concurrency=first.concurrency,
        rate_rps=first.rate_rps,
        passes=len({run.pass_index for run in runs}),
        requests=requests,
        ok=ok,
        error_rate=(requests - ok) / requests if requests else 0.0,
        error_kinds=dict(errors),
        throughput_rps=ok / window if window > 0 else 0.0,
        workflow=LatencyHistogram.merged(run.workflow for run in runs),
        llm=LatencyHistogram.merged(llm_hists),
        llm_by_model=by_model,
        late_share=late_share,
        client_cpu_per_request_s=cpu / requests if requests else 0.0,
        client_cpu_share=cpu_share,
        loop_lag_p99_s=lag_p99,
        loop_lag_max_s=max(lags) if lags else 0.0,
        warnings=warnings,
        generators=stats,
    )
