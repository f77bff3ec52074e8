"""Points in time and scroll contexts: snapshots of an index that expire unless kept alive.

A context pins a storage snapshot (a sequence number); documents written later are invisible to it, and
documents deleted or replaced later stay visible until the context closes or expires, as in ES.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, replace

from simulators.logserver.dates import time_value_seconds
from simulators.logserver.errors import EsError, context_missing, illegal_argument
from simulators.logserver.search import SearchRequest
from simulators.logserver.storage import IndexMeta, Storage


@dataclass
class PitContext:
    """An open point in time on one index."""

    id: str
    index: str
    index_id: int
    snapshot: int
    expires_at: float


@dataclass
class ScrollContext:
    """An open scroll: the original request, where the last page ended and the total computed first."""

    id: str
    index: str
    index_id: int
    snapshot: int
    request: SearchRequest
    cursor: list[object] | None
    total: tuple[int | None, str]
    expires_at: float


def _keep_alive(value: object) -> float:
    try:
        return time_value_seconds(str(value))
    except ValueError as exc:
        raise illegal_argument(str(exc)) from None


class Contexts:
    """The registry of open points in time and scrolls; expired ones release their snapshot lazily."""

    def __init__(self, storage: Storage, max_scrolls: int = 500) -> None:
        self.storage = storage
        self.max_scrolls = max_scrolls
        self.lock = threading.Lock()
        self.pits: dict[str, PitContext] = {}
        self.scrolls: dict[str, ScrollContext] = {}

    def expire(self) -> None:
        """Close every context whose keep-alive has passed."""
        now = time.monotonic()
        with self.lock:
            pits = [p for p in self.pits.values() if p.expires_at <= now]
            scrolls = [s for s in self.scrolls.values() if s.expires_at <= now]
            for pit in pits:
                del self.pits[pit.id]
            for scroll in scrolls:
                del self.scrolls[scroll.id]
        for pit in pits:
            self.storage.release_snapshot(pit.index_id, pit.snapshot)
        for scroll in scrolls:
            self.storage.release_snapshot(scroll.index_id, scroll.snapshot)

    def open_pit(self, meta: IndexMeta, keep_alive: object) -> PitContext:
        """``POST /{index}/_pit?keep_alive=``."""
        seconds = _keep_alive(keep_alive)
        self.expire()
        snapshot = self.storage.open_snapshot(meta)
        ctx = PitContext(secrets.token_urlsafe(32), meta.name, meta.id, snapshot, time.monotonic() + seconds)
        with self.lock:
            self.pits[ctx.id] = ctx
        return ctx

    def pit(self, pit_id: str, keep_alive: object | None) -> PitContext:
        """A live point in time (its keep-alive extended when given); 404 when unknown or expired."""
        self.expire()
        with self.lock:
            ctx = self.pits.get(pit_id)
            if ctx is None:
                raise context_missing(pit_id)
            if keep_alive is not None:
                ctx.expires_at = time.monotonic() + _keep_alive(keep_alive)
            return ctx

    def close_pit(self, pit_id: str) -> int:
        """``DELETE /_pit``: how many were freed (0 or 1)."""
        with self.lock:
            ctx = self.pits.pop(pit_id, None)
        if ctx is None:
            return 0
        self.storage.release_snapshot(ctx.index_id, ctx.snapshot)
        return 1

    def open_scroll(
        self,
        meta: IndexMeta,
        request: SearchRequest,
        snapshot: int,
        keep_alive: object,
        total: tuple[int | None, str],
        cursor: list[object] | None,
    ) -> ScrollContext:
        """Register a scroll whose snapshot the caller has already opened."""
        seconds = _keep_alive(keep_alive)
        self.expire()
        with self.lock:
            if len(self.scrolls) >= self.max_scrolls:
                self.storage.release_snapshot(meta.id, snapshot)
                raise EsError(
                    500,
                    "exception",
                    f"Trying to create too many scroll contexts. Must be less than or equal to: [{self.max_scrolls}]. "
                    "This limit can be set by changing the [search.max_open_scroll_context] setting.",
                )
            ctx = ScrollContext(
                secrets.token_urlsafe(32),
                meta.name,
                meta.id,
                snapshot,
                replace(request, aggs=[]),
                cursor,
                total,
                time.monotonic() + seconds,
            )
            self.scrolls[ctx.id] = ctx
            return ctx

    def scroll(self, scroll_id: str, keep_alive: object | None) -> ScrollContext:
        """A live scroll (keep-alive extended when given); 404 when unknown or expired."""
        self.expire()
        with self.lock:
            ctx = self.scrolls.get(scroll_id)
            if ctx is None:
                raise context_missing(scroll_id)
            if keep_alive is not None:
                ctx.expires_at = time.monotonic() + _keep_alive(keep_alive)
            return ctx

    def close_scrolls(self, scroll_ids: list[str] | None) -> int:
        """``DELETE /_search/scroll``: the given ids, or all of them when None."""
        with self.lock:
            ids = list(self.scrolls) if scroll_ids is None else scroll_ids
            closed = [self.scrolls.pop(i) for i in ids if i in self.scrolls]
        for ctx in closed:
            self.storage.release_snapshot(ctx.index_id, ctx.snapshot)
        return len(closed)

    def drop_index(self, index_id: int) -> None:
        """Forget every context of a deleted index."""
        with self.lock:
            for pit_id in [k for k, v in self.pits.items() if v.index_id == index_id]:
                del self.pits[pit_id]
            for scroll_id in [k for k, v in self.scrolls.items() if v.index_id == index_id]:
                del self.scrolls[scroll_id]
