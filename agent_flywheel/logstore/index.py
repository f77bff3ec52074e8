"""The log index: the flywheel's own mapping, and creating the index with it.

Queries are built by :class:`~agent_flywheel.logstore.shape.IndexShape`, which also reads indices created by
producers with other mappings.
"""

from __future__ import annotations

from typing import Any

from agent_flywheel.logstore.client import LogStoreClient

#: The log index mapping. Unlike the blueprint's ``"dynamic": "strict"`` (which rejects any extra
#: top-level field a producer adds), unknown fields are mapped dynamically and kept. ``timestamp`` reads
#: ISO 8601 and epoch *seconds* (the blueprint's ``date`` read epoch seconds as milliseconds).
#: ``request``/``response`` are stored, not indexed: they are only ever read back whole.
#: ``date_detection`` is off so that a string field that once looked like a date does not later reject
#: documents where it does not.
LOG_INDEX_MAPPING: dict[str, Any] = {
    "dynamic": True,
    "date_detection": False,
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date", "format": "strict_date_optional_time||epoch_second"},
        "request": {"type": "object", "enabled": False},
        "response": {"type": "object", "enabled": False},
    },
}
LOG_INDEX_SETTINGS: dict[str, Any] = {"index": {"mapping": {"total_fields": {"limit": 1000}}}}


def ensure_index(client: LogStoreClient, index: str) -> bool:
    """Create the log index with :data:`LOG_INDEX_MAPPING` if it does not exist; True when created.

    Writing into a missing index would let Elasticsearch guess the mapping (``timestamp`` as a number
    or a string), after which range queries on it silently return nothing.
    """
    if client.index_exists(index):
        return False
    return client.create_index(index, LOG_INDEX_MAPPING, LOG_INDEX_SETTINGS)  # False: created by another in between
