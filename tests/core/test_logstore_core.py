"""The log store's logic that needs no server: queries, paging protocol, watermarks and their files."""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_flywheel.config import ExtractionConfig
from agent_flywheel.logstore import reader
from agent_flywheel.logstore.client import SHARD_DOC, trust_error
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.logstore.index import LOG_INDEX_MAPPING
from agent_flywheel.logstore.reader import scan_records
from agent_flywheel.logstore.shape import SECONDS_BELOW, IndexMissing, IndexShape, TimeUnit
from agent_flywheel.logstore.watermarks import FileWatermarkStore, MemoryWatermarkStore, Watermark, extraction_window

T0 = datetime(2025, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_mapping_keeps_extra_fields_and_reads_epoch_seconds() -> None:
    assert LOG_INDEX_MAPPING["dynamic"] is True
    properties = LOG_INDEX_MAPPING["properties"]
    assert properties["workload_id"] == {"type": "keyword"}
    assert properties["client_id"] == {"type": "keyword"}
    assert properties["timestamp"]["format"] == "strict_date_optional_time||epoch_second"
    assert properties["request"]["enabled"] is False and properties["response"]["enabled"] is False


OWN = IndexShape.own("idx")
NAT = IndexShape(
    "idx",
    workload_field="workload_id.keyword",
    client_field="client_id.keyword",
    timestamp_type="long",
    unit=TimeUnit.SECONDS,
    numeric_range=True,
)
BLUEPRINT_SECONDS = IndexShape("idx", timestamp_type="date", unit=TimeUnit.SECONDS, numeric_range=True)
LONG_MILLIS = IndexShape("idx", timestamp_type="long", unit=TimeUnit.MILLIS, numeric_range=True, millis_numbers=True)


def test_own_index_queries_use_term_filters_and_a_half_open_millisecond_range() -> None:
    lower = OWN.position(T0 + timedelta(microseconds=1999))  # floored: nothing in that millisecond is missed
    query = OWN.window_query("w", "c", lower, OWN.position(T0 + timedelta(seconds=1)))
    filters = query["bool"]["filter"]
    assert filters[0] == {"term": {"workload_id": "w"}}
    assert filters[1] == {"term": {"client_id": "c"}}
    assert filters[2] == {
        "range": {
            "timestamp": {
                "gte": "2025-05-01T12:00:00.001Z",
                "lt": "2025-05-01T12:00:01.000Z",
                "format": "strict_date_optional_time",
            }
        }
    }
    assert OWN.window_query("w", "c")["bool"]["filter"][2:] == []
    assert OWN.position(datetime(2025, 5, 1, 14, 0)) == OWN.position(datetime(2025, 5, 1, 14, 0, tzinfo=UTC))


def test_a_nat_index_is_queried_on_keyword_sub_fields_with_epoch_seconds() -> None:
    seconds = int(T0.timestamp())
    assert NAT.position(T0 + timedelta(milliseconds=999)) == seconds  # floored to the second the field stores
    filters = NAT.window_query("<workflow>", "c", seconds, seconds + 10, upper_inclusive=True)["bool"]["filter"]
    assert filters == [
        {"term": {"workload_id.keyword": "<workflow>"}},
        {"term": {"client_id.keyword": "c"}},
        {"range": {"timestamp": {"gte": seconds, "lte": seconds + 10}}},  # numbers, no date format on a long
    ]
    assert NAT.time_at(seconds) == T0 and NAT.span(timedelta(minutes=10)) == 600
    assert NAT.document_timestamp(T0 + timedelta(milliseconds=5)) == seconds


def test_a_blueprint_date_of_epoch_seconds_is_queried_with_the_seconds_as_millis() -> None:
    seconds = int(T0.timestamp())
    clause = BLUEPRINT_SECONDS.range_clause(seconds)
    # Elasticsearch stored 1746100800 as that many milliseconds: the bound must be the same number
    # below 1e11: real dates (milliseconds) beside the seconds would sort after every one of them
    assert clause == {"range": {"timestamp": {"gte": seconds, "lt": SECONDS_BELOW, "format": "epoch_millis"}}}
    assert BLUEPRINT_SECONDS.time_at(seconds) == T0
    assert BLUEPRINT_SECONDS.document_timestamp(T0) == seconds  # the writer keeps the index in one form
    assert OWN.document_timestamp(T0) == "2025-05-01T12:00:00Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1746100800123, "2025-05-01T12:00:00.123000Z"),
        ("1746100800123", "2025-05-01T12:00:00.123000Z"),
        ("2025-05-01T12:00:00Z", "2025-05-01T12:00:00Z"),  # ISO stays
        (True, True),
        (None, None),
        (-5, -5),  # validation names what is wrong with it
        (1746100800, 1746100800),  # epoch seconds beside the milliseconds: validation reads them as seconds
        ("1746100800.5", "1746100800.5"),
    ],
)
def test_millisecond_numbers_are_given_to_validation_as_iso(value: Any, expected: Any) -> None:
    assert LONG_MILLIS.record_timestamp(value) == expected
    assert OWN.record_timestamp(value) == value  # seconds: validation reads them itself


