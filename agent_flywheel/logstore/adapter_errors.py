"""What both log store adapters do alike: turn their product client's errors into the store's terms."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from agent_flywheel.logstore.client import trust_error
from agent_flywheel.logstore.shape import IndexMissing


@contextmanager
def store_answers(
    where: str, index: str | None, not_found: type[Exception], tls_failure: type[Exception]
) -> Iterator[None]:
    """A product client's errors in the store's terms, alike for both adapters: its ``not_found`` as
    :class:`~agent_flywheel.logstore.shape.IndexMissing` when the call named an ``index``, its ``tls_failure`` as
    :class:`~agent_flywheel.logstore.client.TrustError`; anything else passes through."""
    try:
        yield
    except not_found:
        if index is not None:
            raise IndexMissing(f"log index {index!r} does not exist") from None
        raise
    except tls_failure as exc:
        raise trust_error(where, exc) from exc
