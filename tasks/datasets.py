"""Tasks: build the eval / train / ICL datasets, and upload them to the Data Store and Entity Store."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, SecretStr

from agent_flywheel.config import ExampleSelection, FlywheelConfig
from agent_flywheel.datasets.build import DatasetBuild, build_datasets
from agent_flywheel.datasets.shortfall import SourceFilters
from agent_flywheel.endpoints import embeddings_url
from agent_flywheel.nemo.cleanup import MANAGED_DATASET_FIELD
from agent_flywheel.nemo.client import NemoClient
from agent_flywheel.nemo.names import dataset_name
from agent_flywheel.records.stored_cache import CacheManifest, pull
from tasks.retries import retry_if_transient
from tasks.state_store import blob_store, record_cache


class BuiltDatasets(BaseModel):
    """Where the dataset files are and what they hold (the manifest goes to MLflow)."""

    out_dir: str
    workload_type: str
    tool_calling: bool
    counts: dict[str, int]
    removed: dict[str, int]
    per_tool: dict[str, dict[str, int]]
    manifest_path: str
    dirs: dict[str, str]
    icl_dirs: dict[str, str]
    warnings: list[str]


class UploadedDatasets(BaseModel):
    """Entity Store names of the uploaded datasets and the eval file URLs the Evaluator reads."""

    namespace: str
    base: str
    train: str
    icl: dict[str, str]

    def files_url(self, dataset: str) -> str:
        return f"hf://datasets/{self.namespace}/{dataset}/eval_data.jsonl"


def nim_embedder(
    nim_url: str, model: str, api_key: SecretStr | None = None
) -> Callable[[list[str]], list[list[float]]]:
    """Embeddings from an OpenAI-compatible ``/v1/embeddings`` (a NIM), for semantic ICL selection; ``nim_url``
    may be a base URL or the blueprint's full ``.../v1/embeddings``; ``api_key`` (a remote model's) is sent as
    a bearer token to that URL only."""
    headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}

    def embed(texts: list[str]) -> list[list[float]]:
        response = httpx.post(
            embeddings_url(nim_url),
            json={"model": model, "input": texts, "input_type": "query"},
            headers=headers,
            timeout=60,
        )
        response.raise_for_status()
        return [item["embedding"] for item in sorted(response.json()["data"], key=lambda d: d["index"])]

    return embed


@task(name="build-datasets", timeout_seconds=3600, cache_policy=NO_CACHE)
def build_datasets_task(
    records: CacheManifest,
    workload_id: str,
    client_id: str,
    cfg: FlywheelConfig,
    nim_url: str,
    run_dir: Path,
    embedding_api_key: SecretStr | None = None,
    config_file: str | None = None,
) -> BuiltDatasets:
    """Dedupe, filter, split and select ICL examples from every record the workload has accumulated.

    ``records`` is the record cache as extraction left it (its result): this worker's copy is brought in line
    with it first, so the build reads exactly those segments whichever worker extracted them. ``nim_url``
    serves the embeddings of semantic ICL selection unless the config names its own (remote) URL, which gets
    ``embedding_api_key``. Not cached on its inputs: the key is one of them.
    """
    logger = get_run_logger()
    blobs = blob_store()
    cache, _ = record_cache(workload_id, client_id, blobs)
    pull(cache, blobs, records)
    embed = None
    if cfg.icl_config.example_selection == ExampleSelection.SEMANTIC:
        emb = cfg.icl_config.similarity_config.embedding_nim_config
        assert emb is not None  # the config validator guarantees it
        remote = emb.deployment_type == "remote" and emb.url
        embed = nim_embedder(emb.url or nim_url, emb.model_name, embedding_api_key if remote else None)
    build: DatasetBuild = build_datasets(
        cache,
        cfg.data_split_config,
        cfg.icl_config,
        cfg.evaluation_config,
        cfg.nims,
        run_dir / "datasets",
        embed=embed,
        gate=cfg.promotion_gate,
        filters=SourceFilters.from_config(cfg, workload_id, client_id, config_file),
    )
    logger.info(
        "build-datasets: %s workload; %s; removed %s",
        build.workload_type,
        ", ".join(f"{k} {v}" for k, v in build.counts.items()),
        build.removed or "nothing",
    )
    for warning in build.warnings:
        logger.warning("build-datasets: %s", warning)
    dirs = build.dataset_dirs
    return BuiltDatasets(
        out_dir=str(build.out_dir),
        workload_type=str(build.workload_type),
        tool_calling=str(build.workload_type) == "tool_calling",
        counts=dict(build.counts),
        removed=dict(build.removed),
        per_tool={k: dict(v) for k, v in build.per_tool.items()},
        manifest_path=str(build.manifest_path),
        dirs={k: str(v) for k, v in dirs.items() if not k.startswith("icl/")},
        icl_dirs={model: str(path.parent) for model, path in build.icl_paths.items()},
        warnings=list(build.warnings),
    )


#: Code points that JSON keeps raw inside strings but that ``str.splitlines()`` (and so some JSONL readers,
#: the local NeMo simulator's among them) treats as line ends: NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
_LINE_BREAKS_IN_STRINGS = {"\u0085": b"\\u0085", "\u2028": b"\\u2028", "\u2029": b"\\u2029"}


def jsonl_safe(data: bytes) -> bytes:
    """JSONL whose lines every reader splits the same way: those code points written as ``\\uXXXX`` escapes.

    In valid JSON they can only occur inside strings, where the escape means the same character, so the
    records are unchanged; a user message with a pasted U+2028 no longer splits a record in two.
    """
    for char, escape in _LINE_BREAKS_IN_STRINGS.items():
        data = data.replace(char.encode("utf-8"), escape)
    return data


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): jsonl_safe(p.read_bytes()) for p in sorted(directory.rglob("*.jsonl"))}


def content_digest(files: dict[str, bytes]) -> str:
    """A short hash of a dataset's files (paths and bytes): the same records make the same dataset name."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode("utf-8") + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()[:12]


