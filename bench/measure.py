"""Measurement plumbing shared by the benchmarks: isolated runs, peak memory, medians, machine details.

Why a subprocess per measurement: peak memory (``ru_maxrss``) only ever grows within a process, and
imports, caches and garbage from one measurement would leak into the next. Each measurement runs
``python -m bench.measure MODULE:FUNCTION ARGS_JSON`` in a fresh interpreter; the function returns a
JSON-able dict, to which the child adds its own peak RSS and CPU time. The parent polls the child's
resident memory and kills it when it passes a cap, so a measurement that would exhaust the shared
machine is reported as "over the cap" instead of taking everyone's memory.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH-RESULT "
DEFAULT_MEMORY_CAP_MB = 6144


@dataclass
class Isolated:
    """What one isolated measurement returned: the function's dict plus the child's own accounting."""

    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    cpu_s: float | None = None
    wall_s: float = 0.0
    error: str | None = None
    killed_at_mb: float | None = None


def _rss_mb(pid: int) -> float | None:
    """Resident set size of a live process from ``/proc`` (Linux); None when unavailable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def run_isolated(
    target: str,
    args: dict[str, Any],
    *,
    memory_cap_mb: float = DEFAULT_MEMORY_CAP_MB,
    timeout_s: float = 3600.0,
    env: dict[str, str] | None = None,
    python: str | None = None,
) -> Isolated:
    """Run ``target`` (``"bench.module:function"``) with ``**args`` in a fresh interpreter.

    The child's stdout carries one ``BENCH-RESULT {json}`` line; anything else it prints is kept for the
    error message. Killed when its RSS passes ``memory_cap_mb`` (checked every 0.2 s) or after ``timeout_s``.
    ``python`` runs it under another interpreter (one with locust installed, say); ``bench.measure`` itself
    needs only the standard library. The disk is synced first, so that the writes of an earlier
    measurement (gigabytes of dataset files, or their deletion) are not flushed during this one.
    """
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(
        [python or sys.executable, "-m", "bench.measure", target, json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {}), "PYTHONHASHSEED": "0"},
    )
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(iter(process.stdout.readline, b"")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    killed_at: float | None = None
    timed_out = False
    while process.poll() is None:
        rss = _rss_mb(process.pid)
        if rss is not None and rss > memory_cap_mb:
            killed_at = rss
            process.kill()
            break
        if time.perf_counter() - started > timeout_s:
            timed_out = True
            process.kill()
            break
        time.sleep(0.2)
    process.wait()
    reader.join(timeout=10)
    wall = time.perf_counter() - started
    text = b"".join(output).decode(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_PREFIX):
            payload = json.loads(line[len(RESULT_PREFIX) :])
            return Isolated(True, payload["result"], payload["peak_rss_mb"], payload["cpu_s"], wall)
    if killed_at is not None:
        return Isolated(
            False, wall_s=wall, error=f"killed: RSS passed the {memory_cap_mb:.0f} MB cap", killed_at_mb=killed_at
        )
    reason = "timed out" if timed_out else f"exit code {process.returncode}"
    return Isolated(False, wall_s=wall, error=f"{reason}: {text[-1500:]}")


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started running its program.

    ``VmHWM`` (Linux) belongs to the address space, which ``exec`` replaces, so it is this program's own
    peak. ``ru_maxrss`` is the fallback elsewhere; on Linux it survives ``exec`` and would start from the
    RSS of the process that forked the child (the harness itself), so it is not used there.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(target: str, args_json: str) -> None:
    module_name, _, function_name = target.partition(":")
    function: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module_name), function_name)
    result = function(**json.loads(args_json))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    payload = {"result": result, "peak_rss_mb": peak_rss_mb(), "cpu_s": usage.ru_utime + usage.ru_stime}
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that exist (None when none do): every reported figure is a median of runs."""
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def spread(values: Iterable[float | None]) -> tuple[float, float] | None:
    """(min, max) of the values that exist, shown next to a median so the noise is visible."""
    present = [float(v) for v in values if v is not None]
    return (min(present), max(present)) if present else None


# --------------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


SETTLE_S = 10.0


def settle(seconds: float = SETTLE_S) -> None:
    """Sync the disk and pause between benchmarks: the previous one's deleted data (tens of GB after the
    extraction benchmark) kept the disk and kernel busy for seconds, which made the next one's first
    measurements late (seen: the load generator failing at 100 requests/s right after the extraction)."""
    os.sync()
    time.sleep(seconds)


def load_average() -> tuple[float, float, float] | None:
    """The 1/5/15-minute load averages (how busy the machine was while measuring)."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how loaded it was when this run started."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for name in ("orjson", "httpx", "aiohttp", "prefect", "mlflow", "pydantic", "elasticsearch", "numpy"):
        try:
            versions[name] = metadata.version(name)  # no import: the harness stays small (see peak_rss_mb)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "libraries": versions,
        "load_average_at_start": load_average(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def under_load(load: float | None, cores: int | None) -> bool:
    """Whether a 1-minute load average means other work shared the machine.

    A benchmark keeps about two processes busy itself (a client and a server), so only a load above
    ``cores + 1`` says that something else was competing for the CPUs.
    """
    return bool(cores) and load is not None and load > (cores or 0) + 1


def busy_machine_note(loads: Sequence[tuple[float, float, float] | None], cores: int | None) -> str | None:
    """A warning when the machine was loaded by others while measuring (see :func:`under_load`)."""
    worst = max((load[0] for load in loads if load is not None), default=0.0)
    if under_load(worst, cores):
        return f"measured under load: the 1-minute load average reached {worst:.1f} on {cores} cores"
    return None


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
