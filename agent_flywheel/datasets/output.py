"""Writing the dataset files and the manifest: sha256 while writing, hash lists streamed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

from agent_flywheel.jsonlines import IO_BUFFER_BYTES, dump_line


class HashingWriter:
    """A JSONL writer that computes the file's sha256 while writing."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = open(path, "wb", buffering=IO_BUFFER_BYTES)  # noqa: SIM115
        self._sha = hashlib.sha256()
        self.lines = 0

    def write(self, obj: Any) -> None:
        data = dump_line(obj)
        self._handle.write(data)
        self._sha.update(data)
        self.lines += 1

    def close(self) -> str:
        self._handle.close()
        return self._sha.hexdigest()


class HexHashes:
    """A lazily serialised list of hex hashes, so a million of them never exist as Python strings at once."""

    def __init__(self, digests: np.ndarray) -> None:
        self.digests = digests

    def __len__(self) -> int:
        return int(self.digests.shape[0])

    def __iter__(self) -> Iterator[str]:
        for row in self.digests:
            yield row.tobytes().hex()


def write_json(handle: IO[str], obj: Any, indent: int = 0) -> None:
    """``json.dump`` with indentation that streams :class:`HexHashes` lists."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, HexHashes):
        handle.write("[")
        for i, text in enumerate(obj):
            handle.write(("," if i else "") + "\n" + inner + '"' + text + '"')
        handle.write(("\n" + pad if len(obj) else "") + "]")
    elif isinstance(obj, Mapping):
        handle.write("{")
        for i, (key, value) in enumerate(obj.items()):
            handle.write(("," if i else "") + "\n" + inner + json.dumps(str(key), ensure_ascii=False) + ": ")
            write_json(handle, value, indent + 2)
        handle.write(("\n" + pad if obj else "") + "}")
    else:
        handle.write(json.dumps(obj, ensure_ascii=False, indent=None, default=str))


def file_sha256(path: Path) -> str:
    """The sha256 of a file written elsewhere (the manifest lists every file's)."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()
