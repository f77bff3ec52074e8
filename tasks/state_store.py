"""Where run state lives when flows run: Prefect Variables for small documents, the result storage for files.

- **The result storage** (:func:`result_storage`) is the Prefect storage block named by Prefect's own setting
  ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` (``remote-file-system/<name>``, ``s3-bucket/<name>``...: whatever
  every worker can reach), else a ``LocalFileSystem`` at ``.flywheel/results`` on this machine. Cached task
  results (``evaluate``), the record cache (:mod:`agent_flywheel.records.stored_cache`) and state documents
  too large for a Variable go there.
- **State documents** (watermarks, cooldowns, the adopters of jobs; :mod:`agent_flywheel.state`) are Prefect
  Variables named ``<prefix>-<kind>-...`` (:class:`VariableStateStore`), which every worker of the Prefect
  server sees and the UI shows (Variables). A document longer than a Variable holds (Prefect's limit is
  5,000 characters; a watermark lists the record ids of its late-arrival window) is written to the result
  storage under ``state/<name>/<sha256>.json`` and the Variable holds a small pointer to it.
  ``FLYWHEEL_STATE_STORE=files`` keeps them as files under ``.flywheel/state`` instead: development on one
  machine only.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import VariableCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem
from prefect.settings import get_current_settings
from prefect.types import MAX_VARIABLE_VALUE_LENGTH
from prefect.utilities.asyncutils import run_coro_as_sync

from agent_flywheel.paths import state_dir
from agent_flywheel.records.cache import RecordCache, cache_directory
from agent_flywheel.state import BlobStore, FileBlobStore, FileStateStore, StateError, StateStore

logger = logging.getLogger(__name__)

#: ``FLYWHEEL_STATE_STORE``: ``prefect`` (the default: Variables) or ``files`` (one machine: .flywheel/state).
STATE_STORE_ENV = "FLYWHEEL_STATE_STORE"
#: The key of a Variable that points at a document kept in the result storage.
STORED = "$stored"
#: Documents up to this many characters of JSON are kept in the Variable itself (below Prefect's limit, which
#: counts the JSON of the value).
INLINE_LIMIT = MAX_VARIABLE_VALUE_LENGTH - 200
#: Tag of every Variable written here (filter on it in the UI).
STATE_TAG = "flywheel-state"
#: Where the record caches are, in the result storage and in a worker's working copy.
RECORDS = "records"


# --- the result storage -------------------------------------------------------------------------------


def result_storage() -> WritableFileSystem:
    """The storage block for results and files: ``PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK`` when set (loaded once
    per process), else a ``LocalFileSystem`` at ``.flywheel/results`` (resolved at call time: FLYWHEEL_HOME may
    change)."""
    slug = get_current_settings().results.default_storage_block
    if slug:
        return _load_storage(slug)
    return LocalFileSystem(basepath=str(state_dir("results")))


def task_result_storage() -> WritableFileSystem | Path:
    """:func:`result_storage` as a task's ``result_storage`` option: Prefect takes a saved block, or a local
    directory as a path (the default one is not saved)."""
    storage = result_storage()
    if isinstance(storage, LocalFileSystem) and storage._block_document_id is None:
        return Path(storage.basepath or ".")
    return storage


@functools.lru_cache(maxsize=8)
def _load_storage(slug: str) -> WritableFileSystem:
    try:
        block = Block.load(slug, _sync=True)  # type: ignore[call-arg]
    except ValueError:
        raise StateError(
            f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug!r}: no such block on the Prefect server; save it first "
            "(e.g. RemoteFileSystem(basepath='s3://bucket/flywheel').save('flywheel-results')) or unset the setting"
        ) from None
    if not isinstance(block, WritableFileSystem):
        raise StateError(f"PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK={slug!r} is a {type(block).__name__}, not a storage")
    return block


class RemoteBlobs:
    """A :class:`~agent_flywheel.state.BlobStore` on a ``RemoteFileSystem`` block (any fsspec URL), streamed."""

    def __init__(self, block: RemoteFileSystem) -> None:
        self.block = block

    def _url(self, path: str) -> str:
        return self.block._resolve_path(path)

    def _parent(self, url: str) -> None:
        self.block.filesystem.makedirs(url[: url.rindex("/")], exist_ok=True)

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes."""
        return bytes(self.block.filesystem.cat_file(self._url(path)))

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file."""
        url = self._url(path)
        self._parent(url)
        self.block.filesystem.pipe_file(url, data)

    def upload(self, local: Path, path: str) -> None:
        """Stream a local file up."""
        url = self._url(path)
        self._parent(url)
        self.block.filesystem.put_file(str(local), url)

    def download(self, path: str, local: Path) -> None:
        """Stream a stored file down."""
        local.parent.mkdir(parents=True, exist_ok=True)
        self.block.filesystem.get_file(self._url(path), str(local))

    def delete(self, path: str) -> None:
        """Remove a file."""
        try:
            self.block.filesystem.rm_file(self._url(path))
        except FileNotFoundError:
            pass

    def local_root(self) -> Path | None:
        """Remote: none."""
        return None

    def describe(self) -> str:
        """The base URL."""
        return self.block.basepath


def _resolved(value: Any) -> Any:
    """The value of a storage block's method whether it answered at once or with a coroutine."""
    return run_coro_as_sync(value) if inspect.iscoroutine(value) else value