@task(
    name="upload-datasets",
    retries=2,
    retry_delay_seconds=[10, 60],
    retry_condition_fn=retry_if_transient,
    timeout_seconds=1800,
    cache_policy=NO_CACHE,
)
async def upload_datasets(
    workload_id: str, built: BuiltDatasets, cfg: FlywheelConfig, nemo: NemoClient
) -> UploadedDatasets:
    """Upload each dataset to the Data Store (Hugging Face protocol) and register it in the Entity Store.

    Names are content-addressed (``flywheel-<kind>-<workload label>[-<model>]-<hash of the files>``, valid
    for the Data Store whatever the workload id: :func:`~agent_flywheel.nemo.names.dataset_name`), not stamped
    with a time or a run id: a rerun on the same records reuses the same datasets, so the idempotency keys
    of the jobs built on them match too and a resumed run finds the jobs a dead run started. Uploading an
    unchanged dataset again is a no-op commit.
    """
    logger = get_run_logger()
    ns = cfg.namespace
    uploads: dict[str, tuple[str, dict[str, bytes], str]] = {}
    for kind, prefix in (("base", "eval"), ("train", "train")):
        files = _files(Path(built.dirs[kind]))
        uploads[kind] = (
            dataset_name(prefix, workload_id, content_digest(files)),
            files,
            f"agent-flywheel {kind} dataset of {workload_id}",
        )
    for model, directory in built.icl_dirs.items():
        files = _files(Path(directory))
        name = dataset_name("icl", workload_id, content_digest(files), model)
        uploads[f"icl/{model}"] = (name, files, f"ICL eval set of {workload_id} for {model}")
    marks = {MANAGED_DATASET_FIELD: "true", "flywheel_workload_id": workload_id}  # found by `flywheel cleanup`
    for kind, (name, files, description) in uploads.items():
        dataset = await nemo.upload_dataset(ns, name, files, description=description, custom_fields=marks)
        logger.info("upload-datasets: %s registered as %s/%s", kind, ns, dataset.name)
    icl = {kind.removeprefix("icl/"): name for kind, (name, _, _) in uploads.items() if kind.startswith("icl/")}
    return UploadedDatasets(namespace=ns, base=uploads["base"][0], train=uploads["train"][0], icl=icl)
