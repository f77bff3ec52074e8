"""Files on disk behind the Data Store simulator: namespaces, repos, commits, branches and content blobs.

Layout under ``<state>/datastore``::

    namespaces.json                      the Data Store's own namespaces
    blobs/ab/ab12...                     file contents, named by their SHA-256 (shared by all repos)
    repos/datasets/<ns>/<name>.json      one repo: its branches and commits

A commit stores the whole tree (``path -> {sha256, oid, size}``, ``oid`` being the git blob SHA-1 that
``huggingface_hub`` compares with) and its parent, so every revision stays readable. A revision is a
branch name (``main``, or a job id such as ``cust-...``) or a commit id (40 hex digits or a prefix of at
least 7). Creating a repo makes an empty first commit on ``main``; committing to a branch that does not
exist yet starts it from ``main``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_TYPES = ("model", "dataset")
DEFAULT_BRANCH = "main"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


class StoreError(Exception):
    """A request the store refuses; ``code`` becomes the ``X-Error-Code`` header the HF client reads."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def git_blob_oid(data: bytes) -> str:
    """The git object id of a file's content (what ``huggingface_hub`` calls a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def check_name(value: str, what: str) -> str:
    """A namespace or repo name: letters, digits, ``.``, ``_``, ``-``; a 422 otherwise."""
    if not isinstance(value, str) or not _NAME.match(value) or value in (".", ".."):
        raise StoreError(422, f"invalid {what}: {value!r}")
    return value


def check_path(path: str) -> str:
    """A file path inside a repo (no ``..``, no leading slash); a 400 otherwise."""
    path = path.strip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")):
        raise StoreError(400, f"invalid path in repo: {path!r}")
    return path


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit's tree."""

    path: str
    sha256: str
    oid: str
    size: int


@dataclass(frozen=True)
class Snapshot:
    """A repo at one revision: the commit id and its files."""

    commit: str
    files: dict[str, FileEntry]
    date: str