def test_an_unmapped_field_reads_nothing_and_says_so() -> None:
    empty = IndexShape("idx", workload_field=None)
    assert not empty.readable
    assert "no record has workload_id yet" in empty.describe()
    assert OWN.readable and OWN.describe().endswith("filtering on workload_id and client_id, timestamp date")
    assert NAT.describe().endswith("workload_id.keyword and client_id.keyword, timestamp long holding epoch seconds")
    assert "date holding epoch seconds (which Elasticsearch reads as milliseconds)" in BLUEPRINT_SECONDS.describe()


# --------------------------------------------------------------------------------------------------
# The paging protocol, against a fake that checks how it is called
# --------------------------------------------------------------------------------------------------


class FakeES:
    """Just enough of a log store client for scan_records: PIT open/close, search with sort + search_after."""

    def __init__(self, hits: list[dict[str, Any]]) -> None:
        self.hits = hits
        self.open_pits: set[str] = set()
        self.searches: list[dict[str, Any]] = []
        self._next = 0

    def tiebreaker(self) -> str:
        return SHARD_DOC

    def get_mapping(self, index: str) -> dict[str, Any]:
        if index == "missing":
            raise IndexMissing(f"log index {index!r} does not exist")
        return {index: {"mappings": LOG_INDEX_MAPPING}}

    def open_pit(self, index: str, keep_alive: str) -> str:
        self._next += 1
        pit = f"pit-{self._next}"
        self.open_pits.add(pit)
        return pit

    def close_pit(self, pit_id: str) -> None:
        self.open_pits.discard(pit_id.split("/")[0])

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        self.searches.append({"pit": {"id": pit_id, "keep_alive": keep_alive}, **body})
        assert pit_id.split("/")[0] in self.open_pits
        assert body["sort"][1] == {SHARD_DOC: body["sort"][0]["timestamp"]["order"]}
        start = 0
        if "search_after" in body:
            start = next(i for i, h in enumerate(self.hits) if h["sort"] == body["search_after"]) + 1
        page = self.hits[start : start + body["size"]]
        return {"pit_id": pit_id.split("/")[0] + f"/{len(self.searches)}", "hits": {"hits": page}}


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
    legacy = Watermark(T0, frozenset({"b", "a"}))  # as an earlier version saved it: no position
    assert legacy.to_json() == {"timestamp": "2025-05-01T12:00:00Z", "ids": ["a", "b"]}
    assert Watermark.from_json(json.loads(json.dumps(legacy.to_json()))) == legacy
    seconds = int(T0.timestamp())
    mark = Watermark.at(TimeUnit.SECONDS, seconds, frozenset({"x"}), seconds - 600)
    assert mark.to_json() == {
        "timestamp": "2025-05-01T12:00:00Z",
        "ids": ["x"],
        "position": seconds,
        "unit": "s",
        "start": seconds - 600,
        "start_timestamp": "2025-05-01T11:50:00Z",  # for people
    }
    assert Watermark.from_json(json.loads(json.dumps(mark.to_json()))) == mark
    for bad in ({"timestamp": "never"}, ["x"], {**mark.to_json(), "unit": "h"}, {**mark.to_json(), "position": "1"}):
        with pytest.raises(ValueError):
            Watermark.from_json(bad)


def test_a_watermark_resumes_in_the_unit_of_the_index() -> None:
    seconds = int(T0.timestamp())
    mark = Watermark.at(TimeUnit.SECONDS, seconds, start=seconds - 600)
    assert mark.resume(NAT) == seconds - 600  # the same unit: the stored start, exactly
    assert mark.resume(OWN) == (seconds - 600) * 1000  # the index was recreated in milliseconds
    # an earlier version saved the true time even for a blueprint index of 1970 dates: read in its seconds
    assert Watermark(T0).resume(BLUEPRINT_SECONDS) == seconds
    assert Watermark(T0).resume(OWN) == seconds * 1000


