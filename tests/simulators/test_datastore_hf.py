"""The Data Store simulator with the real ``huggingface_hub`` client: repos, uploads, listings, downloads."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "0"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from simulators.datastore.server import create_app
from simulators.settings import LocalStackConfig
from simulators.threaded import ThreadedServer

pytestmark = pytest.mark.integration

TRAIN = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}\n' * 3
VAL = b'{"messages": [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "Goodbye!"}]}\n'
EVAL = '{"request": {"messages": []}, "response": {"choices": []}, "note": "ünïcode ✓"}\n'.encode()


@pytest.fixture(autouse=True)
def _hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture
def datastore(tmp_path: Path) -> Iterator[tuple[str, LocalStackConfig]]:
    cfg = LocalStackConfig(state_dir=str(tmp_path / "state"))
    with ThreadedServer(create_app(cfg)) as server:
        yield server.url, cfg


def _api(url: str) -> HfApi:
    return HfApi(endpoint=f"{url}/v1/hf", token="nothing")


def test_namespaces_health_and_simulated_label(datastore: tuple[str, LocalStackConfig]) -> None:
    url, _ = datastore
    health = httpx.get(f"{url}/health")
    assert health.status_code == 200 and health.headers["X-Flywheel-Simulated"] == "true"
    created = httpx.post(f"{url}/v1/datastore/namespaces", data={"namespace": "dfwbp"})
    assert created.status_code == 201
    assert created.json()["namespace"] == "dfwbp" and created.json()["created_at"].endswith("Z")
    assert httpx.post(f"{url}/v1/datastore/namespaces", data={"namespace": "dfwbp"}).status_code == 409
    assert httpx.post(f"{url}/v1/datastore/namespaces", json={"namespace": "other"}).status_code == 201
    assert httpx.post(f"{url}/v1/datastore/namespaces", json={}).status_code == 422
    assert httpx.post(f"{url}/v1/datastore/namespaces", data={"namespace": "../x"}).status_code == 422
    assert httpx.get(f"{url}/v1/datastore/namespaces/dfwbp").json()["namespace"] == "dfwbp"
    assert [n["namespace"] for n in httpx.get(f"{url}/v1/datastore/namespaces").json()["data"]] == ["dfwbp", "other"]
    assert httpx.delete(f"{url}/v1/datastore/namespaces/dfwbp").status_code == 200
    assert httpx.get(f"{url}/v1/datastore/namespaces/dfwbp").status_code == 404
    assert httpx.delete(f"{url}/v1/datastore/namespaces/dfwbp").status_code == 404


def test_dataset_round_trip_with_the_real_client(datastore: tuple[str, LocalStackConfig], tmp_path: Path) -> None:
    url, _ = datastore
    api = _api(url)
    repo = "dfwbp/flywheel-eval-support-1"
    repo_url = api.create_repo(repo, repo_type="dataset")
    assert repo_url.repo_id == repo and repo_url.repo_type == "dataset"
    with pytest.raises(HfHubHTTPError) as duplicate:
        api.create_repo(repo, repo_type="dataset")
    assert "409" in str(duplicate.value)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)

    for path, data in (
        ("training/train_data.jsonl", TRAIN),
        ("validation/val_data.jsonl", VAL),
        ("eval_data.jsonl", EVAL),
    ):
        info = api.upload_file(path_or_fileobj=io.BytesIO(data), path_in_repo=path, repo_id=repo, repo_type="dataset")
        assert len(info.oid) == 40
    assert sorted(api.list_repo_files(repo, repo_type="dataset")) == [
        "eval_data.jsonl",
        "training/train_data.jsonl",
        "validation/val_data.jsonl",
    ]
    top = {(e.path, type(e).__name__) for e in api.list_repo_tree(repo, repo_type="dataset")}
    assert top == {("eval_data.jsonl", "RepoFile"), ("training", "RepoFolder"), ("validation", "RepoFolder")}
    under = list(api.list_repo_tree(repo, path_in_repo="training", repo_type="dataset"))
    assert [(e.path, e.size) for e in under] == [("training/train_data.jsonl", len(TRAIN))]  # type: ignore[union-attr]
    cache = tmp_path / "cache"
    for path, data in (
        ("training/train_data.jsonl", TRAIN),
        ("validation/val_data.jsonl", VAL),
        ("eval_data.jsonl", EVAL),
    ):
        local = api.hf_hub_download(repo, path, repo_type="dataset", cache_dir=cache)
        assert Path(local).read_bytes() == data
    info = api.repo_info(repo, repo_type="dataset", files_metadata=True)
    assert info.sha is not None and {s.rfilename for s in info.siblings or []} >= {"eval_data.jsonl"}
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(repo, "missing.jsonl", repo_type="dataset", cache_dir=cache)

    # An unchanged file makes no new commit; a deleted one is gone from the next revision.
    before = api.repo_info(repo, repo_type="dataset").sha
    api.upload_file(path_or_fileobj=io.BytesIO(EVAL), path_in_repo="eval_data.jsonl", repo_id=repo, repo_type="dataset")
    assert api.repo_info(repo, repo_type="dataset").sha == before
    api.delete_file("eval_data.jsonl", repo, repo_type="dataset")
    assert "eval_data.jsonl" not in api.list_repo_files(repo, repo_type="dataset")
    old = api.hf_hub_download(repo, "eval_data.jsonl", repo_type="dataset", revision=before, cache_dir=tmp_path / "c2")
    assert Path(old).read_bytes() == EVAL

    api.delete_repo(repo, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(repo, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo, repo_type="dataset")
    api.delete_repo(repo, repo_type="dataset", missing_ok=True)


def test_upload_folder_and_job_revisions_of_a_model_repo(
    datastore: tuple[str, LocalStackConfig], tmp_path: Path
) -> None:
    url, cfg = datastore
    api = _api(url)
    repo = "dfwbp/customized-llama-1b"
    api.create_repo(repo)
    folder = tmp_path / "adapter"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 32}')
    (folder / "sub" / "adapter_model.bin").write_bytes(bytes(range(256)) * 40)
    api.upload_folder(repo_id=repo, folder_path=folder, revision="main")
    assert sorted(api.list_repo_files(repo)) == ["adapter_config.json", "sub/adapter_model.bin"]

    api.upload_file(path_or_fileobj=b"job output", path_in_repo="result.txt", repo_id=repo, revision="cust-Ab12")
    assert "result.txt" in api.list_repo_files(repo, revision="cust-Ab12")
    assert "result.txt" not in api.list_repo_files(repo)
    got = api.hf_hub_download(repo, "result.txt", revision="cust-Ab12", cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == b"job output"
    binary = api.hf_hub_download(repo, "sub/adapter_model.bin", cache_dir=tmp_path / "cache")
    assert Path(binary).read_bytes() == bytes(range(256)) * 40
    assert {b.name for b in api.list_repo_refs(repo).branches} == {"main", "cust-Ab12"}
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo, revision="no-such-branch")
    recursive = {e.path for e in api.list_repo_tree(repo, recursive=True)}
    assert recursive == {"adapter_config.json", "sub", "sub/adapter_model.bin"}

    # Ranged reads and HEAD, as a resumed download makes them.
    file_url = f"{url}/v1/hf/{repo}/resolve/main/sub/adapter_model.bin"
    head = httpx.head(file_url)
    assert head.status_code == 200 and head.headers["content-length"] == str(256 * 40)
    assert head.headers["x-repo-commit"] == api.repo_info(repo).sha and head.headers["etag"].startswith('"')
    part = httpx.get(file_url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == bytes(range(10, 20))

    # The files survive a restart of the simulator.
    with ThreadedServer(create_app(cfg)) as again:
        assert sorted(_api(again.url).list_repo_files(repo)) == ["adapter_config.json", "sub/adapter_model.bin"]
    store = create_app(cfg).state.store
    assert store.files_for_hf_url(f"hf://{repo}/sub") == {"sub/adapter_model.bin": bytes(range(256)) * 40}


def test_bad_requests_are_refused_cleanly(datastore: tuple[str, LocalStackConfig]) -> None:
    url, _ = datastore
    hf = f"{url}/v1/hf"
    httpx.post(f"{hf}/api/repos/create", json={"name": "d", "organization": "ns", "type": "dataset"})
    commit = f"{hf}/api/datasets/ns/d/commit/main"
    assert httpx.post(commit, content=b"not json\n").status_code == 400
    no_header = b'{"key": "file", "value": {"path": "a", "content": "aGk=", "encoding": "base64"}}\n'
    assert httpx.post(commit, content=no_header).status_code == 400
    escape = (
        b'{"key": "header", "value": {"summary": "x"}}\n{"key": "file", "value": {"path": "../a", "content": ""}}\n'
    )
    assert httpx.post(commit, content=escape).status_code == 400
    lfs = (
        b'{"key": "header", "value": {"summary": "x"}}\n{"key": "lfsFile", "value": {"path": "a", "oid": "'
        + b"0" * 64
        + b'"}}\n'
    )
    assert httpx.post(commit, content=lfs).status_code == 422
    missing = httpx.post(f"{hf}/api/datasets/ns/nope/preupload/main", json={"files": []})
    assert missing.status_code == 404 and missing.headers["x-error-code"] == "RepoNotFound"
    assert (
        httpx.post(f"{hf}/api/repos/create", json={"name": "x", "organization": "ns", "type": "space"}).status_code
        == 400
    )


@pytest.fixture
def lfs_datastore(tmp_path: Path) -> Iterator[str]:
    cfg = LocalStackConfig(state_dir=str(tmp_path / "state"), datastore={"upload_mode": "lfs"})
    with ThreadedServer(create_app(cfg)) as server:
        yield server.url


def test_lfs_mode_has_no_xet_endpoint_like_a_nemo_data_store(lfs_datastore: str) -> None:
    """With ``hf_xet`` installed, ``huggingface_hub`` 2.x takes Xet for an ``lfs`` file given by path or bytes:
    a NeMo Data Store has no Xet endpoint, and neither has the simulator (what issue #16 reproduced)."""
    api = _api(lfs_datastore)
    api.create_repo("ns/xet", repo_type="dataset")
    mode = httpx.post(
        f"{lfs_datastore}/v1/hf/api/datasets/ns/xet/preupload/main",
        json={"files": [{"path": "a.jsonl", "sample": "", "size": 3}]},
    )
    assert mode.json()["files"][0]["uploadMode"] == "lfs"
    with pytest.raises(Exception, match=r"404.*xet-write-token"):
        api.upload_file(path_or_fileobj=TRAIN, path_in_repo="a.jsonl", repo_id="ns/xet", repo_type="dataset")


def test_lfs_mode_round_trip_with_the_real_client_without_xet(
    lfs_datastore: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Classic git-LFS, as ``huggingface_hub`` speaks it when Xet is off: batch, PUT, verify, ``lfsFile`` commit."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    api = _api(lfs_datastore)
    repo = "ns/lfs"
    api.create_repo(repo, repo_type="dataset")
    folder = tmp_path / "ds"
    (folder / "training").mkdir(parents=True)
    (folder / "training" / "train_data.jsonl").write_bytes(TRAIN)
    (folder / "eval_data.jsonl").write_bytes(EVAL)
    api.upload_folder(repo_id=repo, folder_path=folder, repo_type="dataset")
    api.upload_file(path_or_fileobj=VAL, path_in_repo="validation/val_data.jsonl", repo_id=repo, repo_type="dataset")
    assert sorted(api.list_repo_files(repo, repo_type="dataset")) == [
        "eval_data.jsonl",
        "training/train_data.jsonl",
        "validation/val_data.jsonl",
    ]
    for path, data in (
        ("training/train_data.jsonl", TRAIN),
        ("eval_data.jsonl", EVAL),
        ("validation/val_data.jsonl", VAL),
    ):
        assert Path(api.hf_hub_download(repo, path, repo_type="dataset", cache_dir=tmp_path / "c")).read_bytes() == data
    # A model repo (an adapter's files) goes the same way, under its git URL without the datasets/ prefix.
    api.create_repo("ns/adapter")
    api.upload_file(path_or_fileobj=bytes(range(256)), path_in_repo="adapter.bin", repo_id="ns/adapter")
    assert Path(api.hf_hub_download("ns/adapter", "adapter.bin", cache_dir=tmp_path / "c")).read_bytes() == bytes(
        range(256)
    )


def test_lfs_batch_protocol(lfs_datastore: str) -> None:
    import hashlib

    hf = f"{lfs_datastore}/v1/hf"
    httpx.post(f"{hf}/api/repos/create", json={"name": "d", "organization": "ns", "type": "dataset"})
    data = b"large file\n"
    oid = hashlib.sha256(data).hexdigest()
    batch_url = f"{hf}/datasets/ns/d.git/info/lfs/objects/batch"
    body = {"operation": "upload", "transfers": ["basic", "multipart"], "objects": [{"oid": oid, "size": len(data)}]}
    answer = httpx.post(batch_url, json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/vnd.git-lfs+json")
    actions = answer.json()["objects"][0]["actions"]
    assert answer.json()["transfer"] == "basic"
    assert httpx.put(actions["upload"]["href"], content=b"other bytes").status_code == 400  # not what oid names
    assert httpx.post(actions["verify"]["href"], json={"oid": oid, "size": len(data)}).status_code == 404
    assert httpx.put(actions["upload"]["href"], content=data).status_code == 200
    assert httpx.post(actions["verify"]["href"], json={"oid": oid, "size": len(data) + 1}).status_code == 422
    assert httpx.post(actions["verify"]["href"], json={"oid": oid, "size": len(data)}).status_code == 200
    assert "actions" not in httpx.post(batch_url, json=body).json()["objects"][0]  # stored already: nothing to do
    commit = (
        b'{"key": "header", "value": {"summary": "x"}}\n'
        + f'{{"key": "lfsFile", "value": {{"path": "big.jsonl", "algo": "sha256", "oid": "{oid}", "size": {len(data)}}}}}\n'.encode()
    )
    assert httpx.post(f"{hf}/api/datasets/ns/d/commit/main", content=commit).status_code == 200
    assert httpx.get(f"{hf}/datasets/ns/d/resolve/main/big.jsonl").content == data
    assert httpx.post(f"{hf}/datasets/ns/nope.git/info/lfs/objects/batch", json=body).status_code == 404
    assert httpx.post(batch_url, json={**body, "operation": "download"}).status_code == 422
    assert httpx.post(batch_url, json={**body, "transfers": ["xet"]}).status_code == 422
    xet = httpx.get(f"{hf}/api/datasets/ns/d/xet-write-token/main")
    assert xet.status_code == 404
