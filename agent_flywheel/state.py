"""Where run state lives: what one flywheel run leaves for the next, on whichever machine the next one runs.

Run state comes in two kinds, each behind an interface the core reads and writes it through:

- :class:`StateStore`: small JSON documents by name, such as a workload's watermark, the traffic watch's last
  event for a workload (its cooldown) and the runs that took over a job a dead run started. In production
  they are Prefect Variables, which every worker of a Prefect server sees (``tasks/state_store.py``).
- :class:`BlobStore`: files by path, such as the record cache's segments, cached task results and documents
  too large for a Variable. In production this is the result storage, a Prefect storage block
  (``LocalFileSystem`` on one machine, ``RemoteFileSystem`` or a cloud bucket for several).

What a flywheel run started on the NeMo platform is not state of ours at all: the platform lists it, with
the run's id on each job and deployment (:mod:`agent_flywheel.ledger`).

The file-backed implementations here (:class:`FileStateStore`, :class:`FileBlobStore`) and
:class:`MemoryStateStore` are for development and tests: one machine, under a directory. Nothing here
imports Prefect.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from agent_flywheel.paths import flywheel_home

#: The environment variable that sets the prefix of every state name (see :func:`state_name`).
STATE_PREFIX_ENV = "FLYWHEEL_STATE_PREFIX"
DEFAULT_STATE_PREFIX = "flywheel"
#: The prefix value that makes a prefix of ``FLYWHEEL_HOME``: each home its own state (tests, experiments).
PER_HOME = "@home"
#: The longest state name (Prefect's limit on a Variable name).
MAX_NAME_LENGTH = 255
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class StateError(RuntimeError):
    """Run state that cannot be read or written: the message names the document or file and what to do."""


def state_prefix() -> str:
    """The prefix of every state name: ``$FLYWHEEL_STATE_PREFIX`` or ``flywheel``.

    One Prefect server can host several flywheel installations (staging and production): each with its own
    prefix keeps its watermarks and cooldowns apart. ``@home`` makes one of ``FLYWHEEL_HOME``, so that every
    home has state of its own on a shared server, as when state was files in the home (the tests do this;
    workers that should share state must not).
    """
    prefix = os.environ.get(STATE_PREFIX_ENV) or DEFAULT_STATE_PREFIX
    if prefix == PER_HOME:
        return "home-" + _digest(str(flywheel_home()), 12)
    if not _NAME.fullmatch(prefix) or len(prefix) > 64:
        raise StateError(
            f"{STATE_PREFIX_ENV}={prefix!r}: use at most 64 lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return prefix


def _digest(text: str, length: int = 10) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def state_name(kind: str, *parts: str) -> str:
    """The name of one state document: ``<prefix>-<kind>-<part>--<part>...``, valid as a Prefect Variable name.

    Parts are lowercased and anything but letters, digits, ``-`` and ``_`` becomes ``_``. When that changed a
    part (``Customer-Support``, ``a/b``), when a part could blur the ``--`` between parts (empty, containing
    ``--``, starting or ending with ``-``) or when the name is too long, a hash of the original parts is
    appended, so two different (workload, client) pairs never share a document.
    """
    if not _NAME.fullmatch(kind):
        raise ValueError(f"state kind {kind!r}: lowercase letters, digits, '-' and '_' only")
    safe = [_UNSAFE.sub("_", part.lower()) for part in parts]
    label = "--".join(safe)
    head = f"{state_prefix()}-{kind}"
    name = f"{head}-{label}" if label else head
    blurred = any(not part or "--" in part or part.startswith("-") or part.endswith("-") for part in parts)
    if safe != list(parts) or blurred or len(name) > MAX_NAME_LENGTH:
        suffix = _digest(json.dumps(list(parts)))
        name = f"{name[: MAX_NAME_LENGTH - len(suffix) - 1]}-{suffix}"
    return name


def state_kind_prefix(kind: str) -> str:
    """The beginning every name of ``kind`` shares (to list them)."""
    return f"{state_prefix()}-{kind}-"


class StateStore(Protocol):
    """Small JSON documents by name (see the module). A document is written whole: no partial updates."""

    def get(self, name: str) -> Any | None:
        """The document, or None when there is none; raises :class:`StateError` when it cannot be read."""
        ...

    def set(self, name: str, value: Any) -> None:
        """Write the document (JSON-able), replacing any earlier one."""
        ...

    def delete(self, name: str) -> None:
        """Remove the document (none is no error)."""
        ...

    def names(self, prefix: str) -> list[str]:
        """The names of the documents starting with ``prefix``, sorted."""
        ...


class MemoryStateStore:
    """A state store in a dict: for tests and one-off runs (values are copied through JSON, as a real store would)."""

    def __init__(self) -> None:
        self._docs: dict[str, str] = {}

    def get(self, name: str) -> Any | None:
        """The document, or None."""
        text = self._docs.get(name)
        return None if text is None else json.loads(text)

    def set(self, name: str, value: Any) -> None:
        """Write the document."""
        self._docs[name] = json.dumps(value)

    def delete(self, name: str) -> None:
        """Remove the document."""
        self._docs.pop(name, None)

    def names(self, prefix: str) -> list[str]:
        """Names starting with ``prefix``."""
        return sorted(name for name in self._docs if name.startswith(prefix))


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: a crash leaves the old file or
    the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class FileStateStore:
    """State documents as JSON files in one directory (``<name>.json``): for development on one machine.

    Writes are atomic. An unreadable document raises rather than reading as "none", which would silently
    start over (a watermark lost means every record read again).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):
            raise ValueError(f"state name {name!r}: make it with state_name()")
        return self.directory / f"{name}.json"

    def get(self, name: str) -> Any | None:
        """The document, or None when there is none."""
        path = self._path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise StateError(f"{path}: not valid JSON ({exc}); fix or delete the file") from None

    def set(self, name: str, value: Any) -> None:
        """Write the document atomically."""
        write_atomically(self._path(name), json.dumps(value, indent=1, sort_keys=True).encode("utf-8"))

    def delete(self, name: str) -> None:
        """Remove the document."""
        self._path(name).unlink(missing_ok=True)

    def names(self, prefix: str) -> list[str]:
        """Names starting with ``prefix``."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if p.stem.startswith(prefix))


class BlobStore(Protocol):
    """Files by relative path (``records/<workload>/<client>/<segment>.jsonl``), where every worker sees them."""

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes; raises ``FileNotFoundError`` when there is none."""
        ...

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file, replacing any earlier one."""
        ...

    def upload(self, local: Path, path: str) -> None:
        """Store a local file under ``path`` (streamed where the storage allows it)."""
        ...

    def download(self, path: str, local: Path) -> None:
        """Copy a stored file to ``local``; raises ``FileNotFoundError`` when there is none."""
        ...

    def delete(self, path: str) -> None:
        """Remove a file (none is no error)."""
        ...

    def local_root(self) -> Path | None:
        """The directory the files are in when they are plain files on this machine (then they are used in
        place, with no copy); None for remote storage."""
        ...

    def describe(self) -> str:
        """Where the files are, for messages (no credentials)."""
        ...


def _relative(path: str) -> str:
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts:
        raise ValueError(f"blob path {path!r}: must be relative, without '..'")
    return path


class FileBlobStore:
    """Files under one local directory: the result storage on one machine (and in tests)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, path: str) -> Path:
        return self.root / _relative(path)

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes."""
        return self._path(path).read_bytes()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file atomically."""
        write_atomically(self._path(path), data)

    def upload(self, local: Path, path: str) -> None:
        """Copy a local file in (nothing to do when it is the stored file itself)."""
        target = self._path(path)
        if target.resolve() == local.resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    def download(self, path: str, local: Path) -> None:
        """Copy a stored file out."""
        source = self._path(path)
        if not source.exists():
            raise FileNotFoundError(str(source))
        if source.resolve() == local.resolve():
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, local)

    def delete(self, path: str) -> None:
        """Remove a file."""
        self._path(path).unlink(missing_ok=True)

    def local_root(self) -> Path | None:
        """The directory itself: its files are used in place."""
        return self.root

    def describe(self) -> str:
        """The directory."""
        return str(self.root)


def iter_files(directory: Path) -> Iterator[Path]:
    """Every regular file under ``directory`` (none when it does not exist), sorted; temporary files skipped."""
    if not directory.is_dir():
        return
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            yield path
