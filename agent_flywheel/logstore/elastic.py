"""The Elasticsearch side of :class:`~agent_flywheel.logstore.client.LogStoreClient`: the official client (8.x, 9.x)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from elastic_transport import TlsError, TransportError
from elasticsearch import ApiError, Elasticsearch, NotFoundError, helpers

from agent_flywheel.logstore.adapter_errors import store_answers
from agent_flywheel.logstore.client import SHARD_DOC

#: The client's own errors that mean "the store failed" (for messages that name the store).
FAILURES: tuple[type[Exception], ...] = (ApiError, TransportError)


class ElasticsearchClient:
    """A :class:`~agent_flywheel.logstore.client.LogStoreClient` over ``elasticsearch.Elasticsearch``.

    ``where`` names the store in messages (a URL without credentials).
    """

    product = "Elasticsearch"
    failures = FAILURES

    def __init__(self, es: Elasticsearch, where: str = "Elasticsearch") -> None:
        self.es = es
        self.where = where

    def _answers(self, index: str | None = None) -> AbstractContextManager[None]:
        """The client's errors in the store's terms: a missing index, an untrusted certificate."""
        return store_answers(self.where, index, NotFoundError, TlsError)

    def tiebreaker(self) -> str:
        """Elasticsearch has ``_shard_doc`` since 7.12."""
        return SHARD_DOC

    def get_mapping(self, index: str) -> dict[str, Any]:
        with self._answers(index):
            return dict(self.es.indices.get_mapping(index=index).body)

    def index_exists(self, index: str) -> bool:
        with self._answers():
            return bool(self.es.indices.exists(index=index))

    def create_index(self, index: str, mappings: dict[str, Any], settings: dict[str, Any]) -> bool:
        with self._answers():
            try:
                self.es.indices.create(index=index, mappings=mappings, settings=settings)
            except ApiError as exc:
                if "resource_already_exists" in str(exc):
                    return False
                raise
        return True

    def refresh(self, index: str) -> None:
        with self._answers(index):
            self.es.indices.refresh(index=index)

    def count(self, index: str, query: dict[str, Any]) -> int:
        with self._answers(index):
            return int(self.es.count(index=index, query=query)["count"])

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._answers(index):
            return dict(self.es.search(index=index, **body).body)

    def open_pit(self, index: str, keep_alive: str) -> str:
        with self._answers(index):
            return str(self.es.open_point_in_time(index=index, keep_alive=keep_alive)["id"])

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._answers():
            return dict(self.es.search(pit={"id": pit_id, "keep_alive": keep_alive}, **body).body)

    def close_pit(self, pit_id: str) -> None:
        with self._answers():
            self.es.close_point_in_time(id=pit_id)

    def bulk(self, actions: Iterable[dict[str, Any]], chunk_size: int) -> Iterator[tuple[bool, dict[str, Any]]]:
        with self._answers():
            yield from helpers.streaming_bulk(
                self.es,
                actions,
                chunk_size=chunk_size,
                raise_on_error=False,
                max_retries=3,
                initial_backoff=1,
                max_backoff=30,
            )

    def close(self) -> None:
        self.es.close()
