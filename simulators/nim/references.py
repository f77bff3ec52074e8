"""What the teacher answered: an index of the log server's records by conversation key.

The log server speaks the Elasticsearch REST API. The index is built lazily on the first lookup by paging
through the records in timestamp order (``range: timestamp >= last seen`` plus de-duplication by ``_id``,
so records that share a timestamp across a page boundary are not lost), and extended on a miss when
``_count`` shows more records than were read (at most once per ``log_refresh_min_interval_s``). Only
records answered by a reference model (the teacher by default) count; the earliest one wins.
When the log server is down or the index does not exist there is simply no reference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx

from simulators.nim.conversation import conversation_key

logger = logging.getLogger("simulators.nim")

_MAX_PAGE = 10_000


class ReferenceIndex:
    """Lazily built map from ``conversation_key(messages, tools)`` to the logged assistant message."""

    def __init__(
        self,
        base_url: str,
        index: str,
        reference_models: set[str] | None,
        page_size: int = 500,
        refresh_min_interval_s: float = 1.0,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.index = index
        self.reference_models = reference_models
        self.page_size = page_size
        self.refresh_min_interval_s = refresh_min_interval_s
        self.timeout_s = timeout_s
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._answers: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        self._last_timestamp: Any = None
        self._last_check = float("-inf")
        self._lock = asyncio.Lock()
        self.errors = 0

    @property
    def size(self) -> int:
        """Conversations with a reference answer."""
        return len(self._answers)

    @property
    def records_read(self) -> int:
        """Records read from the log server so far (all models)."""
        return len(self._seen)

    async def lookup(self, conversation: str) -> dict[str, Any] | None:
        """The logged reference message for a conversation key, or ``None``."""
        found = self._answers.get(conversation)
        if found is not None:
            return found
        async with self._lock:
            found = self._answers.get(conversation)
            if found is not None:
                return found
            if time.monotonic() - self._last_check < self.refresh_min_interval_s:
                return None
            await self._refresh()
            return self._answers.get(conversation)

    def _client(self) -> httpx.AsyncClient:
        # One client for the app's life: building one (its TLS context) costs tens of milliseconds.
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, transport=self._transport)
        return self._http

    async def aclose(self) -> None:
        """Close the HTTP client (at app shutdown)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _refresh(self) -> None:
        self._last_check = time.monotonic()
        try:
            client = self._client()
            count = await self._count(client)
            if count is None or count == len(self._seen):
                return
            if count < len(self._seen):  # records were deleted: start again
                self._answers.clear()
                self._seen.clear()
                self._last_timestamp = None
            await self._read_new(client)
        except (httpx.HTTPError, ValueError) as exc:
            self.errors += 1
            logger.debug("log server unavailable for reference lookups: %s", exc)
        finally:
            self._last_check = time.monotonic()

    async def _count(self, client: httpx.AsyncClient) -> int | None:
        response = await client.get(f"/{self.index}/_count")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return int(response.json().get("count", 0))

    async def _read_new(self, client: httpx.AsyncClient) -> None:
        size = self.page_size
        while True:
            query: dict[str, Any] = (
                {"match_all": {}}
                if self._last_timestamp is None
                else {"range": {"timestamp": {"gte": self._last_timestamp}}}
            )
            body = {"size": size, "sort": [{"timestamp": {"order": "asc"}}], "query": query}
            response = await client.post(f"/{self.index}/_search", json=body)
            if response.status_code == 404:
                return
            if response.status_code == 400:  # a log server without range/sort: read one big page instead
                logger.warning("log server refused a sorted range search; reading up to %s records unsorted", _MAX_PAGE)
                response = await client.post(
                    f"/{self.index}/_search", json={"size": _MAX_PAGE, "query": {"match_all": {}}}
                )
                response.raise_for_status()
                for hit in response.json().get("hits", {}).get("hits", []):
                    if str(hit.get("_id")) not in self._seen:
                        self._add(hit)
                return
            response.raise_for_status()
            hits = response.json().get("hits", {}).get("hits", [])
            fresh = [h for h in hits if str(h.get("_id")) not in self._seen]
            for hit in fresh:
                self._add(hit)
            if hits:
                last = hits[-1]
                source = last.get("_source") or {}
                sort = last.get("sort")
                self._last_timestamp = source.get("timestamp", sort[0] if sort else self._last_timestamp)
            if len(hits) < size:
                return
            if not fresh:  # a page full of one timestamp: widen the page to get past it
                if size >= _MAX_PAGE:
                    logger.warning("more than %s log records share one timestamp; some are skipped", _MAX_PAGE)
                    return
                size = min(_MAX_PAGE, size * 4)

    def _add(self, hit: Mapping[str, Any]) -> None:
        self._seen.add(str(hit.get("_id")))
        source = hit.get("_source")
        if not isinstance(source, Mapping):
            return
        request, response = source.get("request"), source.get("response")
        if not isinstance(request, Mapping) or not isinstance(response, Mapping):
            return
        model = request.get("model")
        if self.reference_models is not None and model is not None and model not in self.reference_models:
            return
        messages = request.get("messages")
        choices = response.get("choices")
        if not isinstance(messages, list) or not isinstance(choices, list) or not choices:
            return
        message = choices[0].get("message") if isinstance(choices[0], Mapping) else None
        if not isinstance(message, Mapping):
            return
        key = conversation_key(messages, request.get("tools"))
        self._answers.setdefault(key, dict(message))
