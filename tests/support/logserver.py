"""The log server simulator in the test's own process, with the official Elasticsearch client to it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from elasticsearch import Elasticsearch

from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer


@contextlib.contextmanager
def logserver_client(state_dir: Path) -> Iterator[Elasticsearch]:
    """A client to a log server serving from ``state_dir`` on a free port; both stop on leaving."""
    from simulators.logserver.server import create_app

    with ThreadedServer(create_app(LocalStackConfig(state_dir=str(state_dir)))) as server:
        client = Elasticsearch(server.url, request_timeout=30)
        yield client
        client.close()
