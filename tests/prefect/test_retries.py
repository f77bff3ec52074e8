"""Retries against stub servers: a Prefect task and the log store's client resend only what may pass."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import httpx
import pytest
from prefect import flow, task

from agent_flywheel.logstore.shape import IndexMissing
from blocks.log_store import LogStore
from tasks.retries import retry_if_transient


class StubServer:
    """An HTTP server on loopback that answers every request with ``status`` and counts the requests."""

    def __init__(self) -> None:
        self.status = 200
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                stub.requests += 1
                body = b'{"error": {"type": "stub", "reason": "stub"}, "status": %d}' % stub.status
                self.send_response(stub.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int) -> None:
        self.status, self.requests = status, 0


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = StubServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
def call_service(url: str) -> int:
    httpx.get(f"{url}/v1/things", timeout=5).raise_for_status()
    return 200


@flow
def calls_the_service(url: str) -> None:
    call_service(url)


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (404, 1), (422, 1), (429, 3), (503, 3)])
def test_a_task_retries_only_what_may_pass(stub: StubServer, status: int, attempts: int) -> None:
    stub.answer(status)
    with pytest.raises(httpx.HTTPStatusError):
        calls_the_service(stub.url)
    assert stub.requests == attempts


@pytest.mark.parametrize("kind", ["elasticsearch", "opensearch"])
@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (401, 1), (404, 1), (503, 4), (429, 4)])
def test_the_log_store_client_resends_no_4xx_answer(
    stub: StubServer, kind: Literal["elasticsearch", "opensearch"], status: int, attempts: int
) -> None:
    stub.answer(status)
    client = LogStore(kind=kind, url=stub.url, index="flywheel").get_client()
    try:
        with pytest.raises((*client.failures, IndexMissing)):  # a 404 on the index: IndexMissing
            client.count("flywheel", {"match_all": {}})
    finally:
        client.close()
    assert stub.requests == attempts  # max_retries: 3
