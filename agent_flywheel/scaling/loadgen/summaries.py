"""All passes of one level together: percentiles from merged histograms, errors by kind, and the self-check."""

from __future__ import annotations

import math
from collections import Counter
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
            "warnings": list(self.warnings),
        }


def summarize_level(runs: Sequence[LevelRun]) -> LevelSummary:
    """Merge the passes of one level (histograms exactly) and judge whether the generator kept up."""
    if not runs:
        raise ValueError("no runs to summarise")
    first = runs[0]
    workflow_hists, llm_hists = [], []
    by_model: dict[str, LatencyHistogram] = {}
    errors: Counter[str] = Counter()
    requests = ok = late = 0
    window = cpu = wall = 0.0
    lags: list[float] = []
    for run in runs:
        wh, lh = LatencyHistogram(), LatencyHistogram()
        for rec in run.records:
            requests += 1
            if rec.result.ok:
                ok += 1
                wh.record(rec.latency_s)
            else:
                errors[rec.result.error_kind or "error"] += 1
            for call in rec.result.llm_calls:
                v = call.latency_s
                if math.isfinite(v) and v >= 0:
                    lh.record(v)
                    by_model.setdefault(call.model or UNKNOWN_MODEL, LatencyHistogram()).record(v)
            late += rec.lateness_s > run.late_threshold_s
        workflow_hists.append(wh)
        llm_hists.append(lh)
        window += run.window_s
        cpu += run.cpu_s
        wall += run.wall_s
        lags.extend(run.loop_lags_s)
    late_share = late / requests if requests else 0.0
    cpu_share = cpu / wall if wall > 0 else 0.0
    lag_p99 = float(np.percentile(lags, 99)) if lags else 0.0
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
    return LevelSummary(
        mode=first.mode,
        level=first.level,
        concurrency=first.concurrency,
        rate_rps=first.rate_rps,
        passes=len(runs),
        requests=requests,
        ok=ok,
        error_rate=(requests - ok) / requests if requests else 0.0,
        error_kinds=dict(errors),
        throughput_rps=ok / window if window > 0 else 0.0,
        workflow=LatencyHistogram.merged(workflow_hists),
        llm=LatencyHistogram.merged(llm_hists),
        llm_by_model=by_model,
        late_share=late_share,
        client_cpu_per_request_s=cpu / requests if requests else 0.0,
        client_cpu_share=cpu_share,
        loop_lag_p99_s=lag_p99,
        loop_lag_max_s=max(lags) if lags else 0.0,
        warnings=warnings,
    )
