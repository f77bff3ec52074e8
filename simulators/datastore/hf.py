"""The Hugging Face Hub HTTP protocol under ``/v1/hf``, as the installed ``huggingface_hub`` (2.x) speaks it.

Implemented: ``POST /api/repos/create``, ``DELETE /api/repos/delete``; per repo (``datasets`` or
``models``) ``GET /api/{kind}/{ns}/{name}[/revision/{rev}]``, ``POST .../preupload/{rev}`` (``uploadMode``
``regular`` or ``lfs`` for every file, as ``datastore.upload_mode`` says), ``POST .../commit/{rev}`` (NDJSON
``header``/``file``/``deletedFile``/``deletedFolder``, and ``lfsFile`` for content uploaded through LFS),
``GET .../tree/{rev}[/{path}]`` (``recursive``, ``expand``), ``GET .../refs``, ``GET .../commits/{rev}``,
``POST .../branch/{branch}``; and ``HEAD|GET /{datasets/}{ns}/{name}/resolve/{rev}/{path}`` with the
``ETag``, ``X-Repo-Commit`` and ``Content-Length`` headers ``hf_hub_download`` requires (and ``Range``).
Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) so the client
raises its specific exceptions. Tokens are accepted and ignored.

Large-file mode is the git-LFS batch API the way ``huggingface_hub`` uses it without Xet:
``POST /{datasets/}{ns}/{name}.git/info/lfs/objects/batch`` (no ``/api``) answers, per object, a ``basic``
upload action (``PUT {hf}/lfs-objects/{oid}``) and a verify action (``POST {hf}/lfs-objects/{oid}/verify``),
or no actions when the content is stored already; the commit then names the object in an ``lfsFile`` line.
There is no Xet endpoint (``/api/{kind}/{ns}/{name}/xet-write-token/{rev}`` is a 404), as on a NeMo Data Store:
a client that tries Xet fails there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from simulators.datastore.storage import (
    DEFAULT_BRANCH,
    FileEntry,
    RepoStore,
    Snapshot,
    StoreError,
    check_path,
)

_KINDS = {"datasets": "dataset", "models": "model"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
UploadMode = Literal["regular", "lfs"]


def error_response(
    exc: StoreError, extra_headers: dict[str, str] | None = None, extra_body: dict[str, Any] | None = None
) -> JSONResponse:
    """An error the HF client understands: status, ``X-Error-Code``/``X-Error-Message`` and a JSON body."""
    headers = {"X-Error-Message": exc.message.encode("ascii", "replace").decode("ascii"), **(extra_headers or {})}
    if exc.code:
        headers["X-Error-Code"] = exc.code
    body = {"error": exc.message, "detail": exc.message, **(extra_body or {})}
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _hf_base(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/v1/hf"


def _repo_url(request: Request, repo_type: str, namespace: str, name: str) -> str:
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"{_hf_base(request)}/{prefix}{namespace}/{name}"


def _kind(kind: str) -> str:
    if kind not in _KINDS:
        raise StoreError(404, f"unknown repo kind {kind!r}", "RepoNotFound")
    return _KINDS[kind]


def _repo_id(body: dict[str, Any]) -> tuple[str, str, str]:
    name, organization = body.get("name"), body.get("organization")
    if isinstance(name, str) and "/" in name and not organization:
        organization, name = name.split("/", 1)
    if not isinstance(name, str) or not isinstance(organization, str):
        raise StoreError(400, "name and organization are required (repo ids look like namespace/name)")
    repo_type = body.get("type") or "model"
    if repo_type not in _KINDS.values():
        raise StoreError(400, f"unsupported repo type {repo_type!r}; use dataset or model")
    return str(repo_type), organization, name


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(400, f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise StoreError(400, "the body must be a JSON object")
    return body


def _tree_entries(snapshot: Snapshot, path: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
    prefix = f"{path}/" if path else ""
    if path and path in snapshot.files:
        candidates = {path: snapshot.files[path]}
    else:
        candidates = {p: e for p, e in snapshot.files.items() if p.startswith(prefix)}
        if path and not candidates:
            raise StoreError(404, f"Entry not found: {path}", "EntryNotFound")
    last_commit = {"id": snapshot.commit, "title": "", "date": snapshot.date}
    folders: set[str] = set()
    files: list[FileEntry] = []
    for file_path, entry in candidates.items():
        rest = file_path[len(prefix) :] if file_path != path else ""
        parts = rest.split("/")[:-1] if rest else []
        for depth in range(1, len(parts) + 1):
            folders.add(prefix + "/".join(parts[:depth]))
            if not recursive:
                break
        if recursive or len(parts) == 0:
            files.append(entry)
    result: list[dict[str, Any]] = []
    for folder in sorted(folders):
        oid = hashlib.sha1(f"{snapshot.commit}:{folder}".encode(), usedforsecurity=False).hexdigest()
        item: dict[str, Any] = {"type": "directory", "oid": oid, "size": 0, "path": folder}
        result.append(item | ({"lastCommit": last_commit} if expand else {}))
    for entry in sorted(files, key=lambda e: e.path):
        item = {"type": "file", "oid": entry.oid, "size": entry.size, "path": entry.path}
        result.append(item | ({"lastCommit": last_commit} if expand else {}))
    return result


def _parse_commit(store: RepoStore, raw: bytes) -> dict[str, Any]:
    """The NDJSON commit payload: header, added files (stored as blobs), deletions."""
    header: dict[str, Any] | None = None
    additions: list[tuple[str, FileEntry]] = []
    deleted_files: list[str] = []
    deleted_folders: list[str] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise StoreError(400, f"commit payload line {number} is not a {{key, value}} JSON object") from None
        if not isinstance(value, dict):
            raise StoreError(400, f"commit payload line {number}: value must be an object")
        if key == "header":
            header = value
        elif key == "file":
            content = value.get("content", "")
            try:
                data = (
                    base64.b64decode(content, validate=True)
                    if value.get("encoding") == "base64"
                    else str(content).encode()
                )
            except (binascii.Error, ValueError):
                raise StoreError(400, f"commit payload line {number}: content is not valid base64") from None
            additions.append((check_path(str(value.get("path", ""))), store.put_blob(data)))
        elif key == "lfsFile":
            oid = str(value.get("oid", ""))
            if value.get("algo", "sha256") != "sha256" or not store.has_blob(oid):
                raise StoreError(422, f"LFS object {oid} was never uploaded (upload it through the LFS batch API)")
            data = store.blob(oid)
            additions.append((check_path(str(value.get("path", ""))), store.put_blob(data)))
        elif key == "deletedFile":
            deleted_files.append(str(value.get("path", "")))
        elif key == "deletedFolder":
            deleted_folders.append(str(value.get("path", "")))
        else:
            raise StoreError(400, f"commit payload line {number}: unsupported operation {key!r}")
    if header is None:
        raise StoreError(400, "commit payload has no header line")
    return {
        "summary": str(header.get("summary") or ""),
        "description": str(header.get("description") or ""),
        "parent_commit": header.get("parentCommit"),
        "additions": additions,
        "deleted_files": deleted_files,
        "deleted_folders": deleted_folders,
    }


def _file_response(request: Request, snapshot: Snapshot, entry: FileEntry, data: bytes) -> Response:
    headers = {
        "ETag": f'"{entry.oid}"',
        "X-Repo-Commit": snapshot.commit,
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": f'inline; filename="{entry.path.rsplit("/", 1)[-1]}"',
    }
    status, body = 200, data
    match = _RANGE.match(request.headers.get("range", "").strip())
    if match and (match.group(1) or match.group(2)):
        size = len(data)
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:
            start, end = max(0, size - int(match.group(2))), size - 1
        if start >= size or start > end:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", **headers})
        status, body = 206, data[start : end + 1]
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(len(body))
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    return Response(content=body, status_code=status, headers=headers)


def _lfs_error(status: int, message: str) -> JSONResponse:
    """A git-LFS API error (``{"message"}``, the LFS media type)."""
    return JSONResponse({"message": message}, status_code=status, media_type=LFS_CONTENT_TYPE)


def _lfs_batch(store: RepoStore, request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """The batch answer: per object an upload and a verify action, or none when the content is stored."""
    if body.get("operation") != "upload":
        raise StoreError(422, "only the upload operation is supported")
    transfers = body.get("transfers") or ["basic"]
    if "basic" not in transfers:
        raise StoreError(422, f"no common transfer adapter: the server offers basic, the client {transfers}")
    if body.get("hash_algo", "sha256") != "sha256":
        raise StoreError(422, "only sha256 object ids are supported")
    objects = body.get("objects")
    if not isinstance(objects, list):
        raise StoreError(422, "objects must be a list")
    base = _hf_base(request)
    answered = []
    for item in objects:
        oid = str(item.get("oid", "")) if isinstance(item, dict) else ""
        size = item.get("size") if isinstance(item, dict) else None
        if not _SHA256.match(oid) or not isinstance(size, int) or size < 0:
            answered.append(
                {"oid": oid, "size": size if isinstance(size, int) else 0, "error": {"code": 422, "message": "bad oid"}}
            )
            continue
        entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
        if not store.has_blob(oid):
            entry["actions"] = {
                "upload": {"href": f"{base}/lfs-objects/{oid}", "header": {}, "expires_in": 3600},
                "verify": {"href": f"{base}/lfs-objects/{oid}/verify", "header": {}, "expires_in": 3600},
            }
        answered.append(entry)
    return {"transfer": "basic", "objects": answered, "hash_algo": "sha256"}


def _git_repo(name: str) -> str:
    """``name.git`` -> ``name`` (the LFS endpoint lives under the repo's git URL)."""
    if not name.endswith(".git"):
        raise StoreError(404, f"not a git repository URL: {name}", "RepoNotFound")
    return name[: -len(".git")]


def hf_router(store: RepoStore, require_namespace: bool = False, upload_mode: UploadMode = "regular") -> APIRouter:
    """The routes, relative to ``/v1/hf``; ``upload_mode`` is what preupload answers for every file."""
    router = APIRouter()

    @router.post("/api/repos/create", response_model=None)
    async def create_repo(request: Request) -> Response:
        try:
            body = await _json(request)
            repo_type, namespace, name = _repo_id(body)
            if require_namespace and store.get_namespace(namespace) is None:
                raise StoreError(404, f"namespace {namespace} does not exist in the Data Store")
            private = bool(body.get("private")) or body.get("visibility") == "private"
            store.create_repo(repo_type, namespace, name, private=private)
        except StoreError as exc:
            if exc.status == 409:  # create_repo(exist_ok=True) reads the url from the conflict's body
                return error_response(exc, extra_body={"url": _repo_url(request, repo_type, namespace, name)})
            return error_response(exc)
        url = _repo_url(request, repo_type, namespace, name)
        return JSONResponse({"url": url, "name": f"{namespace}/{name}", "id": f"{namespace}/{name}"})

    @router.delete("/api/repos/delete", response_model=None)
    async def delete_repo(request: Request) -> Response:
        try:
            repo_type, namespace, name = _repo_id(await _json(request))
            store.delete_repo(repo_type, namespace, name)
        except StoreError as exc:
            return error_response(exc)
        return JSONResponse({})

    @router.get("/api/{kind}/{namespace}/{name}", response_model=None)
    async def repo_info(kind: str, namespace: str, name: str, request: Request) -> Response:
        return _info(kind, namespace, name, DEFAULT_BRANCH, request)

    @router.get("/api/{kind}/{namespace}/{name}/revision/{revision}", response_model=None)
    async def repo_info_at(kind: str, namespace: str, name: str, revision: str, request: Request) -> Response:
        return _info(kind, namespace, name, revision, request)

    def _info(kind: str, namespace: str, name: str, revision: str, request: Request) -> Response:
        try:
            repo_type = _kind(kind)
            meta = store.info(repo_type, namespace, name)
            snapshot = store.snapshot(repo_type, namespace, name, revision)
        except StoreError as exc:
            return error_response(exc)
        with_blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
        siblings = [
            {"rfilename": p} | ({"size": e.size, "blobId": e.oid} if with_blobs else {})
            for p, e in sorted(snapshot.files.items())
        ]
        repo_id = f"{namespace}/{name}"
        return JSONResponse(
            {
                "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode(), usedforsecurity=False).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": namespace,
                "sha": snapshot.commit,
                "lastModified": snapshot.date,
                "createdAt": meta["created_at"],
                "private": meta["private"],
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(e.size for e in snapshot.files.values()),
            }
        )

    @router.post("/api/{kind}/{namespace}/{name}/preupload/{revision}", response_model=None)
    async def preupload(kind: str, namespace: str, name: str, revision: str, request: Request) -> Response:
        try:
            repo_type = _kind(kind)
            body = await _json(request)
            files = body.get("files")
            if not isinstance(files, list):
                raise StoreError(400, "files must be a list")
            existing: dict[str, FileEntry] = {}
            if store.has_revision(repo_type, namespace, name, revision):
                existing = store.snapshot(repo_type, namespace, name, revision).files
            result = []
            for item in files:
                path = str(item.get("path", "")) if isinstance(item, dict) else ""
                known = existing.get(path.strip("/"))
                result.append(
                    {
                        "path": path,
                        "uploadMode": upload_mode,
                        "shouldIgnore": False,
                        "oid": known.oid if known else None,
                    }
                )
        except StoreError as exc:
            return error_response(exc)
        return JSONResponse({"files": result})

    @router.post("/api/{kind}/{namespace}/{name}/commit/{revision}", response_model=None)
    async def commit(kind: str, namespace: str, name: str, revision: str, request: Request) -> Response:
        try:
            repo_type = _kind(kind)
            if not store.exists(repo_type, namespace, name):
                raise StoreError(404, f"Repository Not Found: {kind}/{namespace}/{name}", "RepoNotFound")
            if request.query_params.get("create_pr") in ("1", "true"):
                raise StoreError(400, "pull requests are not supported by the Data Store simulator")
            parsed = _parse_commit(store, await request.body())
            oid = store.commit(repo_type, namespace, name, revision, **parsed)
        except StoreError as exc:
            return error_response(exc)
        url = f"{_repo_url(request, repo_type, namespace, name)}/commit/{oid}"
        return JSONResponse({"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    @router.get("/api/{kind}/{namespace}/{name}/tree/{revision}", response_model=None)
    async def tree_root(kind: str, namespace: str, name: str, revision: str, request: Request) -> Response:
        return _tree(kind, namespace, name, revision, "", request)

    @router.get("/api/{kind}/{namespace}/{name}/tree/{revision}/{path:path}", response_model=None)
    async def tree(kind: str, namespace: str, name: str, revision: str, path: str, request: Request) -> Response:
        return _tree(kind, namespace, name, revision, path, request)

    def _tree(kind: str, namespace: str, name: str, revision: str, path: str, request: Request) -> Response:
        flags = request.query_params
        recursive = flags.get("recursive", "").lower() in ("1", "true")
        expand = flags.get("expand", "").lower() in ("1", "true")
        try:
            snapshot = store.snapshot(_kind(kind), namespace, name, revision)
            return JSONResponse(_tree_entries(snapshot, path.strip("/"), recursive, expand))
        except StoreError as exc:
            return error_response(exc)

    @router.get("/api/{kind}/{namespace}/{name}/refs", response_model=None)
    async def refs(kind: str, namespace: str, name: str) -> Response:
        try:
            meta = store.info(_kind(kind), namespace, name)
        except StoreError as exc:
            return error_response(exc)
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in sorted(meta["refs"].items())]
        return JSONResponse({"branches": branches, "converts": [], "tags": []})

    @router.get("/api/{kind}/{namespace}/{name}/commits/{revision}", response_model=None)
    async def commits(kind: str, namespace: str, name: str, revision: str) -> Response:
        try:
            history = store.history(_kind(kind), namespace, name, revision)
        except StoreError as exc:
            return error_response(exc)
        return JSONResponse([{**c, "authors": []} for c in history])

    @router.post("/api/{kind}/{namespace}/{name}/branch/{branch}", response_model=None)
    async def create_branch(kind: str, namespace: str, name: str, branch: str, request: Request) -> Response:
        try:
            body = await _json(request)
            start = body.get("startingPoint")
            store.create_branch(_kind(kind), namespace, name, branch, str(start) if start else None)
        except StoreError as exc:
            return error_response(exc)
        return JSONResponse({})

    async def lfs_batch(repo_type: str, namespace: str, name: str, request: Request) -> Response:
        try:
            if not store.exists(repo_type, namespace, _git_repo(name)):
                raise StoreError(404, f"Repository not found: {namespace}/{name}", "RepoNotFound")
            answer = _lfs_batch(store, request, await _json(request))
        except StoreError as exc:
            return _lfs_error(exc.status, exc.message)
        return JSONResponse(answer, media_type=LFS_CONTENT_TYPE)

    @router.post("/datasets/{namespace}/{name}/info/lfs/objects/batch", response_model=None)
    async def lfs_batch_dataset(namespace: str, name: str, request: Request) -> Response:
        return await lfs_batch("dataset", namespace, name, request)

    @router.post("/{namespace}/{name}/info/lfs/objects/batch", response_model=None)
    async def lfs_batch_model(namespace: str, name: str, request: Request) -> Response:
        return await lfs_batch("model", namespace, name, request)

    @router.put("/lfs-objects/{oid}", response_model=None)
    async def lfs_upload(oid: str, request: Request) -> Response:
        """The basic transfer: the object's bytes, checked against the SHA-256 they are named by."""
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            return _lfs_error(400, f"the uploaded content does not hash to {oid}")
        store.put_blob(data)
        return Response(status_code=200)

    @router.post("/lfs-objects/{oid}/verify", response_model=None)
    async def lfs_verify(oid: str, request: Request) -> Response:
        try:
            body = await _json(request)
        except StoreError as exc:
            return _lfs_error(exc.status, exc.message)
        if not store.has_blob(oid):
            return _lfs_error(404, f"object {oid} was not uploaded")
        size = len(store.blob(oid))
        if body.get("oid") not in (None, oid) or body.get("size") not in (None, size):
            return _lfs_error(422, f"object {oid} has {size} bytes, not {body.get('size')}")
        return JSONResponse({"oid": oid, "size": size}, media_type=LFS_CONTENT_TYPE)

    async def _resolve(
        repo_type: str, namespace: str, name: str, revision: str, path: str, request: Request
    ) -> Response:
        try:
            snapshot = store.snapshot(repo_type, namespace, name, revision)
        except StoreError as exc:
            return error_response(exc)
        try:
            snapshot, entry, data = store.read_file(repo_type, namespace, name, snapshot.commit, path)
        except StoreError as exc:
            return error_response(exc, {"X-Repo-Commit": snapshot.commit})
        return _file_response(request, snapshot, entry, data)

    @router.api_route(
        "/datasets/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"], response_model=None
    )
    async def resolve_dataset(namespace: str, name: str, revision: str, path: str, request: Request) -> Response:
        return await _resolve("dataset", namespace, name, revision, path, request)

    @router.api_route(
        "/{namespace}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"], response_model=None
    )
    async def resolve_model(namespace: str, name: str, revision: str, path: str, request: Request) -> Response:
        return await _resolve("model", namespace, name, revision, path, request)

    return router
