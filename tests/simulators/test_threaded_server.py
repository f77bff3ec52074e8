"""The tests' in-process server: a port somebody else holds is named as the likely cause, not a bare timeout."""

from __future__ import annotations

import socket

import httpx
import pytest
from fastapi import FastAPI

from simulators.threaded import ThreadedServer


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def test_it_serves_until_stopped() -> None:
    with ThreadedServer(_app()) as server:
        assert httpx.get(f"{server.url}/ping", timeout=30).json() == {"ok": "yes"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # uvicorn exits its thread
def test_a_taken_port_is_said_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"stopped before it listened \(is the port taken\?\)"):
            ThreadedServer(_app(), port=port).start()