class BlockBlobs:
    """A :class:`~agent_flywheel.state.BlobStore` on any other storage block (a cloud bucket's): whole files
    through ``read_path``/``write_path``; deleting is not part of that interface, so replaced files stay."""

    def __init__(self, block: WritableFileSystem) -> None:
        self.block = block

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes (``FileNotFoundError`` when the block says there is none)."""
        try:
            return bytes(_resolved(self.block.read_path(path)))
        except Exception as exc:
            if any(word in str(exc) for word in ("NoSuchKey", "Not Found", "not found", "does not exist", "404")):
                raise FileNotFoundError(path) from exc
            raise

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file."""
        _resolved(self.block.write_path(path, data))

    def upload(self, local: Path, path: str) -> None:
        """Write a local file (read whole)."""
        self.write_bytes(path, local.read_bytes())

    def download(self, path: str, local: Path) -> None:
        """Copy a stored file out (read whole)."""
        data = self.read_bytes(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)

    def delete(self, path: str) -> None:
        """Not supported by the block interface: the file stays (logged)."""
        logger.debug("storage %s cannot delete %s; it stays", type(self.block).__name__, path)

    def local_root(self) -> Path | None:
        """Remote: none."""
        return None

    def describe(self) -> str:
        """The block's type and name."""
        return f"{type(self.block).__name__} {self.block._block_document_name or ''}".strip()


def blobs_of(block: WritableFileSystem) -> BlobStore:
    """The blob store over a storage block: a local directory in place, an fsspec URL streamed, else whole files."""
    if isinstance(block, LocalFileSystem):
        return FileBlobStore(Path(block.basepath or ".").expanduser().resolve())
    if isinstance(block, RemoteFileSystem):
        return RemoteBlobs(block)
    return BlockBlobs(block)


def blob_store() -> BlobStore:
    """The result storage as a blob store."""
    return blobs_of(result_storage())


def record_cache(workload_id: str, client_id: str, blobs: BlobStore | None = None) -> tuple[RecordCache, str]:
    """A workload's record cache on this worker and its prefix in the result storage.

    In place when the storage is a local directory (``<storage>/records/...``); otherwise a working copy
    under ``.flywheel/records`` that :mod:`agent_flywheel.records.stored_cache` keeps in line with the storage.
    """
    blobs = blobs or blob_store()
    root = blobs.local_root()
    cache = RecordCache(root / RECORDS if root is not None else state_dir(RECORDS), workload_id, client_id)
    return cache, f"{RECORDS}/{cache_directory(workload_id, client_id).as_posix()}"


