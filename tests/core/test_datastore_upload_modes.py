"""Data Store uploads in both of the server's answers to the preupload step: ``regular`` and ``lfs``.

The product's client (``agent_flywheel.nemo.datastore``) against the Data Store simulator over HTTP, with the
locked ``huggingface_hub`` and ``hf_xet`` installed: in ``lfs`` mode a client that lets ``huggingface_hub`` pick
Xet fails on the missing ``xet-write-token`` endpoint (checked in tests/simulators/test_datastore_hf.py), ours
goes through classic git-LFS. A failure is reported with the URL and status that failed, never as "cannot
reach" when the Data Store answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_flywheel.nemo import NemoAPIError, NemoClient, NemoEndpoints, RetryPolicy
from simulators.datastore.server import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer

pytestmark = pytest.mark.integration

NS = "modes"
EVAL = '{"request": {"messages": [{"role": "user", "content": "hi ✓"}]}, "response": {"choices": []}}\n' * 50
TRAIN = b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n' * 20


@pytest.fixture(params=["regular", "lfs"])
def datastore(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, list[str]]]:
    """A Data Store simulator in one upload mode; the third item lists the paths of the requests it got."""
    cfg = LocalStackConfig(state_dir=str(tmp_path / "state"), datastore={"upload_mode": request.param})
    app = create_app(cfg)
    paths: list[str] = []

    @app.middleware("http")
    async def record(request_, call_next):  # type: ignore[no-untyped-def]
        paths.append(f"{request_.method} {request_.url.path}")
        return await call_next(request_)

    with ThreadedServer(app) as server:
        yield request.param, server.url, paths


def _client(url: str) -> NemoClient:
    return NemoClient(NemoEndpoints.shared(url, url, url), retry=RetryPolicy(max_retries=1, backoff_base_s=0.01))


async def test_uploads_round_trip_in_either_mode(datastore: tuple[str, str, list[str]], tmp_path: Path) -> None:
    mode, url, paths = datastore
    folder = tmp_path / "train"
    (folder / "training").mkdir(parents=True)
    (folder / "training" / "train_data.jsonl").write_bytes(TRAIN)
    async with _client(url) as nemo:
        await nemo.datastore.ensure_namespace(NS)
        assert await nemo.datastore.upload_files(NS, "eval", {"eval_data.jsonl": EVAL}) == f"hf://datasets/{NS}/eval"
        await nemo.datastore.upload_folder(NS, "train", folder)
        await nemo.datastore.upload_file(NS, "one", "notes/a.txt", b"bytes")
        assert await nemo.datastore.read_file(NS, "eval", "eval_data.jsonl") == EVAL.encode()
        assert await nemo.datastore.read_file(NS, "train", "training/train_data.jsonl") == TRAIN
        assert await nemo.datastore.read_file(NS, "one", "notes/a.txt") == b"bytes"
        uploaded = [p for p in paths if p.startswith("PUT ")]
        batches = [p for p in paths if p.endswith("/info/lfs/objects/batch")]
        assert not [p for p in paths if "xet" in p]
        if mode == "lfs":  # each file went by the LFS batch API and a PUT of its content, then the commit
            assert batches == [
                f"POST /v1/hf/datasets/{NS}/eval.git/info/lfs/objects/batch",
                f"POST /v1/hf/datasets/{NS}/train.git/info/lfs/objects/batch",
                f"POST /v1/hf/datasets/{NS}/one.git/info/lfs/objects/batch",
            ]
            assert len(uploaded) == 3 and all("/v1/hf/lfs-objects/" in p for p in uploaded)
            # The same content again: the server has it, so the batch answers without an upload action.
            before = len(uploaded)
            await nemo.datastore.upload_files(NS, "eval-copy", {"eval_data.jsonl": EVAL})
            assert len([p for p in paths if p.startswith("PUT ")]) == before
            assert await nemo.datastore.read_file(NS, "eval-copy", "eval_data.jsonl") == EVAL.encode()
        else:
            assert batches == [] and uploaded == []


async def test_an_http_error_from_an_upload_endpoint_is_an_answer_not_unreachable(
    datastore: tuple[str, str, list[str]],
) -> None:
    """A 404 that ``hf_xet`` wraps in a ConnectionError (what the Xet path gave) names the status and the URL."""
    _, url, _ = datastore

    def xet_failure() -> None:
        raise ConnectionError(
            "Network error: Request error: HTTP status client error (404 Not Found), domain: "
            f"{url}/v1/hf/api/datasets/{NS}/eval/xet-write-token/main"
        )

    async with _client(url) as nemo:
        with pytest.raises(NemoAPIError) as caught:
            await nemo.datastore._hub("POST", f"/v1/hf/api/datasets/{NS}/eval/commit/main", xet_failure)
    error = caught.value
    assert error.status == 404 and error.attempts == 1 and not error.retryable
    assert error.path == f"/v1/hf/api/datasets/{NS}/eval/xet-write-token/main"
    assert "cannot reach" not in str(error) and "Xet" in error.hint


async def test_no_answer_at_all_is_still_unreachable(tmp_path: Path) -> None:
    async with _client("http://127.0.0.1:9") as nemo:
        with pytest.raises(NemoAPIError) as caught:
            await nemo.datastore.upload_files(NS, "x", {"a.jsonl": "{}\n"})
    assert caught.value.status is None and "cannot reach" in str(caught.value)
