"""Idempotency for jobs that cost GPU hours: never launch a second fine-tune or eval for the same inputs.

A job carries a content hash (of its inputs: dataset manifest, config, hyperparameters) and the flow
run id in ``custom_fields`` and, for services whose list filters cannot reach ``custom_fields``, in its
description as ``[flywheel hash=... run=...]``. Before creating, the service modules list the
namespace's jobs and reuse one whose key matches and that is not failed or cancelled.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from agent_flywheel.nemo.http import NemoAPIError, ServiceHTTP

logger = logging.getLogger(__name__)

T = TypeVar("T")

HASH_FIELD = "flywheel_content_hash"
RUN_FIELD = "flywheel_run_id"
_TAG_RE = re.compile(r"\[flywheel hash=(?P<hash>[0-9a-f]+) run=(?P<run>[^\]\s]+)\]")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def content_hash(*parts: Any) -> str:
    """SHA-256 of the canonical JSON of ``parts`` (pydantic models dumped): same inputs, same hash."""
    canonical = json.dumps(_jsonable(list(parts)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IdempotencyKey:
    """What makes two job requests "the same": a content hash and, optionally, the flow run id.

    With a ``flow_run_id`` only jobs of that run match (a retried or resumed run finds its own job); without
    one, any job with the same content hash matches.
    """

    content_hash: str
    flow_run_id: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{8,64}", self.content_hash):
            raise ValueError("content_hash must be 8-64 lower-case hex characters (see content_hash())")

    @property
    def short(self) -> str:
        """The first 12 hex digits, for names (long enough to never collide within a namespace)."""
        return self.content_hash[:12]

    @property
    def tag(self) -> str:
        """The marker written into descriptions: ``[flywheel hash=<16 hex> run=<run id or ->]``."""
        return f"[flywheel hash={self.content_hash[:16]} run={self.flow_run_id or '-'}]"

    def describe(self, text: str) -> str:
        """A description that carries the key after a human-readable text."""
        return f"{text} {self.tag}".strip()

    def custom_fields(self) -> dict[str, str]:
        """``custom_fields`` entries carrying the key (string values: the Customizer requires them)."""
        fields = {HASH_FIELD: self.content_hash}
        if self.flow_run_id:
            fields[RUN_FIELD] = self.flow_run_id
        return fields

    def matches(
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        custom_fields: Mapping[str, Any] | None = None,
    ) -> bool:
        """True when a job's fields carry this key (custom_fields first, then the description tag)."""
        fields = custom_fields or {}
        found_hash = fields.get(HASH_FIELD)
        found_run = fields.get(RUN_FIELD)
        if found_hash is None:
            for text in (description or "", name or ""):
                tag = _TAG_RE.search(text)
                if tag:
                    found_hash = tag["hash"]
                    found_run = None if tag["run"] == "-" else tag["run"]
                    break
        if not isinstance(found_hash, str) or len(found_hash) < 8:
            return False
        if not (self.content_hash.startswith(found_hash) or found_hash.startswith(self.content_hash)):
            return False
        return self.flow_run_id is None or found_run == self.flow_run_id


async def create_or_find(
    http: ServiceHTTP,
    what: str,
    create: Callable[[], Awaitable[T]],
    find: Callable[[], Awaitable[T | None]] | None,
) -> T:
    """Create once: reuse what ``find`` returns; after an ambiguous failure, look again before resending.

    A timeout or a 5xx on a creating POST may hide a job the service did create; resending blindly would
    start a second one. With no ``find`` (no idempotency key) an ambiguous failure is raised as is.
    """
    if find is not None:
        existing = await find()
        if existing is not None:
            logger.info("nemo %s: reusing the existing %s with the same idempotency key", http.service, what)
            return existing
    attempt = 0
    while True:
        attempt += 1
        try:
            return await create()
        except NemoAPIError as err:
            if not err.ambiguous or find is None:
                raise
            existing = await find()
            if existing is not None:
                logger.warning(
                    "nemo %s: creating %s failed ambiguously (%s) but the service had created it; reusing it",
                    http.service,
                    what,
                    err.status or "no response",
                )
                return existing
            if attempt > http.retry.max_retries:
                raise
            await http.sleep(http.backoff(attempt))
