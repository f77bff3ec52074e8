"""Ship the agent's LLM-call records to the log store (Elasticsearch API) in small, buffered bulk batches.

The flywheel's input is this log, so no record may be lost quietly, and logging may never slow a chat or
break it. Records wait in a bounded in-memory buffer and are written with the official client's
``helpers.async_bulk`` on a short interval (sooner when a batch fills up), on ``flush()`` and at shutdown.
When the log server is down, the records stay in the buffer and are retried with a growing pause; only when
the buffer is full are the oldest dropped, and every failure and drop is counted for ``GET /admin/stats``.
Each record has a deterministic ``_id``, so a retry after a half-written batch does not duplicate it.
Before its first write the shipper creates the index when it is missing, as the NVIDIA Data Flywheel
Blueprint's services do (:data:`BLUEPRINT_INDEX_MAPPINGS`): ``dynamic: strict`` (a record with any other
top-level field is refused), ``workload_id``/``client_id`` keywords, ``timestamp`` a ``date`` and
``request``/``response`` stored without indexing their insides. Records therefore carry exactly those five
fields, with ``timestamp`` in ISO 8601 (UTC): that ``date`` mapping would read epoch seconds as milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError
from elasticsearch.helpers import async_bulk

logger = logging.getLogger("simulators.agent")

#: The log index as the blueprint creates it (``src/lib/integration/es_client.py``).
BLUEPRINT_INDEX_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "workload_id": {"type": "keyword"},
        "client_id": {"type": "keyword"},
        "timestamp": {"type": "date"},
        "request": {"type": "object", "dynamic": False, "properties": {}},
        "response": {"type": "object", "dynamic": False, "properties": {}},
    },
}
BLUEPRINT_INDEX_SETTINGS: dict[str, Any] = {
    "mapping": {"total_fields": {"limit": 1000}},
    "index": {"mapping": {"ignore_malformed": True}},
}

_MAX_BACKOFF_S = 5.0


@dataclass
class FlushResult:
    """What one flush did."""

    indexed: int = 0
    rejected: int = 0
    pending: int = 0
    ok: bool = True
    refreshed: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The form returned by ``POST /admin/flush``."""
        return {
            "ok": self.ok,
            "indexed": self.indexed,
            "rejected": self.rejected,
            "pending": self.pending,
            "refreshed": self.refreshed,
            "error": self.error,
        }


def _retryable(info: dict[str, Any]) -> bool:
    """A whole-request failure (server error, overload) is retried; a document the server refused is not."""
    status = info.get("status")
    if status == 429 or (isinstance(status, int) and status >= 500):
        return True
    return "exception" in info and not (isinstance(status, int) and 400 <= status < 500)


