"""The log store's logic that needs no server: queries, paging protocol, watermarks and their files."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.config import ExtractionConfig
from agent_flywheel.logstore import index, reader
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.logstore.index import LOG_INDEX_MAPPING
from agent_flywheel.logstore.reader import scan_records
from agent_flywheel.logstore.watermarks import FileWatermarkStore, MemoryWatermarkStore, Watermark, extraction_window

T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_mapping_keeps_extra_fields_and_reads_epoch_seconds() -> None:
    assert LOG_INDEX_MAPPING["dynamic"] is True
    properties = LOG_INDEX_MAPPING["properties"]
    assert properties["workload_id"] == {"type": "keyword"}
    assert properties["client_id"] == {"type": "keyword"}
    assert properties["timestamp"]["format"] == "strict_date_optional_time||epoch_second"
    assert properties["request"]["enabled"] is False and properties["response"]["enabled"] is False


def test_query_uses_term_filters_and_a_half_open_millisecond_range() -> None:
    query = index.window_query("w", "c", T0 + timedelta(microseconds=1999), T0 + timedelta(seconds=1))
    filters = query["bool"]["filter"]
    assert filters[0] == {"term": {"workload_id": "w"}}
    assert filters[1] == {"term": {"client_id": "c"}}
    assert filters[2] == {
        "range": {
            "timestamp": {
                "gte": "2025-05-01T12:00:00.001Z",  # floored: nothing in that millisecond is missed
                "lt": "2025-05-01T12:00:01.000Z",
                "format": "strict_date_optional_time",
            }
        }
    }
    assert index.window_query("w", "c", None, None)["bool"]["filter"][2:] == []
    naive = index.es_time(datetime(2025, 5, 1, 14, 0))  # naive means UTC
    assert naive == "2025-05-01T14:00:00.000Z"


# --------------------------------------------------------------------------------------------------
# The paging protocol, against a fake that checks how it is called
# --------------------------------------------------------------------------------------------------


class FakeES:
    """Just enough of the client for scan_records: PIT open/close, search with sort + search_after."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = hits
        self.open_pits: set[str] = set()
        self.searches: list[dict[str, Any]] = []
        self._next = 0

    def open_point_in_time(self, *, index: str, keep_alive: str) -> dict[str, Any]:
        if index == "missing":
            from elasticsearch import NotFoundError

            raise NotFoundError("index_not_found_exception", meta=None, body={})  # type: ignore[arg-type]
        self._next += 1
        pit = f"pit-{self._next}"
        self.open_pits.add(pit)
        return {"id": pit}

    def close_point_in_time(self, *, id: str) -> dict[str, Any]:
        self.open_pits.discard(id.split("/")[0])
        return {"succeeded": True}

    def search(self, **kwargs: Any) -> dict[str, Any]:
        self.searches.append(kwargs)
        pit = kwargs["pit"]["id"]
        assert pit.split("/")[0] in self.open_pits
        assert "index" not in kwargs  # a PIT search names no index
        assert kwargs["sort"][1] == {"_shard_doc": kwargs["sort"][0]["timestamp"]["order"]}
        start = 0
        if "search_after" in kwargs:
            start = next(i for i, h in enumerate(self.hits) if h["sort"] == kwargs["search_after"]) + 1
        page = self.hits[start : start + kwargs["size"]]
        return {"pit_id": pit.split("/")[0] + f"/{len(self.searches)}", "hits": {"hits": page}}


def fake_hits(n: int) -> list[dict[str, Any]]:
    return [{"_id": f"d{i}", "_source": {"n": i}, "sort": [i, i]} for i in range(n)]


