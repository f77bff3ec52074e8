"""The NeMo simulator reads datasets from the Data Store as huggingface_hub does: a dropped connection is tried
again (a GET changes nothing); a Data Store that stays unreachable fails the job with the URL."""

from __future__ import annotations

import httpx
import pytest

from simulators.nemo import upstream
from simulators.nemo.upstream import DataStoreClient, HfLocation, HttpPool, UpstreamError


class _Pool(HttpPool):
    def __init__(self, handler: httpx.MockTransport) -> None:
        super().__init__()
        self._mock = httpx.AsyncClient(transport=handler)

    def client(self) -> httpx.AsyncClient:
        return self._mock


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_: float) -> None:
        return None

    monkeypatch.setattr(upstream.asyncio, "sleep", instant)


async def test_a_dropped_connection_is_tried_again() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if len(calls) == 1:
            raise httpx.ReadError("connection reset by peer", request=request)
        return httpx.Response(200, json=[{"type": "file", "path": "eval_data.jsonl"}])

    client = DataStoreClient("http://datastore.test/v1/hf", _Pool(httpx.MockTransport(handler)))
    assert await client.list_files(HfLocation("ns", "set")) == ["eval_data.jsonl"]
    assert len(calls) == 2


async def test_a_data_store_that_stays_unreachable_fails_with_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = DataStoreClient("http://datastore.test/v1/hf", _Pool(httpx.MockTransport(handler)))
    with pytest.raises(
        UpstreamError, match=r"Data Store unreachable at http://datastore.test/v1/hf/api/datasets/ns/set"
    ):
        await client.list_files(HfLocation("ns", "set"))


async def test_any_other_http_error_fails_the_read_at_once_with_the_url() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        raise httpx.TooManyRedirects("redirect loop", request=request)

    client = DataStoreClient("http://datastore.test/v1/hf", _Pool(httpx.MockTransport(handler)))
    with pytest.raises(UpstreamError, match=r"Data Store unreachable at http://datastore.test/.*TooManyRedirects"):
        await client.list_files(HfLocation("ns", "set"))
    assert len(calls) == 1
