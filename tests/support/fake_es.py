"""An in-memory stand-in for the Elasticsearch client calls that extraction makes."""

from __future__ import annotations

from typing import Any

from agent_flywheel.logstore.index import LOG_INDEX_MAPPING

WORKLOAD, CLIENT, INDEX = "wl", "cl", "flywheel"


class FakeIndices:
    """``es.indices``: an index of the flywheel's own mapping, as :func:`inspect_index` reads it."""

    def __init__(self, mappings: dict[str, Any] | None = None) -> None:
        self.mappings = LOG_INDEX_MAPPING if mappings is None else mappings

    def get_mapping(self, *, index: str) -> dict[str, Any]:
        return {index: {"mappings": self.mappings}}


class FakeElasticsearch:
    """Serves documents the way ``extract`` reads a store (point in time + ``search_after``), content unjudged.

    A real cluster only stores JSON objects; this one hands back anything, so ``extract`` is tested against
    sources no store would return too.
    """

    def __init__(self, documents: list[tuple[str, Any]]) -> None:
        self.documents = documents
        self.indices = FakeIndices()
        self.open_pits = 0
        self.searches = 0

    def open_point_in_time(self, *, index: str, keep_alive: str) -> dict[str, str]:
        self.open_pits += 1
        return {"id": "pit-1"}

    def close_point_in_time(self, *, id: str) -> dict[str, bool]:
        self.open_pits -= 1
        return {"succeeded": True}

    def search(self, *, size: int, search_after: list[int] | None = None, **_: Any) -> dict[str, Any]:
        self.searches += 1
        start = 0 if search_after is None else search_after[0] + 1
        page = self.documents[start : start + size]
        hits = [{"_id": doc_id, "_source": source, "sort": [start + n]} for n, (doc_id, source) in enumerate(page)]
        return {"pit_id": "pit-1", "hits": {"hits": hits}}

    def count(self, *, index: str, query: Any) -> dict[str, int]:
        return {"count": len(self.documents)}
