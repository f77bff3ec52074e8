"""The OpenSearch side of :class:`~agent_flywheel.logstore.client.LogStoreClient`: the official ``opensearch-py`` client.

OpenSearch's point in time (2.4 and later) is opened at ``POST /{index}/_search/point_in_time?keep_alive=`` (its id
is ``pit_id``), searched with ``"pit": {"id", "keep_alive"}`` in the body like Elasticsearch's, and freed at
``DELETE /_search/point_in_time`` with ``{"pit_id": [...]}``. The ``_shard_doc`` tiebreaker exists only from
OpenSearch 3.3; before that, paging breaks ties on ``_id`` (exact, at the cost of loading ``_id`` values on
the cluster's heap).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from opensearchpy import NotFoundError, OpenSearch, RequestError, SSLError, helpers
from opensearchpy.exceptions import OpenSearchException

from agent_flywheel.logstore.adapter_errors import store_answers
from agent_flywheel.logstore.client import DOC_ID, SHARD_DOC

#: The client's own errors that mean "the store failed" (for messages that name the store).
FAILURES: tuple[type[Exception], ...] = (OpenSearchException,)

#: The first OpenSearch release with the ``_shard_doc`` sort.
SHARD_DOC_SINCE = (3, 3)


def tiebreaker_for(info: dict[str, Any]) -> str:
    """The paging tiebreaker a cluster supports, from its ``GET /`` answer (an Elasticsearch-compatible one that
    is not OpenSearch has ``_shard_doc``)."""
    version = info.get("version") or {}
    if str(version.get("distribution", "")).lower() != "opensearch":
        return SHARD_DOC
    parts = str(version.get("number", "0")).split(".")
    try:
        release = tuple(int(part) for part in parts[:2])
    except ValueError:
        return DOC_ID
    return SHARD_DOC if release >= SHARD_DOC_SINCE else DOC_ID


class OpenSearchClient:
    """A :class:`~agent_flywheel.logstore.client.LogStoreClient` over ``opensearchpy.OpenSearch``.

    ``where`` names the store in messages; ``tiebreaker`` is read from the cluster's version when not given.
    """

    product = "OpenSearch"
    failures = FAILURES

    def __init__(self, client: OpenSearch, where: str = "OpenSearch", tiebreaker: str | None = None) -> None:
        self.client = client
        self.where = where
        self._tiebreaker = tiebreaker

    def _answers(self, index: str | None = None) -> AbstractContextManager[None]:
        """The client's errors in the store's terms: a missing index, an untrusted certificate."""
        return store_answers(self.where, index, NotFoundError, SSLError)

    def tiebreaker(self) -> str:
        if self._tiebreaker is None:
            with self._answers():
                self._tiebreaker = tiebreaker_for(dict(self.client.info()))
        return self._tiebreaker

    def get_mapping(self, index: str) -> dict[str, Any]:
        with self._answers(index):
            return dict(self.client.indices.get_mapping(index=index))

    def index_exists(self, index: str) -> bool:
        with self._answers():
            return bool(self.client.indices.exists(index=index))

    def create_index(self, index: str, mappings: dict[str, Any], settings: dict[str, Any]) -> bool:
        with self._answers():
            try:
                self.client.indices.create(index=index, body={"mappings": mappings, "settings": settings})
            except RequestError as exc:
                if "resource_already_exists" in str(exc):
                    return False
                raise
        return True

    def refresh(self, index: str) -> None:
        with self._answers(index):
            self.client.indices.refresh(index=index)

    def count(self, index: str, query: dict[str, Any]) -> int:
        with self._answers(index):
            return int(self.client.count(index=index, body={"query": query})["count"])

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._answers(index):
            return dict(self.client.search(index=index, body=body))

    def open_pit(self, index: str, keep_alive: str) -> str:
        with self._answers(index):
            return str(self.client.create_pit(index=index, params={"keep_alive": keep_alive})["pit_id"])

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._answers():
            return dict(self.client.search(body={**body, "pit": {"id": pit_id, "keep_alive": keep_alive}}))

    def close_pit(self, pit_id: str) -> None:
        with self._answers():
            self.client.delete_pit(body={"pit_id": [pit_id]})

    def bulk(self, actions: Iterable[dict[str, Any]], chunk_size: int) -> Iterator[tuple[bool, dict[str, Any]]]:
        with self._answers():
            yield from helpers.streaming_bulk(
                self.client,
                actions,
                chunk_size=chunk_size,
                raise_on_error=False,
                max_retries=3,
                initial_backoff=1,
                max_backoff=30,
            )

    def close(self) -> None:
        self.client.close()
