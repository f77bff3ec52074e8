"""Run state's interfaces and their file-backed implementations: names, documents, blobs, the stored record cache."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agent_flywheel.records.cache import READS_FILE, RecordCache
from agent_flywheel.records.stored_cache import MANIFEST_FILE, CacheManifest, pull, push, read_manifest
from agent_flywheel.state import (
    MAX_NAME_LENGTH,
    STATE_PREFIX_ENV,
    FileBlobStore,
    FileStateStore,
    MemoryStateStore,
    StateError,
    StateStore,
    state_name,
)

VARIABLE_NAME = re.compile(r"[a-z0-9_-]+")  # what Prefect accepts as a Variable name


@pytest.fixture(autouse=True)
def _default_state_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """State names as an installation without FLYWHEEL_STATE_PREFIX makes them (the tests' harness sets one)."""
    monkeypatch.delenv("FLYWHEEL_STATE_PREFIX", raising=False)


# --- names --------------------------------------------------------------------------------------------


def test_readable_parts_make_a_readable_name() -> None:
    assert state_name("watermark", "customer-support", "demo") == "flywheel-watermark-customer-support--demo"


def test_the_prefix_comes_from_the_environment_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_PREFIX_ENV, "staging")
    assert state_name("cooldown", "w", "c") == "staging-cooldown-w--c"
    monkeypatch.setenv(STATE_PREFIX_ENV, "Bad Prefix")
    with pytest.raises(StateError, match=STATE_PREFIX_ENV):
        state_name("cooldown", "w", "c")


@pytest.mark.parametrize(
    "parts",
    [("A", "b"), ("a/b", "c"), ("a--b", "c"), ("a-", "b"), ("-a", "b"), ("", "b"), ("émoji 🙂", "c"), ("x" * 300, "c")],
)
def test_any_parts_make_a_valid_name_that_no_other_parts_share(parts: tuple[str, str]) -> None:
    name = state_name("watermark", *parts)
    assert VARIABLE_NAME.fullmatch(name) and len(name) <= MAX_NAME_LENGTH
    others = [("a", "b"), ("a", "-b"), ("a-b", "c"), ("a_b", "c"), ("a", "b-c"), ("ab", "c"), ("x" * 299, "c")]
    assert all(state_name("watermark", *other) != name for other in others if other != parts)


def test_names_that_would_blur_the_separator_are_told_apart() -> None:
    assert state_name("w", "a-", "b") != state_name("w", "a", "-b")
    assert state_name("w", "a--b", "c") != state_name("w", "a", "b--c")
    assert state_name("w", "A", "b") != state_name("w", "a", "b")


# --- documents ------------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "files"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    return MemoryStateStore() if request.param == "memory" else FileStateStore(tmp_path / "state")


def test_a_document_is_written_whole_read_back_listed_and_deleted(store: StateStore) -> None:
    assert store.get("flywheel-x-a") is None
    store.set("flywheel-x-a", {"ids": ["1", "2"], "n": 3})
    store.set("flywheel-x-b", [1, 2])
    store.set("flywheel-y-a", "other kind")
    assert store.get("flywheel-x-a") == {"ids": ["1", "2"], "n": 3}
    store.set("flywheel-x-a", {"n": 4})  # replaced, not merged
    assert store.get("flywheel-x-a") == {"n": 4}
    assert store.names("flywheel-x-") == ["flywheel-x-a", "flywheel-x-b"]
    store.delete("flywheel-x-a")
    store.delete("flywheel-x-a")  # none is no error
    assert store.get("flywheel-x-a") is None
    assert store.names("flywheel-x-") == ["flywheel-x-b"]


