"""An in-memory stand-in for the log store client calls that extraction makes (an Elasticsearch store)."""

from __future__ import annotations

from typing import Any

from agent_flywheel.logstore.client import SHARD_DOC
from agent_flywheel.logstore.elastic import FAILURES
from agent_flywheel.logstore.index import LOG_INDEX_MAPPING

WORKLOAD, CLIENT, INDEX = "wl", "cl", "flywheel"


class FakeLogStoreClient:
    """Serves documents the way ``extract`` reads a store (point in time + ``search_after``), content unjudged.

    A real cluster only stores JSON objects; this one hands back anything, so ``extract`` is tested against
    sources no store would return too. The index has the flywheel's own mapping, as :func:`inspect_index` reads it.
    """

    product = "Elasticsearch"
    failures = FAILURES

    def __init__(self, documents: list[tuple[str, Any]], mappings: dict[str, Any] | None = None) -> None:
        self.documents = documents
        self.mappings = LOG_INDEX_MAPPING if mappings is None else mappings
        self.open_pits = 0
        self.searches = 0

    def tiebreaker(self) -> str:
        return SHARD_DOC

    def get_mapping(self, index: str) -> dict[str, Any]:
        return {index: {"mappings": self.mappings}}

    def open_pit(self, index: str, keep_alive: str) -> str:
        self.open_pits += 1
        return "pit-1"

    def close_pit(self, pit_id: str) -> None:
        self.open_pits -= 1

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        self.searches += 1
        search_after = body.get("search_after")
        start = 0 if search_after is None else search_after[0] + 1
        page = self.documents[start : start + body["size"]]
        hits = [{"_id": doc_id, "_source": source, "sort": [start + n]} for n, (doc_id, source) in enumerate(page)]
        return {"pit_id": "pit-1", "hits": {"hits": hits}}

    def count(self, index: str, query: Any) -> int:
        return len(self.documents)

    def close(self) -> None:
        pass
