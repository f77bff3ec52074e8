"""The ICL eval sets: one per distinct context budget among the models, each record with the examples that fit."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent_flywheel.config import ExampleSelection, ICLConfig, NIMConfig
from agent_flywheel.datasets.formats import to_eval_record
from agent_flywheel.datasets.icl_selection import (
    block_overhead_tokens,
    estimate_tokens,
    example_cost,
    fit_examples,
    round_robin,
    uniform_bins,
)
from agent_flywheel.datasets.output import HashingWriter
from agent_flywheel.datasets.semantic import MAX_SEMANTIC_POOL, Embedder, last_user_text, semantic_hits
from agent_flywheel.datasets.sources import RecordSource
from agent_flywheel.datasets.split import stage_seed, stratified_split
from agent_flywheel.records.conversation import inject_examples, render_example
from agent_flywheel.records.keys import request_messages, request_tools, response_message


@dataclass(frozen=True)
class IclSet:
    """The ICL eval set of one model: its context budget, how many records it holds, how many were
    dropped and why (``context_too_small``), and how many examples the records got."""

    models: list[str]
    context_length: int
    path: Path
    records: int
    dropped: dict[str, int]
    examples_per_record: dict[int, int]


@dataclass(frozen=True)
class IclInputs:
    """What the ICL sets are built from: the eval records in hand and the build's columns of keys."""

    eval_records: Mapping[int, Mapping[str, Any]]
    train_pos: np.ndarray
    labels: np.ndarray
    names: Sequence[str]
    example_chars: np.ndarray
    digests: np.ndarray
    tool_calling: bool


def build_icl(
    data: IclInputs,
    source: RecordSource,
    icl_cfg: ICLConfig,
    models: Sequence[NIMConfig],
    out_dir: Path,
    embed: Embedder | None,
    seed: int,
) -> tuple[list[IclSet], dict[str, Any]]:
    """One ICL eval set per distinct context budget among the models, written once per model.

    Budget per record: ``min(model context_length, max_context_length) - reserved_tokens - tokens(prompt)
    - tokens(block header)``. ``min_examples``: a record first gets its preferred examples; if fewer than
    ``min_examples`` fit, it falls back to the shortest train examples overall; if even those do not fit,
    it is left out of this ICL set and counted under ``dropped.context_too_small`` (its base eval still
    covers it, and the gate pairs samples by key, so comparisons stay like for like).
    """
    llms = [m for m in models if m.model_type == "llm"]
    if icl_cfg.max_examples == 0 or not llms:
        return [], {"enabled": False, "reason": "max_examples is 0" if llms else "no llm models"}
    if data.train_pos.size == 0:
        return [], {"enabled": False, "reason": "empty train split"}

    train_labels = data.labels[data.train_pos]
    pool = _example_pool(data.train_pos, train_labels, data.example_chars[data.train_pos], icl_cfg, seed)
    texts: dict[int, str] = {}
    user_texts: dict[int, str] = {}
    for position, record in source.fetch(pool):
        messages = [m for m in request_messages(record) or [] if isinstance(m, Mapping)]
        texts[position] = render_example(1, messages, response_message(record) or {})
        user_texts[position] = last_user_text(messages)
    costs = {p: example_cost(t) for p, t in texts.items()}
    label_of = {p: data.names[int(data.labels[p])] for p in texts}
    shortest = sorted(texts, key=lambda p: (costs[p], p))
    frequency = np.bincount(train_labels, minlength=len(data.names))

    uniform_order: list[int] = []
    similar: dict[int, list[int]] = {}
    if icl_cfg.example_selection == ExampleSelection.UNIFORM:
        groups = _groups_by_label(shortest, label_of, {n: int(frequency[i]) for i, n in enumerate(data.names)})
        uniform_order = round_robin(groups, uniform_bins(icl_cfg.max_examples, len(groups)))
    else:
        assert embed is not None
        similar = semantic_hits(data.eval_records, user_texts, label_of, data.tool_calling, icl_cfg, embed)

    contexts: dict[int, list[str]] = {}
    for model in llms:
        contexts.setdefault(min(model.context_length, icl_cfg.max_context_length), []).append(model.model_name)

    sets: list[IclSet] = []
    manifest: dict[str, Any] = {"enabled": True, "selection": icl_cfg.example_selection.value, "sets": {}}
    overhead = block_overhead_tokens()
    for context, model_names in sorted(contexts.items()):
        dropped: Counter[str] = Counter()
        per_record: Counter[int] = Counter()
        chosen_hashes: dict[str, list[str]] = {}
        paths = [out_dir / "icl" / _model_slug(name) / "eval_data.jsonl" for name in model_names]
        writer = HashingWriter(paths[0])
        for position, record in data.eval_records.items():
            messages = [m for m in request_messages(record) or [] if isinstance(m, Mapping)]
            prompt = json.dumps({"messages": messages, "tools": request_tools(record)}, ensure_ascii=False, default=str)
            budget = context - icl_cfg.reserved_tokens - estimate_tokens(prompt) - overhead
            preferred = similar[position] if similar else uniform_order
            chosen = fit_examples(preferred, costs, budget, icl_cfg.max_examples)
            if len(chosen) < icl_cfg.min_examples:
                chosen = fit_examples(shortest, costs, budget, icl_cfg.max_examples)
            if len(chosen) < icl_cfg.min_examples:
                dropped["context_too_small"] += 1
                continue
            per_record[len(chosen)] += 1
            rendered = [_renumber(texts[p], i + 1) for i, p in enumerate(chosen)]
            writer.write(to_eval_record(record, inject_examples(messages, rendered)))
            chosen_hashes[_hex(data.digests[position])] = [_hex(data.digests[p]) for p in chosen]
        writer.close()
        for extra in paths[1:]:
            extra.parent.mkdir(parents=True, exist_ok=True)
            extra.write_bytes(paths[0].read_bytes())
        examples_per_record = dict(sorted(per_record.items()))
        for name, path in zip(model_names, paths, strict=True):
            sets.append(IclSet([name], context, path, writer.lines, dict(dropped), examples_per_record))
        manifest["sets"][str(context)] = {
            "models": model_names,
            "context_length": context,
            "budget_tokens": context - icl_cfg.reserved_tokens,
            "files": {
                name: path.relative_to(out_dir).as_posix() for name, path in zip(model_names, paths, strict=True)
            },
            "records": writer.lines,
            "dropped": dict(dropped),
            "examples_per_record": {str(k): v for k, v in examples_per_record.items()},
            "examples": chosen_hashes,
        }
    return sets, manifest


