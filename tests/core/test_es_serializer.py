"""The log store's JSON decoder gives exactly what the standard library gives, and uses orjson for pages."""

from __future__ import annotations

import gc
import json
import math
from typing import Any

import pytest
from elastic_transport import SerializationError
from elasticsearch.serializer import JsonSerializer
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_flywheel.logstore.elastic import ElasticsearchClient
from agent_flywheel.logstore.serializer import LogStoreSerializer
from blocks.log_store import LogStore

SERIALIZER = LogStoreSerializer()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),  # lone surrogates included: json.dumps escapes them, orjson refuses them
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, of the same types all the way down (1 is not 1.0, -0.0 is not 0.0, nan equals nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(values, st.booleans())
def test_decodes_every_json_text_as_the_standard_library_does(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _same(SERIALIZER.loads(text), json.loads(text))


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_decode_or_fail_as_with_the_standard_library(data: bytes) -> None:
    try:
        expected = JsonSerializer().loads(data)
    except SerializationError:
        with pytest.raises(SerializationError):
            SERIALIZER.loads(data)
        return
    assert _same(SERIALIZER.loads(data), expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"n": 123456789012345678901234567890}', 123456789012345678901234567890),  # orjson: a float
        (b'{"n": -9223372036854775809}', -9223372036854775809),
        (b'{"n": NaN}', math.nan),  # orjson refuses it; the validator quarantines it
        (b'{"n": 1e400}', math.inf),
    ],
)
def test_what_orjson_would_alter_or_refuse_is_decoded_as_json_decodes_it(text: bytes, expected: Any) -> None:
    assert _same(SERIALIZER.loads(text)["n"], expected)


def test_an_ordinary_page_is_decoded_by_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    """Otherwise the serializer would be correct and no faster."""
    calls: list[bytes] = []
    original = JsonSerializer.json_loads
    monkeypatch.setattr(JsonSerializer, "json_loads", lambda self, data: calls.append(data) or original(self, data))
    page = {"hits": {"hits": [{"_id": "a", "_source": {"timestamp": 1746138417, "n": 10**17}, "sort": [1, 2]}]}}
    assert SERIALIZER.loads(json.dumps(page).encode()) == page
    assert calls == []
    SERIALIZER.loads(b'{"order_id": "1234567890123456789"}')  # a long digit run, even in a string: json
    assert len(calls) == 1


def test_the_log_store_client_decodes_with_it_in_plain_and_compatibility_mode() -> None:
    client = LogStore().get_client()
    assert isinstance(client, ElasticsearchClient)
    collection = client.es.transport.serializers
    for mimetype in ("application/json", "application/vnd.elasticsearch+json"):
        assert isinstance(collection.get_serializer(mimetype), LogStoreSerializer)


@pytest.mark.parametrize("collecting", [True, False])
def test_the_garbage_collector_is_left_as_it_was(collecting: bool) -> None:
    was = gc.isenabled()
    try:
        gc.enable() if collecting else gc.disable()
        SERIALIZER.loads(b'{"a": [1, 2, {"b": null}]}')
        with pytest.raises(SerializationError):
            SERIALIZER.loads(b"{not json")
        assert gc.isenabled() is collecting
    finally:
        gc.enable() if was else gc.disable()
