"""The log shipper's buffer: bounded, keeps records through an outage, counts every failure and drop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from simulators.agent.logship import LogShipper, _retryable
from simulators.threaded import free_port


def record(i: int) -> dict[str, Any]:
    return {"timestamp": i, "workload_id": "w", "client_id": "c", "request": {}, "response": {}}


def test_buffer_is_bounded_and_drops_the_oldest_with_a_count() -> None:
    shipper = LogShipper("http://127.0.0.1:1", "flywheel", max_buffer=3)
    for i in range(5):
        shipper.add(f"id-{i}", record(i))
    assert shipper.pending == 3
    stats = shipper.stats()
    assert stats["records_dropped"] == 2 and stats["records_queued"] == 5


async def test_an_outage_keeps_the_records_and_counts_the_failure() -> None:
    shipper = LogShipper(f"http://127.0.0.1:{free_port()}", "flywheel", batch_size=2, timeout_s=1.0)
    for i in range(5):
        shipper.add(f"id-{i}", record(i))
    result = await shipper.flush(refresh=True)
    assert not result.ok and result.pending == 5 and result.indexed == 0 and not result.refreshed
    assert result.error
    stats = shipper.stats()
    assert stats["write_failures"] == 1 and stats["records_failed"] == 2 and stats["pending"] == 5
    assert [doc_id for doc_id, _ in shipper._pending] == [f"id-{i}" for i in range(5)]  # order kept
    closed = await shipper.close(timeout_s=2.0)
    assert closed.pending == 5 and shipper.stats()["write_failures"] == 2


async def _silent_server() -> tuple[asyncio.base_events.Server, int]:
    """A log server that accepts connections and never answers (every write is in progress until cut off)."""

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(60)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_records_in_a_write_in_progress_count_as_pending_and_a_cancelled_write_keeps_them() -> None:
    server, port = await _silent_server()
    async with server:
        shipper = LogShipper(f"http://127.0.0.1:{port}", "flywheel", batch_size=2, timeout_s=30.0)
        for i in range(3):
            shipper.add(f"id-{i}", record(i))
        flushing = asyncio.create_task(shipper.flush())
        await asyncio.sleep(0.2)  # the first batch of 2 is on its way and stuck
        assert shipper.stats()["pending"] == 3 and len(shipper._pending) == 1
        flushing.cancel()  # what a shutdown does when its final flush times out
        with contextlib.suppress(asyncio.CancelledError):
            await flushing
        assert shipper.pending == 3
        assert [doc_id for doc_id, _ in shipper._pending] == ["id-0", "id-1", "id-2"]  # back, in order
        await shipper.client.close()


async def test_a_disabled_shipper_queues_nothing() -> None:
    shipper = LogShipper("http://127.0.0.1:1", "flywheel", enabled=False)
    shipper.add("x", record(0))
    assert shipper.pending == 0 and (await shipper.flush()).ok


def test_which_errors_are_retried() -> None:
    assert _retryable({"status": 429})
    assert _retryable({"status": 503, "exception": object()})
    assert not _retryable({"status": 400, "error": {"type": "mapper_parsing_exception"}})
    assert not _retryable({"status": 404, "exception": object()})
