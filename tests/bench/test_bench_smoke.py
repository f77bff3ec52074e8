"""The benchmark harness on tiny inputs, so it cannot rot between full runs (``make bench`` is not a test).

Each benchmark's figures are assembled by the same functions the full run uses, from measurements made
here in-process on a few hundred records (or from the exact latency model for sizing), and the report
writer must turn them into a document with every section and the targets' verdicts.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from bench import data, extraction, flywheel_overhead, loadgen_bench, multiload_bench, report, sizing_accuracy
from bench.__main__ import main
from bench.measure import Isolated, median, spread


def _isolated(result: dict) -> Isolated:
    return Isolated(True, result, peak_rss_mb=60.0, cpu_s=0.1, wall_s=result.get("seconds", 0.0))


def _extraction_results(tmp_path: Path) -> dict:
    spec = data.Spec(300)
    counts = data.generate(spec, tmp_path / "records")
    assert counts.records == 300
    assert counts.cache_records == counts.good + counts.duplicates
    assert counts.bad > 0 and counts.duplicates > 0
    assert data.check_cache_equivalence(spec, sample=40) > 0
    cache = tmp_path / "records" / "cache.jsonl"
    segment = tmp_path / "root" / data.WORKLOAD_ID / data.CLIENT_ID / "segment.jsonl"
    segment.parent.mkdir(parents=True)
    shutil.copy(cache, segment)
    bound = extraction.parse_file(str(cache), "orjson")
    stdlib = extraction.parse_file(str(cache), "json")
    cold = extraction.build(str(tmp_path / "root"), 300, str(tmp_path / "out"), cold=True)
    built = extraction.build(str(tmp_path / "root"), 300, str(tmp_path / "out"))
    assert bound["records"] == stdlib["records"] == counts.cache_records
    assert built["counts"]["usable"] == cold["counts"]["usable"] == counts.distinct
    entry = {
        "records": 300,
        "data": counts.to_json(),
        "rounds": 1,
        "build": extraction.build_entry(
            [_isolated(bound)], [_isolated(stdlib)], [_isolated(built)], counts, [_isolated(cold)]
        ),
        "end_to_end": extraction.end_to_end_entry(
            {"seconds": 0.1, "indexed": 300, "errors": 0},
            [_isolated(bound)],
            [
                _isolated(
                    {
                        **built,
                        "extract_seconds": 0.2,
                        "build_seconds": 0.1,
                        "extract_peak_rss_mb": 80.0,
                        "quarantined": counts.bad,
                    }
                )
            ],
            [Isolated(False, error="killed: RSS passed the 6144 MB cap", killed_at_mb=6200.0)],
        ),
    }
    # a smaller size where the naive pipeline finished, so the larger one's memory cap is put in proportion
    smaller = {
        **entry,
        "records": 100,
        "end_to_end": {
            **entry["end_to_end"],
            "naive": extraction._summary([_isolated({"seconds": 0.3, "deduplicated": counts.distinct})]),
        },
    }
    breakdown = extraction.breakdown(str(cache), 60)
    assert breakdown["steps_x_bound"]["parse: orjson (the bound)"] == 1.0
    return {"sizes": [smaller, entry], "memory_cap_mb": 6144, "breakdown": breakdown}


def _loadgen_results() -> dict:
    def fake(rate: float) -> Isolated:  # passes up to 1,000/s
        late = 0.0 if rate <= 1000 else 0.2
        return _isolated(
            {"tool": "fake", "late_share": late, "throughput_rps": rate, "errors": 0, "cpu_per_request_s": 1e-4}
        )

    found = loadgen_bench.search_max_rate(fake, 100.0, 20000.0, 2, lambda _: None, "fake")
    assert 1000 / 1.5 <= found["max_rate"] <= 1000
    return {
        "late_threshold_s": 0.02,
        "late_limit": 0.01,
        "duration_s": 1.0,
        "tools": {"ours": found, "locust": found},
        "noop": {"rate": 5000.0, "cpu_per_request_s": 3e-5, "late_share": 0.0, "throughput_rps": 5000.0},
        "overhead": {
            "rate": 200.0,
            "ours_cpu_per_request_s": 2e-3,
            "plain_cpu_per_request_s": 1e-3,
            "difference_s": 1e-3,
            "rounds": 1,
        },
    }


def _sizing_results() -> dict:
    from agent_flywheel.scaling.sizing.sweeps import LevelData, SweepData
    from simulators.nim.latency import LatencyParams, workflow_latency_s

    case = sizing_accuracy.CASES[0]
    calls = [(44, 33)]
    params = LatencyParams(**case.latency)  # type: ignore[arg-type]
    levels = sizing_accuracy.levels_for(params.max_batch * params.replicas)
    rng = np.random.default_rng(0)
    sweep = SweepData(
        [
            LevelData(float(c), workflow=[workflow_latency_s(params, c, calls) * rng.uniform(1.0, 1.02, 40)])
            for c in levels
        ]
    )
    table = SweepData.from_levels_frame(
        pd.DataFrame({"concurrency": levels, "workflow_p95_s": [lv.p95("workflow") for lv in sweep.levels]})
    )
    entry = sizing_accuracy.evaluate(case, sweep, table, calls, scale=1.0)
    assert entry["truth"]["c_star"] == 25 and entry["truth"]["gpus"] == 8
    assert entry["ours"]["gpus"] is not None and entry["nat"] is not None
    assert entry["ours_pinned"]["gpus"] == entry["truth"]["gpus"]  # the simulator's truth: whole users per replica
    per_level = entry["ours_per_level"]  # one p95 per level: the measured levels around C* bracket the answer
    assert per_level["interval_kind"] == "bracket"
    assert per_level["gpus_low"] <= per_level["gpus"] <= per_level["gpus_high"]
    simulated = {"passes": 2, "requests_per_level": "40", "cases": [entry]}
    return {
        "users": 200,
        "time_scale": 1.0,
        "passes": 1,
        "requests_per_level": "40",
        "cases": [entry],
        "simulated": simulated,
    }


def _flywheel_results() -> dict:
    spans = [("extract-logs", 1.0, 2.0), ("mlflow-start-run", 0.5, 1.5), ("evaluate", 3.0, 6.0), ("evaluate", 4.0, 5.0)]
    attribution = flywheel_overhead.attribute(spans, 0.0, 10.0)
    assert attribution["work_s"] == 4.0 and attribution["mlflow_s"] == 0.5 and attribution["prefect_s"] == 5.5
    runs = [
        {
            "candidates": c,
            "cold": i == 0,
            "outcome": "promoted",
            "wall_s": w,
            "before_first_task_s": 0.1,
            "attribution": attribution,
        }
        for i, (c, w) in enumerate([(3, 30.0), (1, 5.0), (3, 8.0)])
    ]
    return flywheel_overhead.summarise(
        {"stack_up_s": 3.0, "traffic_s": 2.0, "import_s": 1.0, "traffic_requests": 100, "runs": runs}
    )


def _multiload_results() -> dict:
    """Two real configurations, tiny: 8 users from one process and from two, against the stub agent."""
    from bench.servers import agent_stub

    with agent_stub() as url:
        runs = [multiload_bench.measure(url, users=8, processes=p, rounds=1) for p in (1, 2)]
    for run in runs:
        assert run["requests"] == 8 and run["errors"] == 0 and run["server"]["requests"] >= 16
        assert len(run["generators"]) == run["processes"]
        assert sum(g["requests"] for g in run["generators"]) == 8
        assert run["overhead_p50_s"] is not None and run["overhead_p50_s"] > -0.001  # a call never beats its plan
    return {
        "rounds": 1,
        "late_limit": 0.01,
        "cores": 2,
        "aiperf": {"overhead_s": [0.067, 0.115], "users": 1000, "source": "issue #14"},
        "runs": runs,
    }


def test_every_section_is_written_from_tiny_measurements(tmp_path: Path) -> None:
    results = {
        "machine": {"cpu": "test", "cores": 2, "libraries": {"orjson": "x"}, "date": "today"},
        "mode": "quick",
        "loads": [(0.1, 0.1, 0.1)],
        "extraction": _extraction_results(tmp_path),
        "loadgen": _loadgen_results(),
        "sizing": _sizing_results(),
        "flywheel": _flywheel_results(),
        "multiload": _multiload_results(),
    }
    assert results["flywheel"]["per_candidate_s"] == 1.5
    text = report.render(json.loads(json.dumps(results, default=str)), findings="Findings text.")
    for heading in (
        "## Summary",
        "## Findings",
        "## 1. Extraction",
        "### Where the build's time goes",
        "## 2. Load",
        "## 3. Sizing",
        "## 4. Flywheel",
        "## 5. Load beyond one process",
    ):
        assert heading in text
    assert "over the 6.00 GB memory cap" in text  # a killed measurement is reported, not dropped
    assert "the naive pipeline was stopped when its memory passed the benchmark's 6.00 GB cap (at 6.05 GB)" in text
    assert "Peak memory per record read: ours ≈ 0 bytes (100–300)" in text
    assert "**met**" in text or "**missed**" in text
    assert "ours GPUs, pinned [90 %]" in text and "ours, per-level table only [bracket]" in text
    assert "inside the per-level table's measured bracket in" in text
    assert "**On a simulated clock**" in text and "case a (simulated clock): truth" in text
    assert "Not run in this invocation" not in text
    assert "(in CPU time 1.0×" in text  # every fake measurement took 0.1 s of CPU
    assert "8 agent-shaped users: sent late from 1 / 2 processes" in text and "quoted from issue #14" in text


def test_a_partial_rerun_keeps_the_other_sizes_and_the_other_part_of_its_size() -> None:
    from bench.__main__ import _merge_sizes

    old = {
        "sizes": [{"records": 10, "build": "b10"}, {"records": 20, "build": "old", "end_to_end": "e20"}],
        "loads": [],
    }
    new = {"sizes": [{"records": 20, "build": "new"}], "loads": []}
    merged = _merge_sizes(old, new)
    assert merged["sizes"] == [{"records": 10, "build": "b10"}, {"records": 20, "build": "new", "end_to_end": "e20"}]


def test_report_only_rewrites_the_document_from_saved_results(tmp_path: Path) -> None:
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps({"machine": {"cores": 2}, "mode": "full", "loads": [[9.0, 9.0, 9.0]]}))
    out = tmp_path / "benchmarks.md"
    assert main(["--report-only", "--results", str(saved), "--out", str(out)]) == 0
    text = out.read_text()
    assert "measured under load" in text
    assert text.count("Not run in this invocation") == 5


def test_medians_and_spreads_ignore_missing_values() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert spread([2.0, None, 5.0]) == (2.0, 5.0)


def test_the_simulated_clock_sweep_finds_the_pinned_truth() -> None:
    """Case e (3 users per replica) on the simulated clock: the pinned answer is the simulator's truth exactly,
    the balanced one divides by C* (3.5 here: 58 replicas), the per-level table has no interval."""
    from agent_flywheel.scaling.sizing.sweeps import SweepData

    case = next(c for c in sizing_accuracy.CASES if c.name == "e")
    sweep = sizing_accuracy._simulated_sweep(case, sizing_accuracy.SIMULATED_TOKENS, 1, 64, lambda _: None)
    table = SweepData.from_levels_frame(sweep.summary_frame())
    entry = sizing_accuracy.evaluate(case, SweepData.from_sweep(sweep), table, [sizing_accuracy.SIMULATED_TOKENS], 1.0)
    assert entry["truth"]["c_star"] == 3 and entry["truth"]["gpus"] == 67
    assert entry["ours_pinned"]["gpus"] == 67
    assert entry["ours"]["gpus"] == math.ceil(200 / entry["ours"]["c_star_per_replica"])
    assert 50 <= entry["ours"]["gpus"] <= 67  # between one more pinned user per replica and the truth
    per_level = entry["ours_per_level"]
    assert per_level["interval_kind"] == "bracket" and per_level["gpus_low"] <= 67 <= per_level["gpus_high"]


def _run(users: int, processes: int, late: float) -> dict:
    return {"users": users, "processes": processes, "late_share": late, "overhead_p50_s": 0.002, "overhead_p95_s": 0.01}


def test_the_multiload_verdict_shows_where_several_processes_hold_and_one_does_not() -> None:
    """Several user counts: the verdict sentence picks the most users where one process is late and several are
    not; the summary gives a row per user count and judges the target only at the target's user count."""
    runs = [
        _run(1000, 1, 0.05),
        _run(1000, 2, 0.004),
        _run(3000, 1, 0.7),
        _run(3000, 2, 0.2),
        _run(3000, 4, 0.03),
    ]
    one, best = report._multiload_verdict(runs, 0.01)
    assert (one["users"], one["processes"], best["processes"]) == (1000, 1, 2)
    one, best = report._multiload_verdict([*runs[2:], {"users": 5000, "processes": 1, "error": "boom"}], 0.01)
    assert (one["users"], best["processes"]) == (3000, 4)  # none holds: the most users measured, best of several
    results = {"multiload": {"late_limit": 0.01, "target_users": 3000, "cores": 2, "runs": runs}}
    summary = "\n".join(report._summary(results))
    assert "1,000 agent-shaped users: sent late from 1 / 2 processes | 5.0% / 0.4% | several under 1 %" in summary
    assert "3,000 agent-shaped users: sent late from 1 / 2 / 4 processes | 70.0% / 20.0% / 3.0%" in summary
    assert "< 1 % from several processes: **missed** (2 cores)" in summary
    assert multiload_bench.configurations(False, users=[1000, 3000], processes=[1, 4]) == [
        (1000, 1),
        (1000, 4),
        (3000, 1),
        (3000, 4),
    ]
