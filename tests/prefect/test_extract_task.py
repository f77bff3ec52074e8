"""The extract-logs task: records stream from the log store into one record-cache segment per read window.

The log store is the paging fake of the extraction property tests, handed out by the block's client
factory; the run logger is replaced, so ``extract_logs.fn`` runs as the flow would call it, minus retries.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from elastic_transport import ConnectionError as TransportConnectionError

import tasks.extract
from agent_flywheel.config import DataSplitConfig, ExtractionConfig, FlywheelConfig, NIMConfig
from agent_flywheel.datasets.build import InsufficientRecordsError
from agent_flywheel.logstore.reader import extract
from agent_flywheel.records.cache import READS_FILE, RecordCache, SegmentWriter
from agent_flywheel.records.documents import to_document
from agent_flywheel.records.keys import key_file
from agent_flywheel.records.quarantine import QuarantineWriter
from agent_flywheel.records.schema import LogRecord
from agent_flywheel.records.stored_cache import MANIFEST_FILE
from agent_flywheel.records.validation import validate_record
from blocks.log_store import LogStore
from tasks.extract import ExtractedLogs, extract_logs
from tasks.state_store import record_cache
from tests.support.blueprint_records import AIVA
from tests.support.fake_es import CLIENT, INDEX, WORKLOAD, FakeLogStoreClient

TEACHER = "meta/llama-3.3-70b-instruct"


class Store(FakeLogStoreClient):
    """The paging fake, closable, and failing from search number ``fail_at`` on (a dropped connection)."""

    def __init__(self, documents: list[tuple[str, Any]], fail_at: int | None = None) -> None:
        super().__init__(documents)
        self.fail_at = fail_at
        self.before_failing: list[Any] = []  # what the test saw just before the failure
        self.look: Any = None
        self.closed = False

    def search_pit(self, pit_id: str, keep_alive: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail_at is not None and self.searches + 1 >= self.fail_at:
            self.searches += 1
            if self.look is not None:
                self.before_failing.append(self.look())
            raise TransportConnectionError("connection reset by peer")
        return super().search_pit(pit_id, keep_alive, body)

    def close(self) -> None:
        self.closed = True


def _record(n: int, model: str | None = TEACHER) -> dict[str, Any]:
    raw = copy.deepcopy(AIVA)
    raw["workload_id"], raw["client_id"] = WORKLOAD, CLIENT
    raw["timestamp"] = 1746138417 - n
    raw["request"]["messages"][1]["content"] = f"question {n}"
    if model is None:
        del raw["request"]["model"]
    else:
        raw["request"]["model"] = model
    return raw


def _documents() -> list[tuple[str, Any]]:
    """Ten hits, newest first: 6 the teacher's or naming no model, a duplicate, 2 a student's, 1 invalid."""
    sources = [_record(n) for n in range(4)]
    sources += [copy.deepcopy(sources[0]), _record(4, "student"), _record(5, None), _record(6, "student")]
    broken = _record(7)
    del broken["response"]
    sources += [broken, _record(8)]
    return [(f"doc-{n}", source) for n, source in enumerate(sources)]


def _expected_documents(documents: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The teacher's (or model-less) distinct valid records, as the cache must hold them, in reading order."""
    kept, seen = [], set()
    for _, source in documents:
        result = validate_record(copy.deepcopy(source), source="t")
        if isinstance(result, LogRecord) and result.request.model in (TEACHER, None):
            document = to_document(result)
            key = orjson.dumps(document["request"]["messages"])
            if key not in seen:
                seen.add(key)
                kept.append(document)
    return kept