class RepoStore:
    """Thread-safe access to everything the Data Store keeps (one lock; files are small)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "blobs").mkdir(exist_ok=True)
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------- plumbing

    def _write_json(self, path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def _read_json(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return default

    def _blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def put_blob(self, data: bytes) -> FileEntry:
        """Store content once, by its SHA-256; returns its entry (path left empty)."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        return FileEntry("", sha256, git_blob_oid(data), len(data))

    def has_blob(self, sha256: str) -> bool:
        """Whether content with this SHA-256 is stored (an LFS pointer may refer to it)."""
        return bool(re.fullmatch(r"[0-9a-f]{64}", sha256)) and self._blob_path(sha256).exists()

    def blob(self, sha256: str) -> bytes:
        """The stored content with this SHA-256."""
        return self._blob_path(sha256).read_bytes()

    # ----------------------------------------------------------------------------- namespaces

    def _namespaces_file(self) -> Path:
        return self.root / "namespaces.json"

    def create_namespace(self, namespace: str) -> dict[str, str]:
        """A new Data Store namespace; 409 when it exists."""
        check_name(namespace, "namespace")
        with self._lock:
            spaces = self._read_json(self._namespaces_file(), {})
            if namespace in spaces:
                raise StoreError(409, f"namespace {namespace} already exists")
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            spaces[namespace] = {"namespace": namespace, "created_at": now, "updated_at": now}
            self._write_json(self._namespaces_file(), spaces)
            return dict(spaces[namespace])

    def get_namespace(self, namespace: str) -> dict[str, str] | None:
        """The namespace, or ``None``."""
        with self._lock:
            found = self._read_json(self._namespaces_file(), {}).get(namespace)
            return dict(found) if found else None

    def list_namespaces(self) -> list[dict[str, str]]:
        """All namespaces, by name."""
        with self._lock:
            spaces = self._read_json(self._namespaces_file(), {})
            return [dict(spaces[k]) for k in sorted(spaces)]

    def delete_namespace(self, namespace: str) -> bool:
        """Remove a namespace record (its repos stay); ``False`` when it did not exist."""
        with self._lock:
            spaces = self._read_json(self._namespaces_file(), {})
            if spaces.pop(namespace, None) is None:
                return False
            self._write_json(self._namespaces_file(), spaces)
            return True

    # ----------------------------------------------------------------------------- repos

    def _repo_file(self, repo_type: str, namespace: str, name: str) -> Path:
        if repo_type not in REPO_TYPES:
            raise StoreError(400, f"unsupported repo type {repo_type!r}")
        check_name(namespace, "namespace")
        check_name(name, "repo name")
        return self.root / "repos" / f"{repo_type}s" / namespace / f"{name}.json"

    def _load(self, repo_type: str, namespace: str, name: str) -> dict[str, Any]:
        data = self._read_json(self._repo_file(repo_type, namespace, name), None)
        if data is None:
            raise StoreError(404, f"Repository Not Found: {repo_type}s/{namespace}/{name}", "RepoNotFound")
        return dict(data)

    def exists(self, repo_type: str, namespace: str, name: str) -> bool:
        """Whether the repo exists."""
        with self._lock:
            return self._repo_file(repo_type, namespace, name).exists()

    def create_repo(self, repo_type: str, namespace: str, name: str, private: bool = False) -> None:
        """A new repo with an empty first commit on ``main``; 409 when it exists."""
        with self._lock:
            path = self._repo_file(repo_type, namespace, name)
            if path.exists():
                raise StoreError(409, f"You already created this {repo_type} repo: {namespace}/{name}")
            now = _now()
            first = self._commit_id(None, "initial commit", {}, now)
            self._write_json(
                path,
                {
                    "type": repo_type,
                    "namespace": namespace,
                    "name": name,
                    "private": private,
                    "created_at": now,
                    "refs": {DEFAULT_BRANCH: first},
                    "commits": {
                        first: {"parent": None, "summary": "initial commit", "description": "", "date": now, "tree": {}}
                    },
                },
            )

    def delete_repo(self, repo_type: str, namespace: str, name: str) -> None:
        """Remove a repo (its blobs stay, they may be shared); 404 when it does not exist."""
        with self._lock:
            path = self._repo_file(repo_type, namespace, name)
            if not path.exists():
                raise StoreError(404, f"Repository Not Found: {repo_type}s/{namespace}/{name}", "RepoNotFound")
            path.unlink()

    def info(self, repo_type: str, namespace: str, name: str) -> dict[str, Any]:
        """The repo's metadata (type, private flag, creation time, branches)."""
        with self._lock:
            data = self._load(repo_type, namespace, name)
            return {k: data[k] for k in ("type", "namespace", "name", "private", "created_at", "refs")}

    @staticmethod
    def _resolve(data: dict[str, Any], revision: str) -> str:
        refs: dict[str, str] = data["refs"]
        if revision in refs:
            return refs[revision]
        if _COMMIT.match(revision):
            matches = [c for c in data["commits"] if c.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise StoreError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def snapshot(self, repo_type: str, namespace: str, name: str, revision: str = DEFAULT_BRANCH) -> Snapshot:
        """The repo at a revision (branch or commit id)."""
        with self._lock:
            data = self._load(repo_type, namespace, name)
            commit = self._resolve(data, revision)
            record = data["commits"][commit]
            files = {path: FileEntry(path, **entry) for path, entry in record["tree"].items()}
            return Snapshot(commit, files, record["date"])

    def has_revision(self, repo_type: str, namespace: str, name: str, revision: str) -> bool:
        """Whether a branch or commit of that name exists."""
        try:
            self.snapshot(repo_type, namespace, name, revision)
        except StoreError as exc:
            if exc.code == "RevisionNotFound":
                return False
            raise
        return True

    @staticmethod
    def _commit_id(parent: str | None, summary: str, tree: dict[str, Any], date: str) -> str:
        payload = json.dumps({"parent": parent, "summary": summary, "tree": tree, "date": date}, sort_keys=True)
        return hashlib.sha1(payload.encode("utf-8"), usedforsecurity=False).hexdigest()

    def commit(
        self,
        repo_type: str,
        namespace: str,
        name: str,
        branch: str,
        summary: str,
        description: str = "",
        additions: list[tuple[str, FileEntry]] | None = None,
        deleted_files: list[str] | None = None,
        deleted_folders: list[str] | None = None,
        parent_commit: str | None = None,
    ) -> str:
        """Apply file additions (content already stored) and deletions on ``branch``; returns the commit id."""
        with self._lock:
            data = self._load(repo_type, namespace, name)
            refs: dict[str, str] = data["refs"]
            if branch not in refs and branch in data["commits"]:
                raise StoreError(400, f"cannot commit to a commit id ({branch}); use a branch name")
            check_name(branch, "branch")
            head = refs.get(branch, refs[DEFAULT_BRANCH])
            if parent_commit and not head.startswith(parent_commit.lower()):
                raise StoreError(412, f"parent commit {parent_commit} is not the head of {branch} ({head})")
            tree: dict[str, dict[str, Any]] = {k: dict(v) for k, v in data["commits"][head]["tree"].items()}
            for path in deleted_files or []:
                path = check_path(path)
                if tree.pop(path, None) is None:
                    raise StoreError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            for folder in deleted_folders or []:
                prefix = check_path(folder) + "/"
                for path in [p for p in tree if p.startswith(prefix)]:
                    del tree[path]
            for path, entry in additions or []:
                tree[check_path(path)] = {"sha256": entry.sha256, "oid": entry.oid, "size": entry.size}
            now = _now()
            commit = self._commit_id(head, summary, tree, now)
            data["commits"][commit] = {
                "parent": head,
                "summary": summary,
                "description": description,
                "date": now,
                "tree": tree,
            }
            refs[branch] = commit
            self._write_json(self._repo_file(repo_type, namespace, name), data)
            return commit

    def create_branch(self, repo_type: str, namespace: str, name: str, branch: str, start: str | None = None) -> str:
        """A new branch at ``start`` (default: the head of ``main``); 409 when it exists."""
        with self._lock:
            data = self._load(repo_type, namespace, name)
            if branch in data["refs"]:
                raise StoreError(409, f"Reference already exists: {branch}")
            check_name(branch, "branch")
            commit = self._resolve(data, start or DEFAULT_BRANCH)
            data["refs"][branch] = commit
            self._write_json(self._repo_file(repo_type, namespace, name), data)
            return commit

    def history(
        self, repo_type: str, namespace: str, name: str, revision: str = DEFAULT_BRANCH
    ) -> list[dict[str, Any]]:
        """Commits from ``revision`` back to the first one, newest first."""
        with self._lock:
            data = self._load(repo_type, namespace, name)
            commit: str | None = self._resolve(data, revision)
            result = []
            while commit is not None:
                record = data["commits"][commit]
                result.append(
                    {"id": commit, "title": record["summary"], "message": record["description"], "date": record["date"]}
                )
                commit = record["parent"]
            return result

    def read_file(
        self, repo_type: str, namespace: str, name: str, revision: str, path: str
    ) -> tuple[Snapshot, FileEntry, bytes]:
        """A file's content at a revision; 404 ``EntryNotFound`` when the path holds no file."""
        snapshot = self.snapshot(repo_type, namespace, name, revision)
        entry = snapshot.files.get(path.strip("/"))
        if entry is None:
            raise StoreError(404, f"Entry not found: {path}", "EntryNotFound")
        return snapshot, entry, self.blob(entry.sha256)

    def files_for_hf_url(self, url: str, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """``hf://datasets/ns/name[/path]`` (or ``hf://ns/name`` for a model) -> ``{path: bytes}`` of what it names.

        A path names one file or every file under a folder; no path names the whole repo. For the
        NeMo simulator when it runs in the same process; over HTTP it uses the HF protocol instead.
        """
        if not url.startswith("hf://"):
            raise StoreError(400, f"not an hf:// url: {url}")
        parts = url[len("hf://") :].strip("/").split("/")
        repo_type = "model"
        if parts and parts[0] in ("datasets", "models"):
            repo_type = parts.pop(0)[:-1]
        if len(parts) < 2:
            raise StoreError(400, f"hf:// url without namespace and name: {url}")
        namespace, name, rest = parts[0], parts[1], "/".join(parts[2:])
        snapshot = self.snapshot(repo_type, namespace, name, revision)
        if rest and rest in snapshot.files:
            chosen = [rest]
        else:
            prefix = f"{rest}/" if rest else ""
            chosen = sorted(p for p in snapshot.files if p.startswith(prefix))
            if rest and not chosen:
                raise StoreError(404, f"Entry not found: {rest}", "EntryNotFound")
        return {p: self.blob(snapshot.files[p].sha256) for p in chosen}
