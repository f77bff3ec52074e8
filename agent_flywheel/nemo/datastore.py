"""NeMo Data Store: its own namespaces (form POST) and dataset files through ``huggingface_hub``.

The Data Store speaks the Hugging Face Hub protocol under ``/v1/hf``, so the files go up with
``HfApi`` (create the repo, one commit per upload) and come back as ``hf://datasets/{ns}/{name}``, the
URL the Customizer and the Evaluator read. ``HfApi`` is blocking, so it runs in a worker thread; its
failures become :class:`NemoAPIError` like everything else, after the same retry policy.

The token sent to the Data Store is ours (``datastore_token``, else none at all): ``token=False`` stops
``huggingface_hub`` from sending a personal Hugging Face token found in the environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from pydantic import SecretStr

from agent_flywheel.nemo.http import NemoAPIError, ServiceHTTP
from agent_flywheel.nemo.payloads import dataset_files_url
from agent_flywheel.transient import retryable_status

logger = logging.getLogger(__name__)

T = TypeVar("T")
FileContent = bytes | str | Path


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [httpx.TransportError, ConnectionError, TimeoutError]
    try:  # huggingface_hub 2.x talks through httpx2
        import httpx2

        errors.append(httpx2.TransportError)
    except ImportError:  # pragma: no cover - huggingface_hub 1.x
        pass
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_errors()


class DataStore:
    """The Data Store at ``datastore_url``: namespaces via httpx, repos and files via ``huggingface_hub``."""

    def __init__(self, http: ServiceHTTP, *, token: SecretStr | None = None) -> None:
        self.http = http
        self._token = token
        if token is not None:
            http.redact.add(token.get_secret_value())

    def __repr__(self) -> str:
        return f"DataStore({self.http.base_url!r})"

    @property
    def hf_endpoint(self) -> str:
        """The Hugging Face endpoint of the Data Store (``{datastore}/v1/hf``)."""
        return f"{self.http.base_url}/v1/hf"

    def hf_api(self) -> HfApi:
        """An ``HfApi`` bound to the Data Store with our token only."""
        token: str | bool = self._token.get_secret_value() if self._token is not None else False
        return HfApi(endpoint=self.hf_endpoint, token=token, library_name="agent-flywheel")

    # --- namespaces --------------------------------------------------------------------------------

    async def ensure_namespace(self, namespace: str) -> bool:
        """Create the Data Store namespace (form-encoded, like the service expects); True when created.

        201/200 created, 409 exists; a 422 is checked with a GET (some versions use it for duplicates).
        """
        path = "/v1/datastore/namespaces"
        response = await self.http.request(
            "POST", path, data={"namespace": namespace}, ok=(200, 201, 409, 422), idempotent=True
        )
        if response.status_code == 422:
            if await self.get_namespace(namespace) is None:
                raise self.http.response_error("POST", path, response)
            return False
        created = response.status_code in (200, 201)
        logger.info("data store namespace %s %s", namespace, "created" if created else "already exists")
        return created

    async def get_namespace(self, namespace: str) -> dict[str, Any] | None:
        """The Data Store namespace, or None."""
        body = await self.http.get_optional(f"/v1/datastore/namespaces/{quote(namespace, safe='')}")
        return body if isinstance(body, dict) else None

    async def delete_namespace(self, namespace: str) -> bool:
        """Delete a Data Store namespace; False when it was not there."""
        return await self.http.delete(f"/v1/datastore/namespaces/{quote(namespace, safe='')}")

    # --- repos and files ---------------------------------------------------------------------------

    async def _hub(self, method: str, path: str, call: Callable[[], T]) -> T:
        """Run a blocking hub call in a thread, retrying 5xx/429/transport errors with backoff."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(call)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                retryable = status is None or retryable_status(status)
                if retryable and attempt <= self.http.retry.max_retries:
                    await self._retry_sleep(method, path, attempt, str(status))
                    continue
                detail = exc.server_message or str(exc).splitlines()[0]
                raise self.http.error(method, path, status, detail, retryable=retryable, attempts=attempt) from exc
            except _TRANSPORT_ERRORS as exc:
                if attempt <= self.http.retry.max_retries:
                    await self._retry_sleep(method, path, attempt, type(exc).__name__)
                    continue
                raise self.http.error(
                    method, path, None, f"{type(exc).__name__}: {exc}", retryable=True, attempts=attempt
                ) from exc

    async def _retry_sleep(self, method: str, path: str, attempt: int, reason: str) -> None:
        delay = self.http.backoff(attempt)
        logger.warning(
            "data store %s %s failed (%s); retry %d/%d in %.2f s",
            method,
            path,
            reason,
            attempt,
            self.http.retry.max_retries,
            delay,
        )
        await self.http.sleep(delay)

    async def create_repo(self, namespace: str, name: str, *, repo_type: str = "dataset") -> bool:
        """Create the repo ``{ns}/{name}`` unless it exists; True when created (a rerun is fine).

        A 409 is "exists". Not ``exist_ok=True``: ``huggingface_hub`` then reads ``url`` from the 409 body,
        which the Hub sends but other servers need not.
        """
        api = self.hf_api()
        try:
            await self._hub(
                "POST",
                "/v1/hf/api/repos/create",
                lambda: api.create_repo(f"{namespace}/{name}", repo_type=repo_type, exist_ok=False),
            )
        except NemoAPIError as err:
            if err.conflict:
                return False
            raise
        logger.info("data store: created %s repo %s/%s", repo_type, namespace, name)
        return True

    async def upload_files(
        self,
        namespace: str,
        name: str,
        files: Mapping[str, FileContent],
        *,
        commit_message: str = "agent-flywheel upload",
    ) -> str:
        """Upload ``{path_in_repo: bytes | text | local path}`` in one commit; returns ``hf://datasets/{ns}/{name}``.

        One commit, so a reader never sees half a dataset; the repo is created first when missing.
        """
        if not files:
            raise ValueError("nothing to upload")
        operations = []
        total = 0
        for path_in_repo, content in files.items():
            data: bytes | Path = content.encode("utf-8") if isinstance(content, str) else content
            total += data.stat().st_size if isinstance(data, Path) else len(data)
            operations.append(CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=data))
        await self.create_repo(namespace, name)
        api = self.hf_api()
        await self._hub(
            "POST",
            f"/v1/hf/api/datasets/{namespace}/{name}/commit/main",
            lambda: api.create_commit(
                f"{namespace}/{name}", operations, commit_message=commit_message, repo_type="dataset"
            ),
        )
        logger.info("data store: uploaded %d files (%d bytes) to %s/%s", len(operations), total, namespace, name)
        return dataset_files_url(namespace, name)

    async def upload_file(
        self, namespace: str, name: str, path_in_repo: str, content: FileContent, *, commit_message: str | None = None
    ) -> str:
        """Upload one file (``upload_file``; text is UTF-8 encoded); returns ``hf://datasets/{ns}/{name}``."""
        data: bytes | Path = content.encode("utf-8") if isinstance(content, str) else content
        await self.create_repo(namespace, name)
        api = self.hf_api()
        await self._hub(
            "POST",
            f"/v1/hf/api/datasets/{namespace}/{name}/commit/main",
            lambda: api.upload_file(
                path_or_fileobj=data,
                path_in_repo=path_in_repo,
                repo_id=f"{namespace}/{name}",
                repo_type="dataset",
                commit_message=commit_message or f"agent-flywheel: {path_in_repo}",
            ),
        )
        logger.info("data store: uploaded 1 file to %s/%s", namespace, name)
        return dataset_files_url(namespace, name)

    async def upload_folder(
        self, namespace: str, name: str, folder: str | Path, *, commit_message: str = "agent-flywheel upload"
    ) -> str:
        """Upload a local folder as it is laid out (``training/``, ``validation/``, ``eval_data.jsonl``)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a directory")
        count = sum(1 for p in folder.rglob("*") if p.is_file())
        await self.create_repo(namespace, name)
        api = self.hf_api()
        await self._hub(
            "POST",
            f"/v1/hf/api/datasets/{namespace}/{name}/commit/main",
            lambda: api.upload_folder(
                repo_id=f"{namespace}/{name}", folder_path=folder, repo_type="dataset", commit_message=commit_message
            ),
        )
        logger.info("data store: uploaded a folder of %d files to %s/%s", count, namespace, name)
        return dataset_files_url(namespace, name)

    async def delete_repo(self, namespace: str, name: str, *, repo_type: str = "dataset") -> bool:
        """Delete a repo and its files; False when it was already gone."""
        api = self.hf_api()
        try:
            await self._hub(
                "DELETE",
                "/v1/hf/api/repos/delete",
                lambda: api.delete_repo(f"{namespace}/{name}", repo_type=repo_type, missing_ok=False),
            )
        except NemoAPIError as err:
            if err.not_found:
                return False
            raise
        logger.info("data store: deleted %s repo %s/%s", repo_type, namespace, name)
        return True

    async def read_file(self, namespace: str, name: str, path_in_repo: str, *, revision: str = "main") -> bytes:
        """A file's bytes (``resolve``), to check what the services will read."""
        path = (
            f"/v1/hf/datasets/{quote(namespace)}/{quote(name)}/resolve/{quote(revision, safe='')}/{quote(path_in_repo)}"
        )
        response = await self.http.request("GET", path, ok=(200,))
        return response.content
