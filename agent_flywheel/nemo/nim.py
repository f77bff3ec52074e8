"""NIM (through the NIM Proxy): which models are served, waiting for one to appear, embeddings, chat.

A DMS deployment that is ``ready`` or a Customizer job that is ``completed`` does not mean NIM serves
the model yet (the proxy syncs, LoRA adapters load on a refresh interval); ``wait_for_model`` polls
``/v1/models`` until the id shows up. Embeddings go in batches so a large ICL pool never makes one huge
request. Inference calls have no side effects, so they are retried like reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from agent_flywheel.nemo.http import ServiceHTTP
from agent_flywheel.nemo.models import NimModel, NimModelList
from agent_flywheel.nemo.poller import Observation, PollSettings, ProgressCallback, wait_for
from agent_flywheel.nemo.status import Phase

logger = logging.getLogger(__name__)

InputType = Literal["query", "passage"]


class Nim:
    """The OpenAI-compatible NIM endpoints at ``nim_url``."""

    def __init__(self, http: ServiceHTTP) -> None:
        self.http = http

    async def list_models(self) -> list[NimModel]:
        """Every model the proxy serves (base models and LoRA adapters ``ns/name@cust-...``)."""
        return NimModelList.model_validate(await self.http.get_json("/v1/models")).data

    async def has_model(self, model_id: str) -> bool:
        """True when NIM serves ``model_id`` now."""
        return any(model.id == model_id for model in await self.list_models())

    async def wait_for_model(
        self,
        model_id: str,
        *,
        settings: PollSettings | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> NimModel:
        """Poll ``/v1/models`` until ``model_id`` is served (returned), or raise when the wait runs out."""
        found: list[NimModel] = []

        async def fetch() -> Observation:
            models = await self.list_models()
            match = [model for model in models if model.id == model_id]
            if match:
                found[:] = match[:1]
                return Observation(status="served", phase=Phase.SUCCEEDED, details={"models_served": len(models)})
            return Observation(
                status="not-served-yet",
                phase=Phase.WAITING,
                details={"models_served": len(models)},
                reason=f"NIM serves {len(models)} models, not {model_id}",
            )

        await wait_for(
            fetch,
            what=f"NIM model {model_id}",
            settings=settings or PollSettings(interval_s=30.0),
            on_progress=on_progress,
            sleep=self.http.sleep,
        )
        return found[0]

    async def embeddings(
        self,
        texts: Sequence[str],
        model: str,
        *,
        input_type: InputType = "query",
        batch_size: int = 64,
        extra: Mapping[str, Any] | None = None,
    ) -> list[list[float]]:
        """One embedding per text, in order; sent ``batch_size`` texts at a time.

        ``input_type`` matters for NVIDIA retrieval embedders: ``query`` for what is looked up,
        ``passage`` for what is stored.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            body = {"model": model, "input": batch, "input_type": input_type, **(extra or {})}
            response = await self.http.request("POST", "/v1/embeddings", json=body, ok=(200,), idempotent=True)
            data = self.http.parse(response, "POST", "/v1/embeddings").get("data", [])
            ordered = sorted(data, key=lambda row: row.get("index", 0))
            if len(ordered) != len(batch):
                raise self.http.error(
                    "POST",
                    "/v1/embeddings",
                    200,
                    f"asked for {len(batch)} embeddings, got {len(ordered)}",
                    hint="the embedding model may truncate or drop inputs; check its limits",
                )
            vectors.extend([float(x) for x in row["embedding"]] for row in ordered)
        logger.debug("nim embeddings: %d texts with %s in %d batches", len(texts), model, -(-len(texts) // batch_size))
        return vectors

    async def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """One chat completion (OpenAI shape), e.g. to check that a judge or a deployment answers."""
        body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages], **params}
        if tools is not None:
            body["tools"] = [dict(t) for t in tools]
        if tool_choice is not None:
            body["tool_choice"] = tool_choice if isinstance(tool_choice, str) else dict(tool_choice)
        response = await self.http.request("POST", "/v1/chat/completions", json=body, ok=(200,), idempotent=True)
        result = self.http.parse(response, "POST", "/v1/chat/completions")
        if not isinstance(result, dict) or "choices" not in result:
            raise self.http.error(
                "POST", "/v1/chat/completions", 200, "the answer has no choices", hint="is nim_url the NIM (proxy)?"
            )
        return result

    async def ready(self) -> bool:
        """True when ``/v1/health/ready`` answers 200 (a NIM's own health; the proxy may not expose it)."""
        response = await self.http.request("GET", "/v1/health/ready", ok=(200, 404, 503))
        return response.status_code == 200