def _segment_documents(segment: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in segment.read_bytes().splitlines() if line.strip()]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Calls ``extract_logs`` against a given fake store, as the flow does (no Prefect run needed)."""
    block = LogStore(url="http://elastic:secret@logs.example:9200", index=INDEX)
    current: dict[str, Store] = {}
    monkeypatch.setattr(LogStore, "get_client", lambda self: current["store"])
    monkeypatch.setattr(tasks.extract, "get_run_logger", lambda: logging.getLogger("test-extract-task"))
    cfg = FlywheelConfig(nims=[NIMConfig(model_name="small")], extraction=ExtractionConfig(page_size=3))

    def call(store: Store) -> ExtractedLogs:
        current["store"] = store
        return extract_logs.fn(WORKLOAD, CLIENT, cfg, block, tmp_path / "run")

    return call


def test_extract_logs_writes_the_teachers_records_into_one_segment_and_a_rerun_replaces_it(run: Any) -> None:
    documents = _documents()
    store = Store(documents)
    first = run(store)
    assert store.closed and store.open_pits == 0
    assert first.new_records == first.cached_records == 6
    assert (first.scanned, first.duplicates, first.already_read) == (10, 1, 0)
    assert first.other_models == {"student": 2}
    assert first.quarantined == {"missing_field": 1} and first.quarantine_file is not None
    assert first.watermark is not None and not first.incremental
    cache, _ = record_cache(WORKLOAD, CLIENT)
    (segment,) = cache.segments()
    assert key_file(segment).exists()
    assert _segment_documents(segment) == _expected_documents(documents)
    assert first.records.segments == [segment.name]  # what the dataset build is handed
    assert first.records.files[segment.name] == segment.stat().st_size

    # the watermark was not committed (the run "died" later): the same window is read and replaces its segment
    second = run(Store(documents))
    (again,) = cache.segments()
    assert again != segment and not key_file(segment).exists()
    assert second.new_records == second.cached_records == 6
    assert second.records.segments == [again.name]
    assert _segment_documents(again) == _expected_documents(documents)


@pytest.mark.parametrize(("max_records", "expected"), [(None, 230), (120, 120)])
def test_by_default_every_new_record_is_read_not_only_twice_the_dataset_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, max_records: int | None, expected: int
) -> None:
    """The blueprint (and this task before) read the newest 2 x data_split_config.limit records and skipped the
    rest for good; now a run reads the whole window since the watermark, and the limit bounds only the dataset."""
    store = Store([(f"doc-{n}", _record(n)) for n in range(230)])
    monkeypatch.setattr(LogStore, "get_client", lambda self: store)
    monkeypatch.setattr(tasks.extract, "get_run_logger", lambda: logging.getLogger("test-extract-task"))
    cfg = FlywheelConfig(
        nims=[NIMConfig(model_name="small")],
        data_split_config=DataSplitConfig(limit=50),  # 2 x limit = 100 < 230
        extraction=ExtractionConfig(page_size=40, max_records=max_records),
    )
    result = extract_logs.fn(WORKLOAD, CLIENT, cfg, LogStore(index=INDEX), tmp_path / "run")
    assert result.new_records == result.cached_records == expected
    assert result.scanned == expected


def test_records_read_but_every_one_filtered_stop_the_run_naming_the_filter_not_no_new_data(run: Any) -> None:
    """The blueprint's records answered by meta/llama-3.1-70b-instruct against the default teacher: nothing to
    learn from, ever, is said with the counts and the line to change (not "no new records since the last run")."""
    documents = [(f"doc-{n}", _record(n, "meta/llama-3.1-70b-instruct")) for n in range(5)]
    broken = _record(9)
    del broken["response"]
    with pytest.raises(InsufficientRecordsError) as stopped:
        run(Store([*documents, ("doc-9", broken)]))
    message = str(stopped.value)
    assert message.startswith(f"0 usable records for workload {WORKLOAD!r} / client {CLIENT!r}. What was filtered")
    assert "- log store: 6 records read in 1 read(s); 1 quarantined (1 missing_field)" in message
    assert f"teacher.model_name: {TEACHER}): 5 records skipped as answered by another model" in message
    assert "Models seen: meta/llama-3.1-70b-instruct: 5" in message
    assert "`teacher.model_name: meta/llama-3.1-70b-instruct` (or) `extraction.teacher_only: false`" in message
    assert "dataset build" not in message  # extraction stopped the run: no build ran

    # once a run kept records, a later read whose records are all filtered out is no new data, not an error
    kept = run(Store([("doc-8", _record(8))]))
    assert kept.new_records == kept.cached_records == 1
    tasks.extract.commit_watermark.fn(WORKLOAD, CLIENT, kept.watermark)
    later = run(Store([("doc-8", _record(8)), *documents]))
    assert (later.new_records, later.cached_records, later.already_read) == (0, 1, 1)
    assert later.other_models == {"meta/llama-3.1-70b-instruct": 5}


def test_a_log_store_failing_mid_way_leaves_no_partial_segment_and_keeps_the_earlier_one(run: Any) -> None:
    documents = _documents()
    run(Store(documents))
    cache, _ = record_cache(WORKLOAD, CLIENT)
    (earlier,) = cache.segments()
    earlier_bytes, earlier_keys = earlier.read_bytes(), key_file(earlier).read_bytes()

    written: list[int] = []
    original_write = SegmentWriter.write

    def counting_write(self: SegmentWriter, document: dict[str, Any], digest: bytes | None = None) -> None:
        written.append(1)
        original_write(self, document, digest)

    failing = Store(documents, fail_at=3)  # pages 1 and 2 arrive, then the connection drops
    failing.look = lambda: (len(written), sorted(p.name for p in cache.dir.glob("*.jsonl")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegmentWriter, "write", counting_write)
        with pytest.raises(RuntimeError, match="nothing was lost") as failure:
            run(failing)
    assert "secret" not in str(failure.value)
    # while the store was being read, the records of the pages already read were in a second segment
    ((records_written, segments_then),) = failing.before_failing
    assert records_written == 4  # pages 1-2 (doc-0..5): doc-0..3 written; doc-4 a duplicate, doc-5 a student's
    assert len(segments_then) == 2 and earlier.name in segments_then
    # after the failure: the partial segment is gone, the earlier one is there and unchanged
    assert cache.segments() == [earlier]
    assert earlier.read_bytes() == earlier_bytes and key_file(earlier).read_bytes() == earlier_keys
    # and what the earlier run read (reads.json), and the cache's manifest (the storage is this disk)
    expected = [earlier.name, key_file(earlier).name, READS_FILE, MANIFEST_FILE]
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(expected)
    assert failing.closed and failing.open_pits == 0


def test_replace_window_keeps_segments_of_other_windows_and_writes_nothing_empty(tmp_path: Path) -> None:
    cache = RecordCache(tmp_path / "records", WORKLOAD, CLIENT)
    cache.append([to_document(validate_record(_record(99), source="t"))], label="window-other")  # type: ignore[arg-type]
    (other,) = cache.segments()
    documents = _documents()

    def read(sink: Any) -> Any:
        with QuarantineWriter(tmp_path / "q.jsonl") as quarantine:
            return extract(
                Store(documents),  # type: ignore[arg-type]
                INDEX,
                workload_id=WORKLOAD,
                client_id=CLIENT,
                page_size=4,
                quarantine=quarantine,
                sink=sink,
            )

    result, written = cache.replace_window("window-a", read)
    assert result.records == [] and written == result.valid - result.duplicates == 8
    assert len(cache.segments()) == 2 and other in cache.segments()
    result, written = cache.replace_window("window-a", read, keep=lambda record: False)
    assert written == 0 and cache.segments() == [other]  # replaced by nothing: an empty segment is not kept
