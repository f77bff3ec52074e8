"""Which models the NIM simulator serves, and each one's quality parameters.

Servable: ``nim.preloaded`` plus whatever is registered through ``POST /admin/models`` (the NeMo
simulator does that when a deployment is ``ready`` or a customization ``completed``). A LoRA adapter
(``ns/name@cust-...``) has its base model as ``root``/``parent``: it takes its size and its latency server
(the batch it shares) from the root.

Registered models are written to ``<state_dir>/nim/models.json`` (``nim.persist``, on by default) and read
back at start-up, so a restarted NIM still serves the adapters and deployments the NeMo simulator reports
as finished; a real NIM finds its LoRA adapters again in its model store the same way.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.nim.latency import LatencyParams, params_for
from simulators.nim.quality import LoraInfo, answer_probability, parse_size_b
from simulators.nim.settings import NimSettings

log = logging.getLogger("simulators.nim")


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``GET /v1/models``."""

    id: str
    root: str
    parent: str | None
    lora: LoraInfo | None
    created: int
    preloaded: bool

    @property
    def kind(self) -> str:
        """``embedding`` for embedding models (by name), else ``chat``."""
        return "embedding" if "embed" in self.root.lower() or "embed" in self.id.lower() else "chat"

    def openai(self) -> dict[str, Any]:
        """The ``/v1/models`` form."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": "system",
            "root": self.root,
            "parent": self.parent,
        }


class Registry:
    """The servable models; quality and latency parameters are derived from the settings on demand."""

    def __init__(self, settings: NimSettings, state_file: Path | None = None) -> None:
        self.settings = settings
        self.state_file = state_file
        now = int(time.time())
        self._models: dict[str, ServedModel] = {
            model_id: ServedModel(model_id, model_id, None, None, now, True) for model_id in settings.preloaded
        }
        self._load()

    def _load(self) -> None:
        """Serve again what was registered before a restart (a damaged file is reported and ignored)."""
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            entries = json.loads(self.state_file.read_text(encoding="utf-8"))
            for entry in entries:
                lora = entry.get("lora")
                self._models[entry["id"]] = ServedModel(
                    id=entry["id"],
                    root=entry["root"],
                    parent=entry.get("parent"),
                    lora=LoraInfo(int(lora["train_records"]), int(lora["epochs"])) if lora else None,
                    created=int(entry["created"]),
                    preloaded=False,
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the NIM registry %s, which cannot be read: %s", self.state_file, exc)

    def _save(self) -> None:
        """Write the registered (not preloaded) models atomically."""
        if self.state_file is None:
            return
        entries = [
            {
                "id": m.id,
                "root": m.root,
                "parent": m.parent,
                "lora": None if m.lora is None else {"train_records": m.lora.train_records, "epochs": m.lora.epochs},
                "created": m.created,
            }
            for m in self._models.values()
            if not m.preloaded
        ]
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(entries, indent=1), encoding="utf-8")
        os.replace(partial, self.state_file)

    def get(self, model_id: str) -> ServedModel | None:
        """The model, or ``None`` when it is not servable."""
        return self._models.get(model_id)

    def all(self) -> list[ServedModel]:
        """Every servable model, in registration order."""
        return list(self._models.values())

    def register(
        self, model_id: str, root: str | None, parent: str | None, lora: LoraInfo | None
    ) -> tuple[ServedModel, bool]:
        """Make a model servable (or update it); returns it and whether it is new.

        On an update, a ``root`` or ``parent`` left out keeps its earlier value; ``lora`` is replaced.
        """
        existing = self._models.get(model_id)
        if existing is not None:
            parent = parent or existing.parent
            root = root or (existing.root if existing.root != model_id else None)
        model = ServedModel(
            id=model_id,
            root=root or parent or model_id,
            parent=parent,
            lora=lora,
            created=existing.created if existing else int(time.time()),
            preloaded=False,
        )
        self._models[model_id] = model
        self._save()
        return model, existing is None

    def remove(self, model_id: str) -> bool:
        """Stop serving a model; ``False`` when it was not servable."""
        if self._models.pop(model_id, None) is None:
            return False
        self._save()
        return True

    def _override_keys(self, model: ServedModel) -> list[str]:
        return [k for k in (model.id, model.root, model.parent) if k]

    def size_b(self, model: ServedModel) -> float:
        """Billions of parameters: an override, else parsed from the root's name, else the default."""
        for key in self._override_keys(model):
            override = self.settings.models.get(key)
            if override is not None and override.size_b is not None:
                return override.size_b
        for name in (model.root, model.parent or "", model.id):
            size = parse_size_b(name)
            if size is not None:
                return size
        return self.settings.quality.default_size_b

    def p_base(self, model: ServedModel) -> float | None:
        """An explicit ``p_base`` override, if any."""
        for key in self._override_keys(model):
            override = self.settings.models.get(key)
            if override is not None and override.p_base is not None:
                return override.p_base
        return None

    def probability(self, model: ServedModel, icl_examples: int) -> float:
        """p(answer like the teacher) for this model with ``icl_examples`` ICL examples."""
        return answer_probability(
            self.size_b(model), icl_examples, model.lora, self.settings.quality, p_base=self.p_base(model)
        )

    def server(self, model: ServedModel) -> str:
        """The latency server the model runs on: a LoRA adapter shares its root's."""
        return model.root if model.lora is not None else model.id

    def latency(self, server: str) -> LatencyParams:
        """Latency parameters of a server (its own override, else the defaults)."""
        return params_for(self.settings.latency, server)

    def describe(self, model: ServedModel) -> dict[str, Any]:
        """The admin view: the entry plus its quality and latency parameters."""
        return {
            **model.openai(),
            "kind": model.kind,
            "preloaded": model.preloaded,
            "lora": None
            if model.lora is None
            else {"train_records": model.lora.train_records, "epochs": model.lora.epochs},
            "quality": {
                "size_b": self.size_b(model),
                "p_base_override": self.p_base(model),
                "p": round(self.probability(model, 0), 6),
                "p_icl_3": round(self.probability(model, 3), 6),
            },
            "latency": {"server": self.server(model), **self.latency(self.server(model)).__dict__},
        }
