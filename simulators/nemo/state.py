"""The simulator's memory: one table per kind of entity, snapshotted as JSON so a restart keeps jobs.

Records are the JSON the API returns, plus private keys starting with ``_`` (simulation plans, side
effect flags) that :func:`public` strips. Job phases are computed from the simulated clock, so the
snapshot also stores the clock's reading: after a restart time resumes where it stopped and a job
that was half-way through training is still half-way. Per-sample evaluation results can be large, so
they live in their own files next to the snapshot rather than inside it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("nemo-sim")

Record = dict[str, Any]
SNAPSHOT_VERSION = 1
TABLES = (
    "namespaces",
    "projects",
    "datasets",
    "models",
    "customization_targets",
    "customization_configs",
    "customization_jobs",
    "evaluation_targets",
    "evaluation_configs",
    "evaluation_jobs",
    "evaluation_results",
    "model_deployments",
    "deployment_configs",
)


def public(record: Record) -> Record:
    """The record as the API shows it: private ``_`` keys removed."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def ref(namespace: str, name: str) -> str:
    """The ``namespace/name`` key under which named entities are stored and referenced."""
    return f"{namespace}/{name}"


class Store:
    """In-memory tables with an optional JSON snapshot under ``directory``."""

    def __init__(self, directory: Path | None, clock_now: Callable[[], float]) -> None:
        self.directory = directory
        self._clock_now = clock_now
        self._lock = threading.Lock()
        self.tables: dict[str, dict[str, Record]] = {name: {} for name in TABLES}
        self._samples: dict[str, Any] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "samples").mkdir(exist_ok=True)

    def table(self, name: str) -> dict[str, Record]:
        """A table by name (``customization_jobs``...); insertion order is creation order."""
        return self.tables[name]

    @property
    def snapshot_path(self) -> Path | None:
        return self.directory / "state.json" if self.directory else None

    def save(self) -> None:
        """Write the snapshot atomically (a crash mid-write leaves the previous one intact)."""
        path = self.snapshot_path
        if path is None:
            return
        with self._lock:
            payload = {"version": SNAPSHOT_VERSION, "clock_now_s": self._clock_now(), "tables": self.tables}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
            os.replace(tmp, path)

    def load(self) -> float | None:
        """Read the snapshot if there is one; returns the simulated time it was taken at, else None."""
        path = self.snapshot_path
        if path is None or not path.exists():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable NeMo simulator snapshot %s: %s", path, exc)
            return None
        if payload.get("version") != SNAPSHOT_VERSION:
            log.warning("ignoring NeMo simulator snapshot %s of version %s", path, payload.get("version"))
            return None
        for name in TABLES:
            self.tables[name] = dict(payload.get("tables", {}).get(name, {}))
        return float(payload.get("clock_now_s", 0.0))

    # Per-sample evaluation results ------------------------------------------------------------------

    def _samples_path(self, job_id: str) -> Path | None:
        return self.directory / "samples" / f"{job_id}.json" if self.directory else None

    def write_samples(self, job_id: str, samples: Any) -> None:
        """Keep an evaluation job's per-sample results (a file when persisting, else memory)."""
        path = self._samples_path(job_id)
        if path is None:
            self._samples[job_id] = samples
            return
        path.write_text(json.dumps(samples, default=str), encoding="utf-8")

    def read_samples(self, job_id: str) -> Any:
        """An evaluation job's per-sample results, or None when there are none."""
        path = self._samples_path(job_id)
        if path is None:
            return self._samples.get(job_id)
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def delete_samples(self, job_id: str) -> None:
        """Forget an evaluation job's per-sample results."""
        path = self._samples_path(job_id)
        if path is None:
            self._samples.pop(job_id, None)
        elif path.exists():
            path.unlink()
