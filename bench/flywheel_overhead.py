"""Benchmark 4: the demo's wall time, the share spent in orchestration, and the cost of one more candidate.

What runs (in a fresh process, with its own Prefect home, MLflow store and state directory): the local
stack as separate processes (``LocalStack.up``) with the job clock sped up and the NIM answering without
simulated latency, the demo's traffic through the demo agent, then the flywheel flow exactly as
``flywheel demo`` calls it (``asyncio.run(flywheel(...))``, configs/flywheel.yaml) with
``evaluation_config.poll_interval_s`` lowered to match the fast clock (the demo's 5 s poll would
otherwise be most of the time).

**Where the time goes.** Every Prefect task's function is wrapped with a timer (``task.fn``; the flow
calls tasks through the same objects). At each instant of a flow run:

- *services and our code*: some task body other than MLflow logging is running (deploying, uploading,
  polling a job, building datasets ... the work the flow exists to do);
- *MLflow*: only ``mlflow-*`` task bodies are running;
- *Prefect*: nothing of the above; the engine is creating runs, moving states, entering concurrency
  slots, writing artifacts and events, starting subflows.

Orchestration is thus counted only when it is on the critical path; Prefect work that overlaps a
running task costs no wall time and is not counted. The first run in a fresh process also pays for
starting Prefect's temporary API server, reported separately. Later runs are warm.

**Cost of a candidate.** Warm runs with 1, 2 and 3 candidate NIMs (the first 1, 2, 3 of the demo
config), in interleaved rounds; the extra wall time per added candidate is the median difference.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import Isolated, load_average, median, run_isolated

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD, CLIENT = "customer-support", "demo"


# --------------------------------------------------------------------------------------------------
# Timeline
# --------------------------------------------------------------------------------------------------


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in intervals)


def _subtract(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Parts of the (merged) intervals ``a`` not covered by the (merged) intervals ``b``."""
    out: list[tuple[float, float]] = []
    for start, end in a:
        cursor = start
        for b_start, b_end in b:
            if b_end <= cursor or b_start >= end:
                continue
            if b_start > cursor:
                out.append((cursor, b_start))
            cursor = max(cursor, b_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def attribute(spans: list[tuple[str, float, float]], start: float, end: float) -> dict[str, Any]:
    """Split ``[start, end]`` into service/our-code, MLflow-only and Prefect-only time (see module doc)."""
    clip = [(name, max(s, start), min(e, end)) for name, s, e in spans if e > start and s < end]
    work = _union([(s, e) for name, s, e in clip if not name.startswith("mlflow-")])
    mlflow = _subtract(_union([(s, e) for name, s, e in clip if name.startswith("mlflow-")]), work)
    wall = end - start
    work_s, mlflow_s = _length(work), _length(mlflow)
    per_task: dict[str, float] = {}
    for name, s, e in clip:
        per_task[name] = per_task.get(name, 0.0) + (e - s)
    return {
        "wall_s": wall,
        "work_s": work_s,
        "mlflow_s": mlflow_s,
        "prefect_s": max(0.0, wall - work_s - mlflow_s),
        "orchestration_share": (wall - work_s) / wall if wall > 0 else None,
        "task_seconds": dict(sorted(per_task.items(), key=lambda kv: -kv[1])),
    }


def instrument_tasks(spans: list[tuple[str, float, float]]) -> int:
    """Wrap the function of every Prefect task in the project's ``tasks`` modules with a timer."""
    import importlib
    import pkgutil

    from prefect import Task

    import tasks

    wrapped = 0
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Task) and not getattr(value.fn, "_bench_timed", False):
                value.fn = _timed(value.name, value.fn, spans)
                wrapped += 1
    return wrapped