P = int(T0.timestamp() * 1000)


@pytest.mark.parametrize(
    ("previous", "newest", "recent", "lower", "stopped_at", "expected"),
    [
        (None, None, [], None, None, None),  # nothing read, nothing saved
        (Watermark(T0, frozenset({"a"})), None, [], P, None, Watermark(T0, frozenset({"a"}))),  # unchanged
        # the next read looks back 10 ms and skips the records read there
        (None, P, [(P, "x"), (P, "y"), (P - 10, "z"), (P - 11, "old")], None, None,
         Watermark.at(TimeUnit.MILLIS, P, frozenset({"x", "y", "z"}), P - 10)),
        # never before where this read started: older records were read by earlier runs
        (None, P, [(P, "x"), (P - 5, "z")], P - 3, None, Watermark.at(TimeUnit.MILLIS, P, frozenset({"x"}), P - 3)),
        # records were deleted: never go back
        (Watermark.at(TimeUnit.MILLIS, P + 5), P, [(P, "x")], P, None, Watermark.at(TimeUnit.MILLIS, P + 5)),
        # limit reached: past the last position read, which may be only partly read
        (None, P, [(P, "x"), (P - 2, "y")], None, P - 2, Watermark.at(TimeUnit.MILLIS, P, frozenset({"x"}), P - 1)),
        (None, P, [(P, "x")], None, P, Watermark.at(TimeUnit.MILLIS, P, frozenset(), P + 1)),
    ],
)  # fmt: skip
def test_next_watermark(
    previous: Watermark | None,
    newest: int | None,
    recent: list[tuple[int, str]],
    lower: int | None,
    stopped_at: int | None,
    expected: Watermark | None,
) -> None:
    got = reader.next_watermark(OWN, previous, newest, recent, lower=lower, window=10, stopped_at=stopped_at)
    assert got == expected


def test_a_crowded_late_arrival_window_is_shortened_to_whole_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_WATERMARK_IDS", 3)
    recent = [(P, "a"), (P, "b"), (P - 1, "c"), (P - 1, "d"), (P - 2, "e")]
    got = reader.next_watermark(OWN, None, P, recent, lower=None, window=10)
    assert got == Watermark.at(TimeUnit.MILLIS, P, frozenset({"a", "b"}), P)  # never half of position P - 1


MS = timedelta(milliseconds=1)


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


@pytest.mark.parametrize(
    ("sort", "unit", "position"),
    [
        ([P, 3], TimeUnit.MILLIS, P),
        ([-(2**63), 3], TimeUnit.MILLIS, None),  # no timestamp: sorted last with Long.MIN_VALUE (descending)
        ([2**63 - 1, 3], TimeUnit.SECONDS, None),  # ... or Long.MAX_VALUE (ascending)
        ([253402300800, 3], TimeUnit.SECONDS, None),  # after the year 9999
        ([253402300800, 3], TimeUnit.MILLIS, 253402300800),  # as milliseconds: 1978
        (["2025-05-01", 3], TimeUnit.MILLIS, None),
        ([True], TimeUnit.MILLIS, None),
        ([], TimeUnit.MILLIS, None),
        (None, TimeUnit.MILLIS, None),
    ],
)
def test_a_hits_position_is_its_timestamp_sort_value_when_that_is_a_time(
    sort: Any, unit: TimeUnit, position: int | None
) -> None:
    assert reader._position(sort, unit) == position


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        ("SSLError([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006))",
         "(certificate verify failed: self-signed certificate); its certificate is not signed by a CA"),
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for "
         "'es.internal'. (_ssl.c:1006)", "use the host name its certificate names"),
        ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)", "client_cert"),
        ('Fingerprints did not match. Expected "aa11", got "bb22"', "fingerprint is bb22, not the pinned aa11"),
    ],
)  # fmt: skip
def test_a_tls_failure_is_one_line_naming_the_setting_to_fix(failure: str, says: str) -> None:
    message = str(trust_error("https://es.internal:9200", ConnectionError(failure)))
    assert "\n" not in message and message.startswith("log store at https://es.internal:9200: TLS failed")
    assert says in message