def test_file_documents_are_atomic_and_an_unreadable_one_is_an_error(tmp_path: Path) -> None:
    store = FileStateStore(tmp_path)
    store.set("flywheel-x-a", {"n": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flywheel-x-a.json"]  # no temporary file left
    (tmp_path / "flywheel-x-b.json").write_text("{half")
    with pytest.raises(StateError, match=r"flywheel-x-b\.json: not valid JSON"):
        store.get("flywheel-x-b")
    with pytest.raises(ValueError, match="state_name"):
        store.get("../escape")


# --- blobs ----------------------------------------------------------------------------------------------


def test_file_blobs_round_trip_and_refuse_paths_outside_their_root(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "storage")
    blobs.write_bytes("state/a/1.json", b"{}")
    assert blobs.read_bytes("state/a/1.json") == b"{}"
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 10)
    blobs.upload(local, "records/w/c/s.jsonl")
    blobs.download("records/w/c/s.jsonl", tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"x" * 10
    blobs.delete("records/w/c/s.jsonl")
    blobs.delete("records/w/c/s.jsonl")
    with pytest.raises(FileNotFoundError):
        blobs.read_bytes("records/w/c/s.jsonl")
    with pytest.raises(FileNotFoundError):
        blobs.download("records/w/c/s.jsonl", tmp_path / "none.bin")
    for bad in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError, match="relative"):
            blobs.read_bytes(bad)
    assert blobs.local_root() == tmp_path / "storage"


# --- the record cache in a storage -------------------------------------------------------------------------


def _documents(start: int, count: int) -> list[dict[str, object]]:
    return [
        {
            "timestamp": 1_700_000_000 + i,
            "workload_id": "w",
            "client_id": "c",
            "request": {"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]},
            "response": {"choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]},
        }
        for i in range(start, start + count)
    ]


class RemoteLike(FileBlobStore):
    """Blobs in a directory that pretends not to be on this machine (so caches are copied, as from S3)."""

    def local_root(self) -> Path | None:
        return None


def test_a_cache_pushed_by_one_worker_is_pulled_exactly_by_another(tmp_path: Path) -> None:
    storage = RemoteLike(tmp_path / "storage")
    prefix = "records/w/c"
    worker_a = RecordCache(tmp_path / "a", "w", "c")
    worker_a.append(_documents(0, 5), "window-1")
    first = push(worker_a, storage, prefix, None)
    assert len(first.segments) == 1 and read_manifest(storage, prefix) == first

    worker_b = RecordCache(tmp_path / "b", "w", "c")
    pull(worker_b, storage, first)
    assert list(worker_b.iter_documents()) == list(worker_a.iter_documents())
    assert worker_b.count() == 5

    # worker B reads a new window and replaces nothing; worker A, stale, is brought in line from the manifest
    worker_b.append(_documents(5, 3), "window-2")
    second = push(worker_b, storage, prefix, first)
    assert len(second.segments) == 2
    pull(worker_a, storage, second)
    assert [p.name for p in worker_a.segments()] == second.segments
    assert worker_a.count() == 8

    # a full rebuild on A: every stored file of the old cache is removed from the storage and from B
    worker_a.clear()
    worker_a.append(_documents(0, 2), "window-3")
    third = push(worker_a, storage, prefix, second)
    stored = sorted(p.name for p in (tmp_path / "storage" / "records" / "w" / "c").iterdir())
    assert stored == sorted([*third.files, MANIFEST_FILE])
    (tmp_path / "b" / "w" / "c" / "stray.jsonl").write_text("{}\n")  # a local leftover the manifest does not list
    pull(worker_b, storage, third)
    assert [p.name for p in worker_b.segments()] == third.segments and worker_b.count() == 2


def test_pull_redownloads_a_truncated_segment_and_carries_the_reads_summary(tmp_path: Path) -> None:
    storage = RemoteLike(tmp_path / "storage")
    source = RecordCache(tmp_path / "a", "w", "c")
    source.append(_documents(0, 4), "window-1")
    (source.dir / READS_FILE).write_text(json.dumps({"window-1": {"scanned": 9}}))
    manifest = push(source, storage, "records/w/c", None)
    assert manifest.reads == {"window-1": {"scanned": 9}}
    target = RecordCache(tmp_path / "b", "w", "c")
    pull(target, storage, manifest)
    segment = target.segments()[0]
    segment.write_bytes(segment.read_bytes()[:10])  # a copy cut short
    pull(target, storage, manifest)
    assert target.count() == 4 and target.read_summary().scanned == 9


def test_a_missing_segment_or_a_broken_manifest_says_what_to_do(tmp_path: Path) -> None:
    storage = RemoteLike(tmp_path / "storage")
    source = RecordCache(tmp_path / "a", "w", "c")
    source.append(_documents(0, 2), "window-1")
    manifest = push(source, storage, "records/w/c", None)
    storage.delete(manifest.path(manifest.segments[0]))
    with pytest.raises(StateError, match="full_rebuild"):
        pull(RecordCache(tmp_path / "b", "w", "c"), storage, manifest)
    storage.write_bytes(f"records/w/c/{MANIFEST_FILE}", b"[]")
    with pytest.raises(StateError, match="not a record cache manifest"):
        read_manifest(storage, "records/w/c")


def test_in_place_storage_copies_nothing(tmp_path: Path) -> None:
    storage = FileBlobStore(tmp_path / "storage")
    cache = RecordCache(tmp_path / "storage" / "records", "w", "c")
    cache.append(_documents(0, 3), "window-1")
    manifest = push(cache, storage, "records/w/c", None)
    pull(cache, storage, manifest)
    files = sorted(p.name for p in cache.dir.iterdir())
    assert files == sorted([*manifest.files, MANIFEST_FILE, READS_FILE])
    assert CacheManifest.model_validate_json((cache.dir / MANIFEST_FILE).read_text()) == manifest


def test_a_per_home_prefix_gives_every_home_its_own_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(STATE_PREFIX_ENV, "@home")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "a"))
    in_a = state_name("watermark", "w", "c")
    assert VARIABLE_NAME.fullmatch(in_a) and in_a == state_name("watermark", "w", "c")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "b"))
    assert state_name("watermark", "w", "c") != in_a
