"""A validated record as data: the document indexed and cached, its content id, and its conversation hash
(the dedupe key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from agent_flywheel.records.conversation import conversation_digest
from agent_flywheel.records.schema import LogRecord, Message
from agent_flywheel.records.timestamps import format_timestamp


def _hashed_message(message: Message) -> dict[str, Any]:
    """The parts of a message the conversation hash reads (role, content, tool calls' names and arguments),
    as the dumped message has them: dumping the whole model costs more than the hash itself."""
    calls = message.tool_calls
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": None
        if calls is None
        else [{"function": {"name": call.function.name, "arguments": call.function.arguments}} for call in calls],
    }


def record_digest(record: LogRecord) -> bytes:
    """The dedupe key as 32 bytes: the SHA-256 digest of
    :func:`~agent_flywheel.records.conversation.conversation_hash` of the request (:func:`record_hash` is its hex)."""
    tools = record.request.tools
    return conversation_digest(
        [_hashed_message(message) for message in record.request.messages],
        None if tools is None else [{"function": {"name": tool.function.name}} for tool in tools],
    )


def record_hash(record: LogRecord) -> str:
    """The dedupe key: :func:`~agent_flywheel.records.conversation.conversation_hash` of the request.

    Same conversation and same tools offered means the same hash, whatever the timestamp, answer,
    whitespace or argument encoding; the dataset build dedupes on it across train and eval.
    """
    return record_digest(record).hex()


def to_document(record: LogRecord) -> dict[str, Any]:
    """The record as JSON-able data for indexing: the producer's keys, canonical timestamp and arguments.

    Only keys the producer wrote are emitted (no ``null`` defaults appear), so re-reading the document
    gives back the same record.
    """
    document = record.model_dump(mode="json", exclude_unset=True)
    document["timestamp"] = format_timestamp(record.timestamp)
    return document


def document_id(document: Mapping[str, Any], *, without_timestamp: bool = False) -> str:
    """A content hash of an indexed document: re-importing the same file creates no duplicates.

    ``without_timestamp`` leaves the timestamp out, for records stamped with the import time (the producer
    wrote none), so importing the same file later gives the same ids.
    """
    if without_timestamp:
        document = {key: value for key, value in document.items() if key != "timestamp"}
    encoded = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()