@pytest.mark.parametrize(("n", "page_size", "searches"), [(0, 3, 1), (7, 3, 3), (6, 3, 3), (1, 500, 1)])
def test_pages_follow_search_after_and_the_pit_is_closed(n: int, page_size: int, searches: int) -> None:
    es = FakeES(fake_hits(n))
    progress: list[tuple[int, int]] = []
    got = list(
        scan_records(
            es, "idx", workload_id="w", client_id="c", page_size=page_size, on_page=lambda *p: progress.append(p)
        )  # type: ignore[arg-type]
    )
    assert [doc_id for doc_id, _ in got] == [f"d{i}" for i in range(n)]
    assert len(es.searches) == searches
    assert es.open_pits == set()
    assert progress == [(p + 1, min(n, (p + 1) * page_size)) for p in range((n + page_size - 1) // page_size)]
    if len(es.searches) > 1:  # the refreshed PIT id of each answer is used for the next page
        assert es.searches[1]["pit"]["id"] == "pit-1/1"


def test_stopping_early_closes_the_pit() -> None:
    es = FakeES(fake_hits(10))
    with closing(scan_records(es, "idx", workload_id="w", client_id="c", page_size=4, descending=True)) as hits:  # type: ignore[arg-type]
        assert next(hits)[0] == "d0"
    assert es.open_pits == set()
    assert es.searches[0]["sort"][0] == {"timestamp": {"order": "desc"}}


def test_a_missing_index_is_an_error_naming_it() -> None:
    with pytest.raises(LogStoreError, match="'missing' does not exist"):
        list(scan_records(FakeES([]), "missing", workload_id="w", client_id="c"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Watermarks
# --------------------------------------------------------------------------------------------------


def test_watermark_json_round_trip() -> None:
    mark = Watermark(T0, frozenset({"b", "a"}))
    assert mark.to_json() == {"timestamp": "2025-05-01T12:00:00Z", "ids": ["a", "b"]}
    assert Watermark.from_json(json.loads(json.dumps(mark.to_json()))) == mark
    with pytest.raises(ValueError):
        Watermark.from_json({"timestamp": "never"})
    with pytest.raises(ValueError):
        Watermark.from_json(["x"])


MS = timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("previous", "newest", "ids", "skipped", "expected"),
    [
        (None, None, set(), False, None),  # nothing read, nothing saved
        (Watermark(T0, frozenset({"a"})), None, set(), False, Watermark(T0, frozenset({"a"}))),  # unchanged
        (None, T0, {"x", "y"}, False, Watermark(T0, frozenset({"x", "y"}))),
        (Watermark(T0, frozenset({"a"})), T0, {"b"}, False, Watermark(T0, frozenset({"a", "b"}))),  # same ms: union
        (Watermark(T0, frozenset({"a"})), T0 + MS, {"b"}, False, Watermark(T0 + MS, frozenset({"b"}))),
        (Watermark(T0, frozenset({"a"})), T0 - MS, {"b"}, False, Watermark(T0, frozenset({"a"}))),  # never back
        (None, T0, {"x"}, True, Watermark(T0 + MS, frozenset())),  # limit reached: past the newest ms
    ],
)
def test_next_watermark(
    previous: Watermark | None, newest: datetime | None, ids: set[str], skipped: bool, expected: Watermark | None
) -> None:
    assert reader._next_watermark(previous, newest, ids, skipped) == expected


def test_file_watermark_store(tmp_path: Path) -> None:
    path = tmp_path / "state" / "watermarks.json"
    store = FileWatermarkStore(path)
    assert store.get("w", "c") is None
    store.set("w", "c", Watermark(T0, frozenset({"id1"})))
    store.set("w", "c2", Watermark(T0 + MS))
    store.set("w2", "c", Watermark(T0 + 2 * MS))
    again = FileWatermarkStore(path)  # a fresh process reads the same
    assert again.get("w", "c") == Watermark(T0, frozenset({"id1"}))
    assert again.get("w", "c2") == Watermark(T0 + MS)
    assert again.get("w2", "c") == Watermark(T0 + 2 * MS)
    assert again.get("w2", "other") is None
    store.set("w", "c", Watermark(T0 + 5 * MS))
    assert again.get("w", "c") == Watermark(T0 + 5 * MS)
    assert sorted(p.name for p in path.parent.iterdir()) == ["watermarks.json", "watermarks.json.lock"]  # no temp files
    data = json.loads(path.read_text())
    assert data["version"] == 1 and "updated_at" in data["watermarks"]["w"]["c"]


@pytest.mark.parametrize("content", ["{not json", "[]", '{"watermarks": 3}'])
def test_an_unreadable_watermark_file_is_an_error_not_a_full_rescan(tmp_path: Path, content: str) -> None:
    path = tmp_path / "watermarks.json"
    path.write_text(content)
    with pytest.raises(LogStoreError, match=r"watermarks\.json"):
        FileWatermarkStore(path).get("w", "c")


def test_a_bad_entry_names_the_workload(tmp_path: Path) -> None:
    path = tmp_path / "watermarks.json"
    path.write_text(json.dumps({"version": 1, "watermarks": {"w": {"c": {"timestamp": "soon"}}}}))
    with pytest.raises(LogStoreError, match="w/c"):
        FileWatermarkStore(path).get("w", "c")


def test_extraction_window_precedence() -> None:
    store = MemoryWatermarkStore()
    mark = Watermark(T0, frozenset({"a"}))
    store.set("w", "c", mark)
    assert extraction_window(ExtractionConfig(), store, "w", "c") == (mark, None)
    assert extraction_window(ExtractionConfig(), store, "w", "other") == (None, None)
    assert extraction_window(ExtractionConfig(full_rebuild=True), store, "w", "c") == (None, None)
    since, until = extraction_window(
        ExtractionConfig(since="1746100800", until="2025-05-02T00:00:00Z", full_rebuild=True), store, "w", "c"
    )
    assert since == datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    assert until == datetime(2025, 5, 2, tzinfo=UTC)
    with pytest.raises(ValueError):
        extraction_window(ExtractionConfig(since="last tuesday"), store, "w", "c")
