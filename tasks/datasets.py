"""Tasks: build the eval / train / ICL datasets, and upload them to the Data Store and Entity Store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prefect import get_run_logger, task
from pydantic import BaseModel

from agent_flywheel.config import ExampleSelection, FlywheelConfig
from agent_flywheel.datasets import DatasetBuild, build_datasets
from agent_flywheel.nemo.payloads import safe_name
from tasks.clients import nemo_client, nemo_settings
from tasks.extract import record_cache


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


def _embedder(nim_url: str, model: str) -> object:
    def embed(texts: list[str]) -> list[list[float]]:
        response = httpx.post(
            f"{nim_url.rstrip('/')}/v1/embeddings",
            json={"model": model, "input": texts, "input_type": "query"},
            timeout=60,
        )
        response.raise_for_status()
        return [item["embedding"] for item in sorted(response.json()["data"], key=lambda d: d["index"])]

    return embed


@task(name="build-datasets", timeout_seconds=3600)
def build_datasets_task(
    workload_id: str, client_id: str, cfg: FlywheelConfig, nemo_block: str, run_dir: Path
) -> BuiltDatasets:
    """Dedupe, filter, split and select ICL examples from every record the workload has accumulated."""
    logger = get_run_logger()
    embed = None
    if cfg.icl_config.example_selection == ExampleSelection.SEMANTIC:
        emb = cfg.icl_config.similarity_config.embedding_nim_config
        assert emb is not None  # the config validator guarantees it
        embed = _embedder(emb.url or nemo_settings(nemo_block).nim_url, emb.model_name)
    build: DatasetBuild = build_datasets(
        record_cache(workload_id, client_id).iter_documents(),
        cfg.data_split_config,
        cfg.icl_config,
        cfg.evaluation_config,
        cfg.nims,
        run_dir / "datasets",
        embed=embed,  # type: ignore[arg-type]
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


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*.jsonl"))}


@task(name="upload-datasets", retries=2, retry_delay_seconds=[10, 60], timeout_seconds=1800)
async def upload_datasets(
    workload_id: str, built: BuiltDatasets, cfg: FlywheelConfig, nemo_block: str, run_tag: str
) -> UploadedDatasets:
    """Upload each dataset to the Data Store (Hugging Face protocol) and register it in the Entity Store."""
    logger = get_run_logger()
    ns = cfg.namespace
    stamp = time.strftime("%Y%m%d%H%M%S")
    label = safe_name(workload_id)
    names = {"base": f"flywheel-eval-{label}-{stamp}-{run_tag}", "train": f"flywheel-train-{label}-{stamp}-{run_tag}"}
    async with nemo_client(nemo_block) as nemo:
        for kind in ("base", "train"):
            dataset = await nemo.upload_dataset(
                ns,
                names[kind],
                _files(Path(built.dirs[kind])),
                description=f"agent-flywheel {kind} dataset of {workload_id}",
            )
            logger.info("upload-datasets: %s registered as %s/%s", kind, ns, dataset.name)
        icl: dict[str, str] = {}
        for model, directory in built.icl_dirs.items():
            name = f"flywheel-icl-{label}-{safe_name(model)}-{stamp}-{run_tag}"[:120]
            await nemo.upload_dataset(ns, name, _files(Path(directory)), description=f"ICL eval set for {model}")
            icl[model] = name
    return UploadedDatasets(namespace=ns, base=names["base"], train=names["train"], icl=icl)
