"""NeMo Data Store: its own namespaces (form POST) and dataset files through ``huggingface_hub``.

The Data Store speaks the Hugging Face Hub protocol under ``/v1/hf``, so the files go up with
``HfApi`` (create the repo, one commit per upload) and come back as ``hf://datasets/{ns}/{name}``, the
URL the Customizer and the Evaluator read. ``HfApi`` is blocking, so it runs in a worker thread; its
failures become :class:`NemoAPIError` like everything else, after the same retry policy.

The token sent to the Data Store is ours (``datastore_token``, else none at all): ``token=False`` stops
``huggingface_hub`` from sending a personal Hugging Face token found in the environment.

**Large files.** The Data Store answers the preupload step with ``regular`` (content inline in the commit) or
``lfs`` (content through the git-LFS batch API first). For ``lfs``, ``huggingface_hub`` 2.x uses Xet storage
whenever ``hf_xet`` is installed, and the Data Store has no Xet endpoint (``.../xet-write-token/main`` is a
404). Xet is skipped for a commit whose contents are in-memory buffers, so every file goes up as an
``io.BytesIO``: classic LFS (batch, ``PUT``, verify, then an ``lfsFile`` line in the commit) for this client
only, without touching ``HF_HUB_DISABLE_XET`` for the rest of the process. A failure is reported with the URL
and the status that failed: an HTTP error from the hub or from ``hf_xet`` (which wraps it as a
``ConnectionError``) is an answer, not "cannot reach".
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import disable_progress_bars
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
#: How ``hf_xet`` (and httpx2) word an HTTP error they wrap in a ConnectionError: the status and the URL.
_WRAPPED_STATUS = re.compile(r"HTTP status [a-z ]*error \((\d{3})[^)]*\)")
_WRAPPED_URL = re.compile(r"(?:domain|url):\s*(\S+)")
#: What ``huggingface_hub`` logs when it leaves Xet aside for in-memory buffers: expected here, so not shown.
_XET_FALLBACK_WARNING = "not supported by Xet Storage"


class _QuietXetFallback(logging.Filter):
    """Drops ``huggingface_hub``'s warning that in-memory uploads skip Xet: this client does that on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _XET_FALLBACK_WARNING not in record.getMessage()


logging.getLogger("huggingface_hub._commit_api").addFilter(_QuietXetFallback())


def _buffer(content: FileContent) -> tuple[io.BytesIO, int]:
    """A file's content as an in-memory buffer (so ``huggingface_hub`` uploads large files by LFS, not Xet)."""
    if isinstance(content, Path):
        data = content.read_bytes()
    elif isinstance(content, str):
        data = content.encode("utf-8")
    else:
        data = content
    return io.BytesIO(data), len(data)


def _hub_failure(exc: BaseException) -> tuple[int | None, str | None, str] | None:
    """``(status, failing URL, detail)`` of an HTTP answer inside a hub failure, or None when none came back.

    Looks through the chain of causes: ``huggingface_hub`` wraps an LFS upload error in a RuntimeError, and
    ``hf_xet`` reports an HTTP status as a ConnectionError whose text holds the status and the URL.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, HfHubHTTPError) and seen.response is not None:
            url = str(seen.response.request.url) if seen.response.request is not None else None
            return seen.response.status_code, url, seen.server_message or str(seen).splitlines()[0]
        status = _WRAPPED_STATUS.search(str(seen))
        if status:
            where = _WRAPPED_URL.search(str(seen))
            return int(status.group(1)), where.group(1).rstrip(",") if where else None, str(seen).splitlines()[0]
        seen = seen.__cause__ or seen.__context__
    return None


def _hint_for_url(url: str | None, status: int | None) -> str | None:
    """What to do about a failing hub URL, where the generic hint by status would mislead."""
    if url and "xet" in url:
        return (
            f"the Data Store answered {status} on a Xet storage endpoint: it has none (a NeMo Data Store speaks "
            "git-LFS). agent-flywheel uploads large files by LFS; another client needs HF_HUB_DISABLE_XET=1"
        )
    if url and "/info/lfs/" in url:
        return f"the Data Store's git-LFS endpoint answered {status}: check that it accepts LFS uploads"
    return None


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
        """An ``HfApi`` bound to the Data Store with our token only.

        Its progress bars are turned off (for the process: ``huggingface_hub`` has no per-client switch): on
        stderr they are noise in a flow's log and break the command line's one line per finding.
        """
        disable_progress_bars()
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
        """Run a blocking hub call in a thread, retrying 5xx/429/transport errors with backoff.

        An error names the URL that failed (the LFS or Xet endpoint, not only the commit it was part of) and
        its status: only a call that got no answer at all is reported as unreachable.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(call)
            except Exception as exc:
                answered = _hub_failure(exc)
                if answered is None and not isinstance(exc, _TRANSPORT_ERRORS):
                    raise
                status, url, detail = answered if answered is not None else (None, None, f"{type(exc).__name__}: {exc}")
                retryable = status is None or retryable_status(status)
                if retryable and attempt <= self.http.retry.max_retries:
                    await self._retry_sleep(method, path, attempt, str(status) if status else type(exc).__name__)
                    continue
                failed_path = urlsplit(url).path if url and url.startswith(self.http.base_url) else path
                raise self.http.error(
                    method,
                    failed_path,
                    status,
                    detail,
                    retryable=retryable,
                    attempts=attempt,
                    hint=_hint_for_url(url, status),
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
            buffer, size = _buffer(content)
            total += size
            operations.append(CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=buffer))
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
        """Upload one file (text is UTF-8 encoded); returns ``hf://datasets/{ns}/{name}``."""
        return await self.upload_files(
            namespace, name, {path_in_repo: content}, commit_message=commit_message or f"agent-flywheel: {path_in_repo}"
        )

    async def upload_folder(
        self, namespace: str, name: str, folder: str | Path, *, commit_message: str = "agent-flywheel upload"
    ) -> str:
        """Upload a local folder as it is laid out (``training/``, ``validation/``, ``eval_data.jsonl``), in one commit."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a directory")
        files: dict[str, FileContent] = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        return await self.upload_files(namespace, name, files, commit_message=commit_message)

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
