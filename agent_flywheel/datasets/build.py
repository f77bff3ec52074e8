"""From validated log records to the NeMo dataset files: filter, dedupe, split, ICL examples, manifest.

The steps, in order, each counting what it removes (nothing is dropped silently):

1. **shape**: a record needs ``request.messages`` (a non-empty list) and ``response.choices[0].message``;
2. **workload type**: tool-calling when any record's answer calls a tool, generic otherwise;
3. **quality** (tool-calling only): answers with a malformed call or unparseable arguments go; answers
   that call no tool stay when ``EvaluationConfig.include_no_call_records`` (the blueprint drops them);
4. **dedupe** on :func:`agent_flywheel.records.conversation.conversation_hash`, keeping the newest record,
   before any split, so one conversation can never be in both train and eval;
5. ``min_total_records`` (an error that names what each filter removed), then ``limit`` (a seeded sample);
6. a **stratified split** by label (first tool name, or ``no_tool``) for eval, then for train/val; training
   keeps ``min_train_records`` first and the eval set gives way down to the gate's minimum, or the build
   stops saying how many records it needs (``DataSplitConfig.min_train_records``);
7. **ICL**: examples from the train split only, fitted to each model's own context budget
   (``min(context_length, max_context_length) - reserved_tokens - tokens(prompt)``); an example that does
   not fit is skipped and the next one tried; a record that cannot get ``min_examples`` even from the
   shortest examples is left out of that model's ICL set and counted (``context_too_small``);
8. files in the NeMo layout plus ``manifest.json`` (hashes per split, counts, seed, config, sha256s).

Memory: records are read once. Only compact numpy arrays (hash, timestamp, label, sizes) are kept per
record; records are fetched again by position for the output (from the caller's sequence, or from a
spool file when the input is a one-shot iterator), so a million records fit in a few hundred MB.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from agent_flywheel.config import (
    DataSplitConfig,
    EvaluationConfig,
    ExampleSelection,
    ICLConfig,
    NIMConfig,
    PromotionGateConfig,
)
from agent_flywheel.datasets.formats import to_eval_record, to_training_example
from agent_flywheel.datasets.icl_sets import IclInputs, IclSet, build_icl
from agent_flywheel.datasets.output import HashingWriter, HexHashes, file_sha256, write_json
from agent_flywheel.datasets.scan import UsableKeys, scan_cache, scan_input
from agent_flywheel.datasets.semantic import Embedder
from agent_flywheel.datasets.shortfall import SourceFilters, shortfall_report
from agent_flywheel.datasets.sources import RecordSource, SequenceSource, SpoolSource
from agent_flywheel.datasets.split import ShortOfRecords, plan_split, stage_rng, stage_seed, stratified_split
from agent_flywheel.evaluation.gate import minimum_eval_records
from agent_flywheel.records.cache import ReadSummary, RecordCache
from agent_flywheel.records.keys import BAD_ARGUMENTS, HAS_CALL, MALFORMED_CALL

MANIFEST_VERSION = 1


class WorkloadType(StrEnum):
    TOOL_CALLING = "tool_calling"
    GENERIC = "generic"


class RemovalReason(StrEnum):
    """Why a record is not in any split; the manifest counts each."""

    INVALID_FORMAT = "invalid_format"
    MALFORMED_TOOL_CALL = "malformed_tool_call"
    UNPARSEABLE_ARGUMENTS = "unparseable_arguments"
    NO_TOOL_CALL = "no_tool_call"
    DUPLICATE = "duplicate"
    OVER_LIMIT = "over_limit"


class InsufficientRecordsError(ValueError):
    """Fewer usable records than ``min_total_records``; the message names every count."""


@dataclass(frozen=True)
class DatasetBuild:
    """What :func:`build_datasets` wrote: paths per dataset, counts, the manifest and the workload type.

    Upload ``dataset_dirs`` as they are: ``base`` holds ``eval_data.jsonl``, ``train`` holds
    ``training/train_data.jsonl`` and ``validation/val_data.jsonl``, ``icl/<model>`` one ICL eval set.
    ``manifest`` is the manifest file's content without the per-split hash lists (they are in the file).
    """

    out_dir: Path
    workload_type: WorkloadType
    seed: int
    eval_path: Path
    train_path: Path
    val_path: Path
    icl_paths: dict[str, Path]
    manifest_path: Path
    manifest: dict[str, Any]
    counts: dict[str, int]
    removed: dict[str, int]
    per_tool: dict[str, dict[str, int]]
    icl_sets: list[IclSet] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def dataset_dirs(self) -> dict[str, Path]:
        """Directories to upload as datasets: ``base``, ``train`` and ``icl/<model>``."""
        dirs = {"base": self.eval_path.parent, "train": self.train_path.parent.parent}
        for model, path in self.icl_paths.items():
            dirs[f"icl/{model}"] = path.parent
        return dirs


def _dedupe(digests: np.ndarray, timestamps: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Positions to keep: per conversation hash the newest (first seen on a tie), sorted by hash."""
    if candidates.size == 0:
        return candidates
    words = digests[candidates].view(">u8").reshape(-1, 4)
    order = np.lexsort((candidates, -timestamps[candidates], words[:, 3], words[:, 2], words[:, 1], words[:, 0]))
    sorted_words = words[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.any(sorted_words[1:] != sorted_words[:-1], axis=1)
    return candidates[order[first]]


def _per_tool(labels: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(names)) if labels.size else np.zeros(len(names), dtype=np.int64)
    return {names[i]: int(c) for i, c in sorted(enumerate(counts), key=lambda x: (-x[1], names[x[0]])) if c}


def build_datasets(
    records: Iterable[Any] | RecordCache,
    split_cfg: DataSplitConfig,
    icl_cfg: ICLConfig,
    eval_cfg: EvaluationConfig,
    models: Sequence[NIMConfig],
    out_dir: Path,
    embed: Embedder | None = None,
    *,
    gate: PromotionGateConfig | None = None,
    filters: SourceFilters | None = None,
) -> DatasetBuild:
    """Turn validated log records into the eval, train/val and per-model ICL files plus a manifest.

    ``records`` may be a :class:`~agent_flywheel.records.cache.RecordCache` (what the flow passes: the
    keys come from its key files and only the records written out are parsed), a sequence (records are
    re-read from it by index) or a one-shot iterator (records are spooled to a temporary file in
    ``out_dir``). All three give the same files for the same records. ``embed`` is required for
    ``semantic_similarity``. Raises :class:`InsufficientRecordsError` when fewer than
    ``min_total_records`` remain after filtering and dedupe, or fewer than a run needs to both train and
    decide (``DataSplitConfig.min_train_records``; with ``gate``, the evaluation set never shrinks below
    :func:`~agent_flywheel.evaluation.gate.minimum_eval_records`); its message lists what each filter removed
    (with ``filters`` and a record cache, what extraction skipped too) and the configuration line to change.
    Nothing is written then. Deterministic for a given ``random_seed``;
    with ``random_seed: null`` a seed is drawn and recorded in the manifest, so the run can still be
    reproduced.
    """
    if icl_cfg.example_selection == ExampleSelection.SEMANTIC and icl_cfg.max_examples > 0 and embed is None:
        raise ValueError("example_selection semantic_similarity needs an embed callable")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = split_cfg.random_seed if split_cfg.random_seed is not None else secrets.randbits(32)
    source: RecordSource
    if isinstance(records, RecordCache):
        scan, source = scan_cache(records)
    else:
        if isinstance(records, Sequence) and not isinstance(records, str | bytes):
            source = SequenceSource(records)
        else:
            source = SpoolSource(out_dir / f".spool-{os.getpid()}.jsonl")
        try:
            scan = scan_input(records, source)
        except BaseException:
            source.close()
            raise
    reads = records.read_summary() if isinstance(records, RecordCache) else None
    context = _Context(gate, filters, reads)
    try:
        return _build(scan, source, split_cfg, icl_cfg, eval_cfg, models, out_dir, embed, seed, context)
    finally:
        source.close()


@dataclass(frozen=True)
class _Context:
    """What the build knows besides the records: the gate it feeds and how the records were chosen."""

    gate: PromotionGateConfig | None
    filters: SourceFilters | None
    reads: ReadSummary | None


def _build(
    scan: UsableKeys,
    source: RecordSource,
    split_cfg: DataSplitConfig,
    icl_cfg: ICLConfig,
    eval_cfg: EvaluationConfig,
    models: Sequence[NIMConfig],
    out_dir: Path,
    embed: Embedder | None,
    seed: int,
    context: _Context,
) -> DatasetBuild:
    gate, filters, reads = context.gate, context.filters, context.reads
    who = ""
    if filters is not None and filters.workload_id is not None:
        who = f" for workload {filters.workload_id!r} / client {filters.client_id!r}"
    names = scan.label_names
    digests, timestamps, flags, labels = scan.digests, scan.timestamps, scan.flags, scan.labels
    example_chars = scan.example_chars
    if not split_cfg.parse_function_arguments:  # arguments are checked only when the config parses them
        flags = flags & ~np.uint8(BAD_ARGUMENTS)

    removed: Counter[str] = Counter()
    if scan.invalid:
        removed[RemovalReason.INVALID_FORMAT] = scan.invalid
    workload = WorkloadType.TOOL_CALLING if bool(np.any(flags & HAS_CALL)) else WorkloadType.GENERIC
    keep = np.ones(flags.shape[0], dtype=bool)
    if workload == WorkloadType.TOOL_CALLING:
        for mask, reason in (
            ((flags & MALFORMED_CALL) != 0, RemovalReason.MALFORMED_TOOL_CALL),
            ((flags & BAD_ARGUMENTS) != 0, RemovalReason.UNPARSEABLE_ARGUMENTS),
            ((flags & HAS_CALL) == 0 if not eval_cfg.include_no_call_records else None, RemovalReason.NO_TOOL_CALL),
        ):
            if mask is None:
                continue
            hit = keep & mask
            if hit.any():
                removed[reason] += int(hit.sum())
                keep &= ~hit
    filtered = np.flatnonzero(keep).astype(np.int64)
    unique = _dedupe(digests, timestamps, filtered)
    if filtered.size - unique.size:
        removed[RemovalReason.DUPLICATE] = int(filtered.size - unique.size)

    if unique.size < split_cfg.min_total_records:
        headline = f"{unique.size} usable records{who}, fewer than min_total_records={split_cfg.min_total_records}"
        raise InsufficientRecordsError(shortfall_report(headline, removed, scan.read, reads, filters))
    selected = unique
    if unique.size > split_cfg.limit:
        picked = stage_rng(seed, 1).choice(unique.size, size=split_cfg.limit, replace=False)
        selected = unique[np.sort(picked)]
        removed[RemovalReason.OVER_LIMIT] = int(unique.size - selected.size)

    min_eval, gate_text = 1, ""
    if gate is not None:
        min_eval = minimum_eval_records(gate.margin, gate.confidence)
        gate_text = f"promotion_gate margin {gate.margin:g} at confidence {gate.confidence:g}"
    try:
        plan = plan_split(
            int(selected.size),
            split_cfg.eval_size,
            split_cfg.val_ratio,
            split_cfg.min_train_records,
            min_eval,
            gate_text,
        )
    except ShortOfRecords as short:
        headline = str(short).replace(" usable records,", f" usable records{who},", 1)
        raise InsufficientRecordsError(shortfall_report(headline, removed, scan.read, reads, filters)) from None
    warnings = list(plan.warnings)
    n_eval, n_val = plan.n_eval, plan.n_val
    rest_i, eval_i = stratified_split(labels[selected], n_eval, stage_seed(seed, 2))
    rest = selected[rest_i]
    train_i, val_i = stratified_split(labels[rest], n_val, stage_seed(seed, 3))
    eval_pos, val_pos, train_pos = selected[eval_i], rest[val_i], rest[train_i]

    split_code = np.full(flags.shape[0], -1, dtype=np.int8)
    split_code[eval_pos], split_code[val_pos], split_code[train_pos] = 0, 1, 2
    tool_calling = workload == WorkloadType.TOOL_CALLING

    base_dir, train_dir = out_dir / "base", out_dir / "train"
    eval_writer = HashingWriter(base_dir / "eval_data.jsonl")
    train_writer = HashingWriter(train_dir / "training" / "train_data.jsonl")
    val_writer = HashingWriter(train_dir / "validation" / "val_data.jsonl")
    eval_records: dict[int, Mapping[str, Any]] = {}
    for position, record in source.fetch(np.flatnonzero(split_code >= 0)):
        code = split_code[position]
        if code == 0:
            eval_records[position] = record
            eval_writer.write(to_eval_record(record))
        elif code == 1:
            val_writer.write(to_training_example(record, tool_calling))
        else:
            train_writer.write(to_training_example(record, tool_calling))
    files = {
        "base/eval_data.jsonl": eval_writer.close(),
        "train/training/train_data.jsonl": train_writer.close(),
        "train/validation/val_data.jsonl": val_writer.close(),
    }

    icl_sets, icl_manifest = build_icl(
        IclInputs(eval_records, train_pos, labels, names, example_chars, digests, tool_calling),
        source,
        icl_cfg,
        models,
        out_dir,
        embed,
        seed,
    )
    icl_paths: dict[str, Path] = {}
    for icl_set in icl_sets:
        files[icl_set.path.relative_to(out_dir).as_posix()] = file_sha256(icl_set.path)
        for model in icl_set.models:
            icl_paths[model] = icl_set.path

    per_tool = {
        "eval": _per_tool(labels[eval_pos], names),
        "validation": _per_tool(labels[val_pos], names),
        "train": _per_tool(labels[train_pos], names),
    }
    counts = {
        "read": scan.read,
        "usable": int(unique.size),
        "selected": int(selected.size),
        "eval": int(eval_pos.size),
        "validation": int(val_pos.size),
        "train": int(train_pos.size),
    }
    summary: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "workload_type": workload.value,
        "seed": seed,
        "seed_configured": split_cfg.random_seed,
        "hash": "conversation_hash (sha256 of the canonical conversation; the dedupe key)",
        "config": {
            "data_split": split_cfg.model_dump(mode="json"),
            "icl": icl_cfg.model_dump(mode="json"),
            "include_no_call_records": eval_cfg.include_no_call_records,
            "token_estimate": "ceil(chars / 4 * 1.2)",
        },
        "counts": counts,
        "removed": {str(k): v for k, v in sorted(removed.items())},
        "per_tool": per_tool,
        "icl": icl_manifest,
        "files": files,
        "warnings": warnings,
    }
    split_hashes = {
        "eval": HexHashes(digests[eval_pos]),
        "validation": HexHashes(digests[val_pos]),
        "train": HexHashes(digests[train_pos]),
    }
    manifest_path = out_dir / "manifest.json"
    with open(manifest_path, "w", encoding="utf-8") as handle:
        write_json(handle, {**summary, "record_hashes": split_hashes})
        handle.write("\n")
    return DatasetBuild(
        out_dir=out_dir,
        workload_type=workload,
        seed=seed,
        eval_path=eval_writer.path,
        train_path=train_writer.path,
        val_path=val_writer.path,
        icl_paths=icl_paths,
        manifest_path=manifest_path,
        manifest=summary,
        counts=counts,
        removed=dict(summary["removed"]),
        per_tool=per_tool,
        icl_sets=icl_sets,
        warnings=warnings,
    )