def _timed(name: str, fn: Callable[..., Any], spans: list[tuple[str, float, float]]) -> Callable[..., Any]:
    """The same function, recording ``(task name, start, end)``; ``functools.wraps`` keeps the source hash."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                spans.append((name, started, time.perf_counter()))

        timed_async._bench_timed = True  # type: ignore[attr-defined]
        return timed_async

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spans.append((name, started, time.perf_counter()))

    timed._bench_timed = True  # type: ignore[attr-defined]
    return timed


# --------------------------------------------------------------------------------------------------
# Child side: one process, the stack, traffic, several flywheel runs
# --------------------------------------------------------------------------------------------------


def demo_runs(home: str, traffic: int, clock_speed: float, plan: list[int], poll_interval_s: float) -> dict[str, Any]:
    """Stack up, traffic, then one flywheel run per entry of ``plan`` (number of candidates); stack down."""

    home_path = Path(home)
    home_path.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "FLYWHEEL_HOME": str(home_path),
            "PREFECT_HOME": str(home_path / "prefect"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home_path / 'mlflow.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HOME": str(home_path / "hf"),
        }
    )
    (home_path / "prefect").mkdir(exist_ok=True)
    from agent_flywheel.config import FlywheelConfig, load_config
    from simulators.settings import PARTS, LocalStackConfig, Ports, load_local_config
    from simulators.stack import LocalStack
    from simulators.threaded import free_port

    shipped = load_local_config(ROOT / "configs" / "local.yaml")
    cfg = LocalStackConfig(
        ports=Ports(**{part: free_port() for part in PARTS}),
        clock_speed=clock_speed,
        state_dir=str(home_path / "state"),
        nim={**shipped.nim, "latency": {"time_scale": 0}},
        agent={**shipped.agent, "tool_latency_scale": 0, "log_flush_interval_s": 0.2},
    )
    timings: dict[str, Any] = {}
    started = time.perf_counter()
    stack = LocalStack(cfg)
    stack.up()
    timings["stack_up_s"] = time.perf_counter() - started
    try:
        import httpx

        from simulators.agent.traffic import run_traffic

        t = time.perf_counter()
        report = run_traffic(cfg.url("agent"), requests=traffic, concurrency=8, seed=7)
        httpx.post(f"{cfg.url('agent')}/admin/flush", timeout=120).raise_for_status()
        timings["traffic_s"] = time.perf_counter() - t
        timings["traffic_ok"] = report.ok
        base = load_config(ROOT / "configs" / "flywheel.yaml", FlywheelConfig)
        spans: list[tuple[str, float, float]] = []
        t = time.perf_counter()
        timings["tasks_instrumented"] = instrument_tasks(spans)
        from cli.local_blocks import register_local_blocks
        from flows.flywheel import flywheel

        timings["import_s"] = time.perf_counter() - t
        runs = []
        for number, candidates in enumerate(plan):
            flywheel_cfg = base.model_copy(
                update={
                    "nims": base.nims[:candidates],
                    "evaluation_config": base.evaluation_config.model_copy(update={"poll_interval_s": poll_interval_s}),
                }
            )
            spans.clear()
            t = time.perf_counter()
            if number == 0:  # as `flywheel demo` does; it starts Prefect's temporary server, part of the cold run
                register_local_blocks(cfg)
            try:
                result = asyncio.run(
                    flywheel(workload_id=WORKLOAD, client_id=CLIENT, config=flywheel_cfg, full_rebuild=True)
                )
                outcome = result.outcome
            except Exception as exc:  # a failed run is timed and reported like the others
                outcome = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            end = time.perf_counter()
            first = min((s for _, s, _ in spans), default=t)
            run = {
                "candidates": candidates,
                "cold": number == 0,
                "outcome": outcome,
                "wall_s": end - t,
                "before_first_task_s": first - t,
                "attribution": attribute(list(spans), t, end),
            }
            runs.append(run)
        timings["runs"] = runs
    finally:
        stack.down()
    timings["total_s"] = time.perf_counter() - started
    return timings


# --------------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------------


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """From :func:`demo_runs`' output: the cold run, medians of warm runs by candidate count, and the
    extra wall time per added candidate."""
    runs = data["runs"]
    out: dict[str, Any] = {k: v for k, v in data.items() if k != "runs"}
    out["runs"] = runs
    out["cold"] = runs[0]
    by_candidates: dict[int, list[dict[str, Any]]] = {}
    for r in runs[1:]:
        by_candidates.setdefault(r["candidates"], []).append(r)
    out["warm"] = {
        str(k): {
            "runs": len(v),
            "wall_s": median(r["wall_s"] for r in v),
            "orchestration_share": median(r["attribution"]["orchestration_share"] for r in v),
            "prefect_s": median(r["attribution"]["prefect_s"] for r in v),
            "mlflow_s": median(r["attribution"]["mlflow_s"] for r in v),
            "work_s": median(r["attribution"]["work_s"] for r in v),
        }
        for k, v in sorted(by_candidates.items())
    }
    counts = sorted(by_candidates)
    if len(counts) >= 2:
        low, high = out["warm"][str(counts[0])]["wall_s"], out["warm"][str(counts[-1])]["wall_s"]
        out["per_candidate_s"] = (high - low) / (counts[-1] - counts[0])
    return out


def run(*, quick: bool, work_dir: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One isolated process: cold demo run, then interleaved warm runs with 1, 2 and 3 candidates."""
    import shutil

    shutil.rmtree(work_dir, ignore_errors=True)
    clock_speed = 1000.0
    poll = 0.2
    traffic = 500 if quick else 1000
    plan = [1, 1, 2] if quick else [3, 1, 2, 3, 1, 2, 3]
    results: dict[str, Any] = {
        "clock_speed": clock_speed,
        "poll_interval_s": poll,
        "traffic_requests": traffic,
        "plan": plan,
        "loads": [load_average()],
    }
    measured: Isolated = run_isolated(
        "bench.flywheel_overhead:demo_runs",
        {"home": str(work_dir), "traffic": traffic, "clock_speed": clock_speed, "plan": plan, "poll_interval_s": poll},
        timeout_s=1800,
        memory_cap_mb=6144,
    )
    results["loads"].append(load_average())
    if not measured.ok:
        results["error"] = measured.error
        log(f"flywheel: failed: {(measured.error or '')[:500]}")
        return results
    results.update(summarise(measured.result))
    results["peak_rss_mb"] = measured.peak_rss_mb
    for r in results["runs"]:
        a = r["attribution"]
        log(
            f"flywheel: {r['candidates']} candidates{' (cold)' if r['cold'] else ''}: {r['wall_s']:.1f} s, "
            f"Prefect {a['prefect_s']:.1f} s, MLflow {a['mlflow_s']:.1f} s, tasks {a['work_s']:.1f} s"
        )
    shutil.rmtree(work_dir, ignore_errors=True)
    return results
