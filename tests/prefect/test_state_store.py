"""Run state on the Prefect server: Variables for small documents, the result storage for large ones and files.

Two "workers" here are two FLYWHEEL_HOME directories in one process, with the same state prefix and result
storage (a ``RemoteFileSystem`` on fsspec's ``memory://``, standing in for a bucket): what one writes, the other
reads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.filesystems import LocalFileSystem, RemoteFileSystem
from prefect.settings import PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK, temporary_settings

from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.logstore.shape import TimeUnit
from agent_flywheel.logstore.watermarks import StateWatermarkStore, Watermark
from agent_flywheel.paths import flywheel_home
from agent_flywheel.state import STATE_PREFIX_ENV, FileStateStore, StateError, state_name
from tasks.state_store import (
    INLINE_LIMIT,
    STATE_STORE_ENV,
    STORED,
    RemoteBlobs,
    VariableStateStore,
    blob_store,
    record_cache,
    result_storage,
    state_store,
)
from tasks.watermarks import watermark_store

pytestmark = pytest.mark.integration


def _variable(name: str) -> object:
    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(name)
    return None if variable is None else variable.value


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> str:
    """A state prefix of this test's own, shared by every home of the test (the workers of one installation)."""
    value = f"t-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv(STATE_PREFIX_ENV, value)
    return value


def bucket() -> RemoteFileSystem:
    """A bucket of this test's own."""
    return RemoteFileSystem(basepath=f"memory://bucket-{uuid.uuid4().hex[:10]}/flywheel")


@pytest.fixture
def shared_storage() -> Iterator[RemoteFileSystem]:
    """A storage block every worker reaches: saved, and named by Prefect's setting (as in production)."""
    block = bucket()
    name = f"state-{uuid.uuid4().hex[:8]}"
    block.save(name, overwrite=True)
    with temporary_settings(updates={PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: f"remote-file-system/{name}"}):
        yield block


def test_small_documents_are_variables_and_large_ones_files_the_variable_points_at(prefix: str) -> None:
    blobs = RemoteBlobs(bucket())
    store = VariableStateStore(blobs)
    name = state_name("test", "doc")
    small = {"ids": ["a", "b"]}
    store.set(name, small)
    assert _variable(name) == small and store.get(name) == small

    large = {"ids": [f"record-{i:06d}" for i in range(2_000)]}  # a watermark's late-arrival window
    assert len(json.dumps(large)) > INLINE_LIMIT
    store.set(name, large)
    pointer = _variable(name)
    assert isinstance(pointer, dict) and set(pointer) == {STORED, "sha256", "bytes"}
    stored = str(pointer[STORED])
    assert json.loads(blobs.read_bytes(stored)) == large
    assert store.get(name) == large
    assert store.names(f"{prefix}-test-") == [name]

    store.set(name, small)  # back in the Variable: the file goes
    assert _variable(name) == small
    with pytest.raises(FileNotFoundError):
        blobs.read_bytes(stored)
    store.set(name, large)
    store.delete(name)
    assert _variable(name) is None and store.get(name) is None
    assert not blobs.block.filesystem.find(blobs.block.basepath)


def test_a_pointer_this_worker_cannot_follow_is_an_error_that_says_why(prefix: str) -> None:
    name = state_name("test", "elsewhere")
    VariableStateStore(RemoteBlobs(bucket())).set(name, {"ids": ["x" * 20] * 500})
    other = VariableStateStore(RemoteBlobs(bucket()))  # a worker configured with another storage
    with pytest.raises(StateError, match="same result storage"):
        other.get(name)
    other._write(StateWatermarkStore.name("w", "c"), {STORED: "state/missing.json", "sha256": "0" * 64, "bytes": 1})
    with pytest.raises(LogStoreError, match="watermark of w/c"):  # read as an error, never as "no watermark"
        StateWatermarkStore(other).get("w", "c")


def test_a_watermark_saved_on_one_worker_is_read_on_another(
    prefix: str, shared_storage: RemoteFileSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = frozenset(f"es:flywheel/{uuid.uuid4().hex}" for _ in range(500))  # too many for a Variable
    mark = Watermark.at(TimeUnit.MILLIS, 1_772_366_400_000, ids, start=1_772_365_800_000)
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "worker-a"))
    watermark_store().set("customer-support", "demo", mark)
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "worker-b"))
    assert watermark_store().get("customer-support", "demo") == mark
    assert not (tmp_path / "worker-b" / "results").exists()  # nothing of it on worker B's disk


def test_the_result_storage_is_the_block_prefects_setting_names_else_the_homes_results(
    shared_storage: RemoteFileSystem, tmp_path: Path
) -> None:
    storage = result_storage()
    assert isinstance(storage, RemoteFileSystem) and storage.basepath == shared_storage.basepath
    assert blob_store().local_root() is None
    cache, prefix = record_cache("customer-support", "demo")
    assert prefix == "records/customer-support/demo"
    assert cache.dir.is_relative_to(flywheel_home() / "records")  # a working copy on this worker
    missing = {PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: "remote-file-system/no-such-block"}
    with temporary_settings(updates=missing), pytest.raises(StateError, match="no such block"):
        result_storage()


def test_without_the_setting_results_and_records_stay_in_the_home(tmp_path: Path) -> None:
    storage = result_storage()
    assert isinstance(storage, LocalFileSystem)
    root = blob_store().local_root()
    assert root is not None and root.name == "results"
    cache, _ = record_cache("customer-support", "demo")
    assert cache.dir.is_relative_to(root / "records")  # used in place: nothing copied


def test_files_instead_of_variables_for_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_STORE_ENV, "files")
    assert isinstance(state_store(), FileStateStore)
    monkeypatch.setenv(STATE_STORE_ENV, "etcd")
    with pytest.raises(StateError, match=STATE_STORE_ENV):
        state_store()