def _model_slug(model_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_name.replace("/", "--")).strip("-") or "model"


def _hex(digest: np.ndarray) -> str:
    return digest.tobytes().hex()


def _renumber(text: str, index: int) -> str:
    return re.sub(r"^Example \d+:", f"Example {index}:", text, count=1)


def _groups_by_label(
    shortest: Sequence[int], label_of: Mapping[int, str], frequency: Mapping[str, int]
) -> list[list[int]]:
    """Candidates per label, shortest first; the most frequent labels in train first (they get the
    remainder of ``uniform_bins`` when there are more labels than examples), then by name."""
    groups: dict[str, list[int]] = {}
    for p in shortest:
        groups.setdefault(label_of[p], []).append(p)
    return [groups[k] for k in sorted(groups, key=lambda k: (-frequency.get(k, 0), k))]


def _example_pool(
    train_pos: np.ndarray, train_labels: np.ndarray, train_chars: np.ndarray, icl_cfg: ICLConfig, seed: int
) -> list[int]:
    """Train positions worth rendering: per label the ``max_examples`` shortest (all uniform can use) plus,
    for semantic selection, a seeded stratified sample of up to :data:`MAX_SEMANTIC_POOL` records."""
    chosen: set[int] = set()
    order = np.lexsort((train_pos, train_chars, train_labels))
    sorted_labels = train_labels[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_labels[1:] != sorted_labels[:-1])))
    for start in starts:
        group = order[start : start + icl_cfg.max_examples]
        group = group[train_labels[group] == sorted_labels[start]]
        chosen.update(int(p) for p in train_pos[group])
    if icl_cfg.example_selection == ExampleSelection.SEMANTIC:
        if train_pos.size <= MAX_SEMANTIC_POOL:
            chosen.update(int(p) for p in train_pos)
        else:
            _, sample = stratified_split(train_labels, MAX_SEMANTIC_POOL, stage_seed(seed, 4))
            chosen.update(int(p) for p in train_pos[sample])
    return sorted(chosen)
