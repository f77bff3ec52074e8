"""How the NeMo simulator talks to its neighbours over HTTP: the Data Store (files) and the NIM (models).

Like the real services, the simulator never reads another part's memory: the Customizer counts
training records through the Hugging Face API of the Data Store, the Evaluator reads its dataset the
same way and calls ``/v1/chat/completions``, and deployments and finished fine-tunes become servable
through the NIM simulator's ``/admin/models`` endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger("nemo-sim")


class UpstreamError(RuntimeError):
    """A neighbour failed; the message is what a job's status shows."""


class HttpPool:
    """One shared async HTTP client, created on first use inside the server's event loop."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The shared client (connection pooling matters when an evaluation runs hundreds of calls)."""
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
        return self._client

    async def close(self) -> None:
        """Close the client at shutdown."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


@dataclass(frozen=True)
class HfLocation:
    """Where ``hf://datasets/{namespace}/{name}[/{path}]`` points."""

    namespace: str
    name: str
    path: str = ""


def parse_files_url(files_url: str) -> HfLocation:
    """Split an ``hf://datasets/...`` URL; anything else is an UpstreamError (the simulator has no other storage)."""
    prefix = "hf://datasets/"
    if not files_url.startswith(prefix):
        raise UpstreamError(f"unsupported files_url {files_url!r}: the simulator reads only hf://datasets/<ns>/<name>")
    parts = files_url[len(prefix) :].strip("/").split("/", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise UpstreamError(f"files_url {files_url!r} must name a dataset repository: hf://datasets/<ns>/<name>")
    return HfLocation(parts[0], parts[1], parts[2] if len(parts) > 2 else "")


DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_BACKOFF_S = 0.2  # real seconds, doubled per retry


class DataStoreClient:
    """Reads dataset repositories through the Data Store's Hugging Face endpoint (``{datastore}/v1/hf``)."""

    def __init__(self, hf_endpoint: str, http: HttpPool) -> None:
        self.hf_endpoint = hf_endpoint.rstrip("/")
        self._http = http

    async def _get(self, url: str, params: dict[str, str] | None = None) -> httpx.Response:
        """GET, sent again after a dropped connection as ``huggingface_hub`` does (a GET changes nothing); the
        backoff as :meth:`NimClient.chat`'s."""
        for attempt in range(DOWNLOAD_ATTEMPTS):
            if attempt:
                await asyncio.sleep(DOWNLOAD_BACKOFF_S * 2 ** (attempt - 1))
            try:
                response = await self._http.client().get(url, params=params)
                break
            except httpx.HTTPError as exc:
                if not isinstance(exc, httpx.TransportError) or attempt + 1 == DOWNLOAD_ATTEMPTS:
                    raise UpstreamError(f"Data Store unreachable at {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            raise UpstreamError(f"Data Store has no {url} (404)")
        if response.status_code >= 400:
            raise UpstreamError(f"Data Store answered {response.status_code} for {url}: {response.text[:200]}")
        return response

    async def list_files(self, location: HfLocation, revision: str = "main", endpoint: str | None = None) -> list[str]:
        """Paths of every file in the repository (recursive; falls back to walking folders one by one)."""
        base = (endpoint or self.hf_endpoint).rstrip("/")
        repo = f"{quote(location.namespace)}/{quote(location.name)}"
        files: set[str] = set()
        seen_dirs: set[str] = set()
        queue = [""]
        while queue and len(seen_dirs) < 1000:
            folder = queue.pop(0)
            seen_dirs.add(folder)
            url = f"{base}/api/datasets/{repo}/tree/{quote(revision)}" + (f"/{quote(folder)}" if folder else "")
            entries = (await self._get(url, params={"recursive": "true"})).json()
            if not isinstance(entries, list):
                raise UpstreamError(f"Data Store tree listing of {url} is not a list")
            dirs = set()
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                    continue
                if entry.get("type") == "directory":
                    dirs.add(entry["path"])
                else:
                    files.add(entry["path"])
            for directory in sorted(dirs - seen_dirs):
                if not any(f.startswith(directory + "/") for f in files):
                    queue.append(directory)
                    seen_dirs.add(directory)
        return sorted(files)

    async def read_file(
        self, location: HfLocation, path: str, revision: str = "main", endpoint: str | None = None
    ) -> bytes:
        """A file's bytes through ``/datasets/{ns}/{name}/resolve/{revision}/{path}``."""
        base = (endpoint or self.hf_endpoint).rstrip("/")
        url = f"{base}/datasets/{quote(location.namespace)}/{quote(location.name)}/resolve/{quote(revision)}/{quote(path)}"
        return (await self._get(url)).content

    async def count_records(self, location: HfLocation, folder: str = "training") -> int:
        """Records in every ``{folder}/*.jsonl`` (non-empty lines) and ``{folder}/*.json`` (list items)."""
        total = 0
        for path in await self.list_files(location):
            if path.startswith(folder + "/") and path.endswith((".jsonl", ".json")):
                total += len(parse_rows(await self.read_file(location, path), path))
        return total

    async def read_rows(self, files_url: str, endpoint: str | None = None) -> list[dict[str, Any]]:
        """The rows an evaluation task reads: one file, or every top-level ``.jsonl``/``.json`` of the repository."""
        location = parse_files_url(files_url)
        if location.path:
            paths = [location.path]
        else:
            listed = await self.list_files(location, endpoint=endpoint)
            paths = [p for p in listed if "/" not in p and p.endswith((".jsonl", ".json"))]
            if not paths:
                raise UpstreamError(f"{files_url} has no .jsonl or .json file at its top level")
        rows: list[dict[str, Any]] = []
        for path in paths:
            rows.extend(parse_rows(await self.read_file(location, path, endpoint=endpoint), path))
        return rows


def parse_rows(content: bytes, path: str) -> list[dict[str, Any]]:
    """JSON Lines (or one JSON list) as rows; a line that is not a JSON object is an error naming the line."""
    text = content.decode("utf-8", errors="replace")
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UpstreamError(f"{path} is not valid JSON: {exc}") from exc
        data = data if isinstance(data, list) else [data]
        bad = [i for i, row in enumerate(data) if not isinstance(row, dict)]
        if bad:
            raise UpstreamError(f"{path}: item {bad[0]} is not a JSON object")
        return data
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UpstreamError(f"{path} line {number} is not valid JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise UpstreamError(f"{path} line {number} is not a JSON object")
        rows.append(row)
    return rows


class NimClient:
    """Calls the NIM simulator: chat completions for evaluations, ``/admin/models`` for what it serves."""

    def __init__(self, base_url: str, http: HttpPool) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    async def register_model(self, model_id: str, root: str, parent: str | None, lora: dict[str, Any] | None) -> None:
        """Make a model servable; 409 (already there) counts as success, other failures raise UpstreamError."""
        body = {"id": model_id, "root": root, "parent": parent, "lora": lora}
        try:
            response = await self._http.client().post(f"{self.base_url}/admin/models", json=body, timeout=10.0)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"NIM unreachable at {self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400 and response.status_code != 409:
            raise UpstreamError(f"NIM refused model {model_id}: {response.status_code} {response.text[:200]}")

    async def unregister_model(self, model_id: str) -> None:
        """Stop serving a model; 404 (not there) counts as success."""
        try:
            response = await self._http.client().delete(f"{self.base_url}/admin/models/{model_id}", timeout=10.0)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"NIM unreachable at {self.base_url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400 and response.status_code != 404:
            raise UpstreamError(f"NIM refused to remove {model_id}: {response.status_code} {response.text[:200]}")

    async def chat(
        self,
        url: str,
        body: dict[str, Any],
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.2,
    ) -> dict[str, Any]:
        """One chat completion; connection errors, 429 and 5xx are retried with backoff, other errors raise."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        problem = ""
        for attempt in range(max_retries + 1):
            if attempt:
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                response = await self._http.client().post(url, json=body, headers=headers, timeout=timeout_s)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code >= 400:
                raise UpstreamError(
                    f"model {body.get('model')!r} at {url} answered {response.status_code}: {response.text[:300]}"
                )
            try:
                answer = response.json()
            except ValueError as exc:
                raise UpstreamError(f"model {body.get('model')!r} at {url} answered non-JSON") from exc
            if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list) or not answer["choices"]:
                raise UpstreamError(f"model {body.get('model')!r} at {url} answered without choices")
            return answer
        raise UpstreamError(f"model {body.get('model')!r} at {url} failed after {max_retries + 1} attempts: {problem}")