# --- state documents in Prefect Variables ---------------------------------------------------------------


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class VariableStateStore:
    """State documents as Prefect Variables (see the module); large ones in the result storage."""

    def __init__(self, blobs: BlobStore, inline_limit: int = INLINE_LIMIT) -> None:
        self.blobs = blobs
        self.inline_limit = inline_limit

    def _read(self, name: str) -> Any | None:
        with get_client(sync_client=True) as client:
            variable = client.read_variable_by_name(name)
        return None if variable is None else variable.value

    def _pointer(self, value: Any) -> str | None:
        return str(value[STORED]) if isinstance(value, dict) and STORED in value else None

    def get(self, name: str) -> Any | None:
        """The document, or None; one kept in the result storage is read from there and checked."""
        value = self._read(name)
        path = self._pointer(value)
        if path is None:
            return value
        for _ in range(3):  # a writer may have replaced it between the two reads: read the pointer again
            try:
                data = self.blobs.read_bytes(path)
            except FileNotFoundError:
                data = b""
            if isinstance(value, dict) and hashlib.sha256(data).hexdigest() == value.get("sha256"):
                return json.loads(data)
            value = self._read(name)
            path = self._pointer(value)
            if path is None:
                return value
        raise StateError(
            f"Prefect variable {name} points at {self.blobs.describe()}/{path}, which this worker cannot read or "
            "which does not match it: every worker must use the same result storage "
            "(PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK); fix that, or delete the variable to start this state over"
        )

    def set(self, name: str, value: Any) -> None:
        """Write the document: in the Variable when it fits, else in the result storage with a pointer."""
        text = _canonical(value)
        old = self._pointer(self._read(name))
        document: Any = value
        path = None
        if len(text) > self.inline_limit:
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            path = f"state/{name}/{digest}.json"
            self.blobs.write_bytes(path, text.encode("utf-8"))
            document = {STORED: path, "sha256": digest, "bytes": len(text)}
        self._write(name, document)
        if old is not None and old != path:
            self.blobs.delete(old)

    def _write(self, name: str, value: Any) -> None:
        with get_client(sync_client=True) as client:
            try:
                client.create_variable(VariableCreate(name=name, value=value, tags=[STATE_TAG]))
            except ObjectAlreadyExists:
                client.request("PATCH", "/variables/name/{name}", path_params={"name": name}, json={"value": value})

    def delete(self, name: str) -> None:
        """Remove the document (and its file in the result storage)."""
        old = self._pointer(self._read(name))
        with get_client(sync_client=True) as client:
            try:
                client.delete_variable_by_name(name)
            except ObjectNotFound:
                pass
        if old is not None:
            self.blobs.delete(old)

    def names(self, prefix: str) -> list[str]:
        """Names of the Variables starting with ``prefix`` (read page by page)."""
        found: list[str] = []
        offset, page = 0, 200
        with get_client(sync_client=True) as client:
            while True:
                response = client.request(
                    "POST",
                    "/variables/filter",
                    json={"variables": {"name": {"like_": f"{prefix}%"}}, "limit": page, "offset": offset},
                )
                batch = [str(item["name"]) for item in response.json()]
                found += [name for name in batch if name.startswith(prefix)]
                if len(batch) < page:
                    break
                offset += page
        return sorted(found)


def state_store() -> StateStore:
    """Where state documents live: Prefect Variables (``FLYWHEEL_STATE_STORE`` unset or ``prefect``) or files
    under ``.flywheel/state`` (``files``)."""
    kind = (os.environ.get(STATE_STORE_ENV) or "prefect").strip().lower()
    if kind == "files":
        return FileStateStore(state_dir("state"))
    if kind != "prefect":
        raise StateError(f"{STATE_STORE_ENV}={kind!r}: use 'prefect' (Prefect Variables) or 'files' (this machine)")
    return VariableStateStore(blob_store())


def is_unreachable(exc: BaseException) -> bool:
    """True for the errors of a Prefect server that cannot be asked (down, or answering 5xx)."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.HTTPError)
