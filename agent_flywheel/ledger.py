"""What a flywheel run started on the NeMo platform, so a failed or cancelled run can clean up after itself.

Each run appends to ``.flywheel/runs/<flow run id>/resources.json``; teardown hooks read it and stop
whatever is still running (customization and evaluation jobs) or still deployed (NIM deployments).
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, cast

ResourceKind = Literal["deployment", "customization", "evaluation"]


@dataclass(frozen=True)
class Resource:
    """A job or deployment a run started: ``ref`` is the job id or ``namespace/name`` of a deployment."""

    kind: ResourceKind
    ref: str
    description: str = ""


class Ledger:
    """An append-only list of resources per run, persisted as JSON (safe across threads of one process)."""

    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def add(self, resource: Resource) -> None:
        """Record a resource (again recording the same one is harmless)."""
        with self._lock:
            data = self._load()
            data[f"{resource.kind}:{resource.ref}"] = asdict(resource)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
            tmp.replace(self.path)

    def discard(self, resource: Resource) -> None:
        """Forget a resource once it has been torn down."""
        with self._lock:
            data = self._load()
            data.pop(f"{resource.kind}:{resource.ref}", None)
            if self.path.exists():
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
                tmp.replace(self.path)

    def resources(self) -> list[Resource]:
        """Everything recorded and not yet discarded."""
        return [
            Resource(cast(ResourceKind, item["kind"]), item["ref"], item.get("description", ""))
            for item in self._load().values()
        ]
