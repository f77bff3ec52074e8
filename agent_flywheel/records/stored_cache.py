"""The record cache in the result storage: every segment a workload's runs have read, where any worker finds it.

A workload's record cache (:mod:`agent_flywheel.records.cache`) is a directory of segments and their key
files. Where the result storage is this machine's disk (a local directory, the default), the cache lives in
it and is used in place: nothing is copied. Where the storage is remote (``RemoteFileSystem``, a bucket),
each worker keeps a working copy: extraction writes its new segment locally as before (at full speed), then
:func:`push` uploads it and writes the cache's **manifest** beside the segments (every file with its size,
and the reads' summary). The manifest is what extraction returns; the dataset build :func:`pull`-s its
working copy in line with the manifest it was handed (downloading what it lacks, removing what the manifest
no longer lists), so it builds from exactly what extraction saw, on any worker.

Segments and key files are never changed once written (a segment's name carries its time and window), so
a file whose size matches the manifest is the stored one.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from pydantic import BaseModel

from agent_flywheel.records.cache import READS_FILE, RecordCache
from agent_flywheel.state import BlobStore, StateError, iter_files

#: The file beside the segments (in the storage) that lists them.
MANIFEST_FILE = "manifest.json"
_NOT_CACHED = {READS_FILE, MANIFEST_FILE}


class CacheManifest(BaseModel):
    """What a record cache holds: its ``prefix`` in the storage, every file with its size, the reads' summary."""

    prefix: str
    files: dict[str, int] = {}
    reads: dict[str, Any] = {}

    @property
    def segments(self) -> list[str]:
        """The segment files, oldest first (the order :meth:`RecordCache.segments` reads them in)."""
        return sorted(name for name in self.files if name.endswith(".jsonl"))

    def path(self, name: str) -> str:
        """A file's path in the storage."""
        return f"{self.prefix}/{name}"


def manifest_of(cache: RecordCache, prefix: str) -> CacheManifest:
    """The manifest of a local cache directory as it is now."""
    files = {
        path.relative_to(cache.dir).as_posix(): path.stat().st_size
        for path in iter_files(cache.dir)
        if path.name not in _NOT_CACHED
    }
    try:
        reads = json.loads((cache.dir / READS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        reads = {}
    return CacheManifest(prefix=prefix, files=files, reads=reads if isinstance(reads, dict) else {})


def read_manifest(blobs: BlobStore, prefix: str) -> CacheManifest | None:
    """The stored manifest of the cache at ``prefix``, or None when nothing was stored yet."""
    path = f"{prefix}/{MANIFEST_FILE}"
    try:
        data = blobs.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        return CacheManifest.model_validate_json(data)
    except ValueError as exc:
        raise StateError(
            f"{blobs.describe()}/{path}: not a record cache manifest ({str(exc).splitlines()[0]}); delete it "
            "and run the flywheel with full_rebuild to read every record again"
        ) from None


def push(cache: RecordCache, blobs: BlobStore, prefix: str, previous: CacheManifest | None) -> CacheManifest:
    """Store what changed in the local cache since ``previous`` (new files uploaded, files no longer there
    removed) and write the manifest; returns it. Files are uploaded before the manifest names them."""
    current = manifest_of(cache, prefix)
    before = previous.files if previous is not None else {}
    for name, size in current.files.items():
        if before.get(name) != size:
            blobs.upload(cache.dir / name, current.path(name))
    blobs.write_bytes(current.path(MANIFEST_FILE), current.model_dump_json(indent=1).encode("utf-8"))
    for name in sorted(set(before) - set(current.files)):
        blobs.delete(current.path(name))
    return current


def pull(cache: RecordCache, blobs: BlobStore, manifest: CacheManifest) -> None:
    """Make the local cache directory hold exactly the files of ``manifest``: download what is missing or of
    another size (through a temporary name), remove what it does not list, write its reads' summary."""
    cache.dir.mkdir(parents=True, exist_ok=True)
    for name, size in manifest.files.items():
        local = cache.dir / name
        if local.is_file() and local.stat().st_size == size:
            continue
        partial = local.with_name(f".{local.name}.partial")
        try:
            blobs.download(manifest.path(name), partial)
        except FileNotFoundError:
            raise StateError(
                f"{blobs.describe()}/{manifest.path(name)}: a record cache segment its manifest lists is missing; "
                "run the flywheel with full_rebuild to read every record again"
            ) from None
        os.replace(partial, local)
    for path in iter_files(cache.dir):
        relative = path.relative_to(cache.dir).as_posix()
        if relative not in manifest.files and path.name not in _NOT_CACHED:
            with contextlib.suppress(OSError):
                path.unlink()
    (cache.dir / READS_FILE).write_text(json.dumps(manifest.reads, indent=1, sort_keys=True), encoding="utf-8")