class LogShipper:
    """A buffered writer of log records to one index of an Elasticsearch-compatible server."""

    def __init__(
        self,
        url: str,
        index: str,
        *,
        batch_size: int = 50,
        flush_interval_s: float = 0.5,
        max_buffer: int = 20_000,
        timeout_s: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.url = url
        self.index = index
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffer = max_buffer
        self.timeout_s = timeout_s
        self.enabled = enabled
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._writing = 0  # records taken from _pending for the write in progress
        self._es: AsyncElasticsearch | None = None
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._consecutive_failures = 0
        self._index_ready = False
        self.records_queued = 0
        self.records_indexed = 0
        self.records_rejected = 0
        self.records_dropped = 0
        self.records_failed = 0
        self.write_failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    @property
    def client(self) -> AsyncElasticsearch:
        """The Elasticsearch client (created on first use)."""
        if self._es is None:
            self._es = AsyncElasticsearch(
                self.url, request_timeout=self.timeout_s, max_retries=0, retry_on_timeout=False
            )
        return self._es

    def start(self) -> None:
        """Start the background flusher (call from inside the running event loop)."""
        if self.enabled and self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="agent-log-flusher")

    def add(self, doc_id: str, record: dict[str, Any]) -> None:
        """Queue one record; never blocks and never raises."""
        if not self.enabled:
            return
        self._pending.append((doc_id, record))
        self.records_queued += 1
        self._trim()
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    def _trim(self) -> None:
        while len(self._pending) > self.max_buffer:
            doc_id, _ = self._pending.popleft()
            self.records_dropped += 1
            if self.records_dropped == 1 or self.records_dropped % 1000 == 0:
                logger.warning(
                    "log buffer full (%d): dropped record %s (%d dropped so far)",
                    self.max_buffer,
                    doc_id,
                    self.records_dropped,
                )

    @property
    def pending(self) -> int:
        """Records not yet written: waiting, or in the write in progress."""
        return len(self._pending) + self._writing

    async def _run(self) -> None:
        while True:
            if self._consecutive_failures:  # the server is failing: back off, whatever the buffer says
                await asyncio.sleep(min(self.flush_interval_s * 2**self._consecutive_failures, _MAX_BACKOFF_S))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            if self._pending:
                await self.flush()

    async def _ensure_index(self) -> None:
        """Create the index as the blueprint does if missing; connection errors propagate (the write is retried)."""
        if self._index_ready:
            return
        try:
            if not await self.client.indices.exists(index=self.index):
                await self.client.indices.create(
                    index=self.index, mappings=BLUEPRINT_INDEX_MAPPINGS, settings=BLUEPRINT_INDEX_SETTINGS
                )
        except ApiError as exc:  # created by someone else in between, or a server without index creation
            if "resource_already_exists" not in str(exc):
                logger.warning("could not create index %s with the log mapping (%s); writing anyway", self.index, exc)
        self._index_ready = True

    def _actions(self, batch: list[tuple[str, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
        for doc_id, record in batch:
            yield {"_op_type": "index", "_index": self.index, "_id": doc_id, "_source": record}

    def _failed(self, batch: list[tuple[str, dict[str, Any]]], error: str) -> None:
        self._pending.extendleft(reversed(batch))  # back at the front, in their original order
        self._trim()
        self.write_failures += 1
        self.records_failed += len(batch)
        self._consecutive_failures = min(self._consecutive_failures + 1, 8)
        self.last_error, self.last_error_at = error, time.time()
        logger.warning("log write of %d record(s) to %s failed: %s", len(batch), self.url, error)

    async def flush(self, refresh: bool = False) -> FlushResult:
        """Write everything pending in batches; with ``refresh``, make it searchable right away."""
        result = FlushResult()
        if not self.enabled:
            return result
        async with self._flush_lock:
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
                self._writing = len(batch)
                try:
                    await self._ensure_index()
                    done, errors = await async_bulk(
                        self.client,
                        self._actions(batch),
                        chunk_size=len(batch),
                        raise_on_error=False,
                        raise_on_exception=False,
                    )
                except Exception as exc:  # connection refused, timeout, anything: keep the records, count it
                    self._writing = 0
                    self._failed(batch, f"{type(exc).__name__}: {exc}")
                    result.ok, result.error = False, self.last_error
                    break
                except BaseException:  # cancelled (a shutdown's flush timed out): keep the records, unwritten
                    self._writing = 0
                    self._pending.extendleft(reversed(batch))
                    raise
                self._writing = 0
                result.indexed += done
                self.records_indexed += done
                retry, reason = self._sort_errors(errors, result)
                if retry:
                    by_id = dict(batch)
                    self._failed([(i, by_id[i]) for i in retry if i in by_id], reason)
                    result.ok, result.error = False, self.last_error
                    break
                self._consecutive_failures = 0
            if refresh and result.ok:
                result.refreshed = await self._refresh(result)
        result.pending = self.pending
        return result

    def _sort_errors(self, errors: Any, result: FlushResult) -> tuple[list[str], str]:
        """Count refused documents; return the ids worth retrying and the first retryable error."""
        retry: list[str] = []
        reason = ""
        for error in errors if isinstance(errors, list) else []:
            _, info = next(iter(error.items()))
            if _retryable(info):
                retry.append(str(info.get("_id")))
                reason = reason or f"status {info.get('status')}: {str(info.get('error'))[:300]}"
            else:
                result.rejected += 1
                self.records_rejected += 1
                logger.warning("log server refused record %s: %s", info.get("_id"), info.get("error"))
        return retry, reason

    async def _refresh(self, result: FlushResult) -> bool:
        try:
            await self.client.indices.refresh(index=self.index)
        except NotFoundError:
            return False  # nothing was ever written to the index
        except Exception as exc:
            result.error = f"refresh failed: {type(exc).__name__}: {exc}"
            return False
        return True

    async def close(self, timeout_s: float = 10.0) -> FlushResult:
        """Stop the flusher, write what is left (bounded by ``timeout_s``), close the client."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        result = FlushResult(pending=len(self._pending))
        if self._pending:
            try:
                result = await asyncio.wait_for(self.flush(), timeout=timeout_s)
            except TimeoutError:
                result = FlushResult(ok=False, pending=self.pending, error="final flush timed out")
            if result.pending:
                logger.warning("shutting down with %d log record(s) not written", result.pending)
        if self._es is not None:
            await self._es.close()
            self._es = None
        return result

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /admin/stats``."""
        return {
            "enabled": self.enabled,
            "url": self.url,
            "index": self.index,
            "pending": self.pending,
            "records_queued": self.records_queued,
            "records_indexed": self.records_indexed,
            "records_rejected": self.records_rejected,
            "records_dropped": self.records_dropped,
            "records_failed": self.records_failed,
            "write_failures": self.write_failures,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }
