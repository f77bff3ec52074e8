"""From validated log records to the NeMo dataset files: filter, dedupe, split, ICL examples, manifest.

The steps, in order, each counting what it removes (nothing is dropped silently):

1. **shape**: a record needs ``request.messages`` (a non-empty list) and ``response.choices[0].message``;
2. **workload type**: tool-calling when any record's answer calls a tool, generic otherwise;
3. **quality** (tool-calling only): answers with a malformed call or unparseable arguments go; answers
   that call no tool stay when ``EvaluationConfig.include_no_call_records`` (the blueprint drops them);
4. **dedupe** on :func:`agent_flywheel.conversation.conversation_hash`, keeping the newest record, before
   any split, so one conversation can never be in both train and eval;
5. ``min_total_records`` (an error that names the counts), then ``limit`` (a seeded sample);
6. a **stratified split** by label (first tool name, or ``no_tool``) for eval, then for train/val;
7. **ICL**: examples from the train split only, fitted to each model's own context budget
   (``min(context_length, max_context_length) - reserved_tokens - tokens(prompt)``); an example that does
   not fit is skipped and the next one tried; a record that cannot get ``min_examples`` even from the
   shortest examples is left out of that model's ICL set and counted (``context_too_small``);
8. files in the NeMo layout plus ``manifest.json`` (hashes per split, counts, seed, config, sha256s).

Memory: records are read once. Only compact numpy arrays (hash, timestamp, label, sizes) are kept per
record; records are fetched again by position for the output (from the caller's sequence, or from a
spool file when the input is a one-shot iterator), so a million records fit in a few hundred MB.

Token estimate: no tokenizer is available offline (tiktoken downloads its files), so tokens are
``ceil(characters / 4 × 1.2)``: four characters per token for English and JSON, plus the blueprint's 20 %
safety buffer. It overestimates, which errs on the side of a prompt that fits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
from array import array
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np

from agent_flywheel.config import DataSplitConfig, EvaluationConfig, ExampleSelection, ICLConfig, NIMConfig
from agent_flywheel.conversation import ICL_BEGIN, ICL_END, ICL_PREAMBLE, inject_examples, render_example
from agent_flywheel.jsonlines import IO_BUFFER_BYTES, dump_line, load_line
from agent_flywheel.record_cache import RecordCache
from agent_flywheel.record_keys import (
    BAD_ARGUMENTS,
    HAS_CALL,
    KEY_ROW,
    MALFORMED_CALL,
    KeyColumns,
    SegmentKeys,
    record_keys,
    request_messages,
    request_tools,
    response_message,
)
from agent_flywheel.records import LogRecord, to_document
from agent_flywheel.tool_arguments import call_with_string_arguments, is_mapping, with_string_arguments

MANIFEST_VERSION = 1
EMBED_BATCH_SIZE = 64
# Semantic selection embeds at most this many train records (a seeded, stratified sample), so a huge
# train split costs neither an hour of embedding calls nor gigabytes of vectors.
MAX_SEMANTIC_POOL = 20_000
SEMANTIC_HITS_PER_EXAMPLE = 5

Embedder = Callable[[list[str]], list[list[float]]]


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


# --------------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------------


def estimate_tokens(text: str | int) -> int:
    """Token estimate for a text (or a character count): ``ceil(chars / 4 × 1.2)``, see the module doc."""
    chars = text if isinstance(text, int) else len(text)
    return math.ceil(chars * 1.2 / 4) if chars > 0 else 0


def _as_mapping(record: Any) -> Mapping[str, Any]:
    """A plain mapping for a dict, a :class:`~agent_flywheel.records.LogRecord` (its indexed document:
    canonical timestamp and arguments, the producer's extra keys) or another pydantic model."""
    if isinstance(record, Mapping):
        return record
    if isinstance(record, LogRecord):
        return to_document(record)
    dump = getattr(record, "model_dump", None)
    if callable(dump):
        result = dump(mode="json", exclude_unset=True)
        if isinstance(result, Mapping):
            return result
    raise TypeError(f"expected a mapping or a pydantic model, got {type(record).__name__}")


def last_user_text(messages: Sequence[Any]) -> str:
    """The last user message's text (text parts joined for multimodal content): what semantic ICL embeds."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                parts = [p.get("text") for p in content if isinstance(p, Mapping)]
                return " ".join(p for p in parts if isinstance(p, str))
    return ""


def to_training_example(record: Mapping[str, Any], tool_calling: bool) -> dict[str, Any]:
    """A NeMo Customizer line: request messages plus the answer, ``tools`` for tool-calling workloads.

    Assistant ``content`` is ``""`` rather than null and tool-call ``arguments`` are JSON strings, as
    Customizer requires. Only ``role``, ``content`` and ``tool_calls`` of the answer are kept. Messages
    that need no change are shared with ``record``, not copied.
    """
    messages = [
        with_string_arguments(m, empty_content=m.get("role") == "assistant") if is_mapping(m) else m
        for m in request_messages(record) or []
    ]
    answer = response_message(record) or {}
    out_answer: dict[str, Any] = {"role": "assistant", "content": answer.get("content") or ""}
    calls = answer.get("tool_calls")
    if calls:
        out_answer["tool_calls"] = [call_with_string_arguments(c) for c in calls] if isinstance(calls, list) else calls
    line: dict[str, Any] = {"messages": [*messages, out_answer]}
    if tool_calling:
        line["tools"] = request_tools(record)
    return line


def to_eval_record(record: Mapping[str, Any], messages: Sequence[Any] | None = None) -> dict[str, Any]:
    """The full log record for ``eval_data.jsonl``, request tool-call arguments as JSON strings.

    ``messages`` replaces the request messages (the ICL set passes the messages with examples injected).
    """
    out = dict(record)
    request = dict(record.get("request") or {})
    source = messages if messages is not None else request.get("messages") or []
    request["messages"] = [with_string_arguments(m, empty_content=False) if is_mapping(m) else m for m in source]
    out["request"] = request
    return out


def _model_slug(model_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_name.replace("/", "--")).strip("-") or "model"


def _rng(seed: int, stage: int) -> np.random.Generator:
    """An independent generator per stage, so changing one stage never shifts another's draws."""
    return np.random.default_rng([seed % (1 << 64), stage])


# --------------------------------------------------------------------------------------------------
# Stratified split
# --------------------------------------------------------------------------------------------------


def allocate_stratified(counts: Sequence[int], k: int) -> list[int]:
    """How many of each class go to a ``k``-record split: largest-remainder allocation with guarantees.

    - proportional: ``floor(k × c / n)`` each, the remaining slots by largest fractional part (ties: bigger
      class, then class order);
    - when ``k`` is at least the number of classes with two or more records, each such class gets one;
    - a class with two or more records keeps one outside the split whenever the totals allow it;
    - singleton classes are placed like any other (no crash, unlike sklearn in blueprint bug 4).
    """
    n = sum(counts)
    k = max(0, min(k, n))
    if k == n:
        return list(counts)
    if k == 0:
        return [0] * len(counts)
    quotas = [k * c / n for c in counts]
    alloc = [math.floor(q) for q in quotas]
    eligible = [c >= 2 for c in counts]
    minimum = [0] * len(counts)
    if k >= sum(eligible):
        minimum = [1 if e else 0 for e in eligible]
    soft_cap = [c - 1 if c >= 2 else c for c in counts]
    alloc = [max(minimum[j], min(alloc[j], soft_cap[j])) for j in range(len(counts))]
    order = sorted(range(len(counts)), key=lambda j: (-(quotas[j] - alloc[j]), -counts[j], j))
    diff = k - sum(alloc)
    for caps in (soft_cap, list(counts)):
        while diff > 0:
            progressed = False
            for j in sorted(order, key=lambda j: (-(quotas[j] - alloc[j]), -counts[j], j)):
                if diff == 0:
                    break
                if alloc[j] < caps[j]:
                    alloc[j] += 1
                    diff -= 1
                    progressed = True
            if not progressed:
                break
    while diff < 0:
        over = [j for j in range(len(counts)) if alloc[j] > minimum[j]]
        j = max(over, key=lambda j: (alloc[j] - quotas[j], alloc[j], -j))
        alloc[j] -= 1
        diff += 1
    return alloc


def stratified_split(
    labels: Sequence[Hashable] | np.ndarray, test_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into ``(rest, test)`` with ``test_size`` test records, stratified by label.

    Per-class counts come from :func:`allocate_stratified`; members of each class are shuffled with a
    generator seeded by ``seed`` (classes in sorted order), so the split is a pure function of the labels,
    ``test_size`` and ``seed``. Both index arrays are sorted.
    """
    values = np.asarray(labels)
    n = int(values.shape[0])
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    classes, codes = np.unique(values, return_inverse=True)
    codes = codes.reshape(-1)
    counts = np.bincount(codes, minlength=len(classes))
    alloc = allocate_stratified([int(c) for c in counts], test_size)
    rng = np.random.default_rng(seed % (1 << 64))
    by_class = np.argsort(codes, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)))
    chosen = []
    for j in range(len(classes)):
        members = by_class[starts[j] : starts[j + 1]]
        if alloc[j]:
            chosen.append(rng.permutation(members)[: alloc[j]])
    test = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test.astype(np.int64)


def split_sizes(n: int, eval_size: int, val_ratio: float) -> tuple[int, int, int]:
    """``(eval, val, train)`` sizes: eval = ``min(eval_size, n)``; val = ``ceil(val_ratio × rest)``, leaving
    at least one train record when the rest has two or more."""
    n_eval = min(eval_size, n)
    rest = n - n_eval
    n_val = math.ceil(val_ratio * rest) if val_ratio > 0 else 0
    if rest >= 2:
        n_val = min(n_val, rest - 1)
    n_val = min(n_val, rest)
    return n_eval, n_val, rest - n_val


# --------------------------------------------------------------------------------------------------
# ICL selection
# --------------------------------------------------------------------------------------------------


def uniform_bins(total: int, bins: int) -> list[int]:
    """``total`` spread over ``bins`` as evenly as possible, the first bins taking the remainder."""
    if bins <= 0:
        return []
    base, extra = divmod(total, bins)
    return [base + (1 if i < extra else 0) for i in range(bins)]


def round_robin(groups: Sequence[Sequence[int]], quotas: Sequence[int]) -> list[int]:
    """A preference order: groups in turn up to their quotas, then the rest of every group in turn.

    The tail lets a record whose quota examples do not fit use other groups' examples instead of getting
    fewer, the fix for the blueprint stopping at the first example that does not fit.
    """
    order: list[int] = []
    taken = [0] * len(groups)
    for limit in (list(quotas), [len(g) for g in groups]):
        progressed = True
        while progressed:
            progressed = False
            for g, members in enumerate(groups):
                if taken[g] < min(limit[g], len(members)):
                    order.append(members[taken[g]])
                    taken[g] += 1
                    progressed = True
    return order


def fit_examples(preferred: Iterable[int], costs: Mapping[int, int], budget: int, max_examples: int) -> list[int]:
    """Examples in preference order that fit the token budget; one that does not fit is skipped, not an end."""
    chosen: list[int] = []
    remaining = budget
    for candidate in preferred:
        if len(chosen) >= max_examples:
            break
        if candidate in chosen:
            continue
        cost = costs[candidate]
        if cost <= remaining:
            chosen.append(candidate)
            remaining -= cost
    return chosen


def relevance_coverage_order(
    hits: Sequence[int], labels: Mapping[int, str], max_examples: int, relevance_ratio: float
) -> list[int]:
    """Semantic preference order: the top ``int(max_examples × relevance_ratio)`` hits, then the best hit
    of each tool not yet covered, then the remaining hits by similarity."""
    relevance = hits[: int(max_examples * relevance_ratio)]
    order = list(relevance)
    covered = {labels[h] for h in relevance}
    for hit in hits:
        if hit not in order and labels[hit] not in covered:
            order.append(hit)
            covered.add(labels[hit])
    order.extend(h for h in hits if h not in order)
    return order


def _block_overhead_tokens() -> int:
    """Tokens the ICL block costs beyond its examples: begin, preamble, end and separators."""
    return estimate_tokens(len(ICL_BEGIN) + len(ICL_PREAMBLE) + len(ICL_END) + 8)


def _example_cost(text: str) -> int:
    # +4: the "\n\n" separator and a second digit in "Example 10:".
    return estimate_tokens(len(text) + 4)


# --------------------------------------------------------------------------------------------------
# Record sources: fetch records again by position without holding them all
# --------------------------------------------------------------------------------------------------


class _Source:
    """Where pass 1 left the usable records, fetched again by position (0, 1, ... in input order)."""

    def add(self, input_index: int, record: Mapping[str, Any]) -> None:
        """Pass 1 found the record at ``input_index`` usable: it gets the next position."""

    def seal(self) -> None:
        """Pass 1 is over."""

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        """``(position, record)`` for the given positions, in ascending order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a spool file)."""


class _SequenceSource(_Source):
    """The caller's sequence, read again by index."""

    def __init__(self, sequence: Sequence[Any]) -> None:
        self._sequence = sequence
        self._indexes: array[int] = array("q")

    def add(self, input_index: int, record: Mapping[str, Any]) -> None:
        self._indexes.append(input_index)

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        for p in sorted(int(p) for p in positions):
            yield p, _as_mapping(self._sequence[self._indexes[p]])


class _SpoolSource(_Source):
    """A one-shot iterator's usable records, written to a spool file in pass 1 and read back by offset."""

    def __init__(self, spool: Path) -> None:
        self._spool = spool
        self._offsets: array[int] = array("q")
        self._writer: IO[bytes] | None = open(spool, "wb")  # noqa: SIM115 (closed by seal or close)
        self._offset = 0

    def add(self, input_index: int, record: Mapping[str, Any]) -> None:
        assert self._writer is not None
        line = dump_line(record)
        self._writer.write(line)
        self._offsets.append(self._offset)
        self._offset += len(line)

    def seal(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        with open(self._spool, "rb") as handle:
            for p in sorted(int(p) for p in positions):
                handle.seek(self._offsets[p])
                yield p, load_line(handle.readline())

    def close(self) -> None:
        self.seal()
        self._spool.unlink(missing_ok=True)


class _CacheSource(_Source):
    """Record-cache segments, read again by (segment, byte offset) as the key files give them."""

    def __init__(self, segments: Sequence[Path], segment_ids: np.ndarray, offsets: np.ndarray) -> None:
        self._segments = segments
        self._segment_ids = segment_ids
        self._offsets = offsets

    def fetch(self, positions: Iterable[int]) -> Iterator[tuple[int, Mapping[str, Any]]]:
        ordered = np.unique(np.fromiter((int(p) for p in positions), dtype=np.int64))
        bounds = np.searchsorted(self._segment_ids[ordered], np.arange(len(self._segments) + 1))
        for segment_id, path in enumerate(self._segments):
            wanted = ordered[bounds[segment_id] : bounds[segment_id + 1]]
            if wanted.size:
                yield from self._fetch_segment(path, wanted)

    def _fetch_segment(self, path: Path, wanted: np.ndarray) -> Iterator[tuple[int, Mapping[str, Any]]]:
        offsets = self._offsets[wanted].tolist()
        with open(path, "rb", buffering=IO_BUFFER_BYTES) as handle:
            if len(offsets) * _SEEK_SHARE < path.stat().st_size // _TYPICAL_LINE_BYTES:  # a few: seek to each
                for position, offset in zip(wanted.tolist(), offsets, strict=True):
                    handle.seek(offset)
                    yield position, load_line(handle.readline())
                return
            # most of the segment: read it in order, which is far cheaper than a seek per line
            targets = iter(zip(wanted.tolist(), offsets, strict=True))
            position, target = next(targets)
            offset = 0
            for line in handle:
                if offset == target:
                    yield position, load_line(line)
                    following = next(targets, None)
                    if following is None:
                        return
                    position, target = following
                offset += len(line)


# A fetch of fewer than one line in _SEEK_SHARE (estimated from the file size) seeks instead of reading on.
_SEEK_SHARE = 16
_TYPICAL_LINE_BYTES = 4096


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


class _HashingWriter:
    """A JSONL writer that computes the file's sha256 while writing."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = open(path, "wb", buffering=IO_BUFFER_BYTES)  # noqa: SIM115
        self._sha = hashlib.sha256()
        self.lines = 0

    def write(self, obj: Any) -> None:
        data = dump_line(obj)
        self._handle.write(data)
        self._sha.update(data)
        self.lines += 1

    def close(self) -> str:
        self._handle.close()
        return self._sha.hexdigest()


class _HexHashes:
    """A lazily serialised list of hex hashes, so a million of them never exist as Python strings at once."""

    def __init__(self, digests: np.ndarray) -> None:
        self.digests = digests

    def __len__(self) -> int:
        return int(self.digests.shape[0])

    def __iter__(self) -> Iterator[str]:
        for row in self.digests:
            yield row.tobytes().hex()


def _write_json(handle: IO[str], obj: Any, indent: int = 0) -> None:
    """``json.dump`` with indentation that streams :class:`_HexHashes` lists."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(obj, _HexHashes):
        handle.write("[")
        for i, text in enumerate(obj):
            handle.write(("," if i else "") + "\n" + inner + '"' + text + '"')
        handle.write(("\n" + pad if len(obj) else "") + "]")
    elif isinstance(obj, Mapping):
        handle.write("{")
        for i, (key, value) in enumerate(obj.items()):
            handle.write(("," if i else "") + "\n" + inner + json.dumps(str(key), ensure_ascii=False) + ": ")
            _write_json(handle, value, indent + 2)
        handle.write(("\n" + pad if obj else "") + "}")
    else:
        handle.write(json.dumps(obj, ensure_ascii=False, indent=None, default=str))


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


# --------------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------------


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


@dataclass
class _Pass1:
    """The keys of the usable records (position ``i`` is row ``i``), as numpy columns, plus counts."""

    digests: np.ndarray  # (n, 32) uint8
    timestamps: np.ndarray
    flags: np.ndarray
    labels: np.ndarray  # ids into label_names
    example_chars: np.ndarray
    label_names: list[str]  # sorted, so the split does not depend on which label the input showed first
    read: int
    invalid: int


def _usable_columns(parts: Sequence[SegmentKeys]) -> tuple[_Pass1, np.ndarray]:
    """The usable rows of some key tables as one :class:`_Pass1`, and the part each row came from."""
    names = sorted({name for part in parts for name in part.label_names})
    name_ids = {name: i for i, name in enumerate(names)}
    tables, labels, part_ids = [], [], []
    for part_id, part in enumerate(parts):
        usable = part.rows[part.rows["usable"] == 1]
        remap = np.array([name_ids[name] for name in part.label_names] or [0], dtype=np.int32)
        tables.append(usable)
        labels.append(remap[usable["label"]])
        part_ids.append(np.full(usable.shape[0], part_id, dtype=np.int32))
    table = np.concatenate(tables) if tables else np.zeros(0, dtype=KEY_ROW)
    read = sum(int(part.rows.shape[0]) for part in parts)
    columns = _Pass1(
        digests=np.ascontiguousarray(table["digest"]).reshape(-1, 32),
        timestamps=np.ascontiguousarray(table["timestamp"]),
        flags=np.ascontiguousarray(table["flags"]),
        labels=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int32),
        example_chars=np.ascontiguousarray(table["example_chars"]),
        label_names=names,
        read=read,
        invalid=read - int(table.shape[0]),
    )
    return columns, np.concatenate(part_ids) if part_ids else np.zeros(0, dtype=np.int32)


def _scan(records: Iterable[Any], source: _Source) -> _Pass1:
    """Pass 1 over records in hand: compute every record's keys; hand the usable ones to ``source``."""
    columns = KeyColumns()
    for input_index, raw in enumerate(records):
        try:
            record = _as_mapping(raw)
        except TypeError:
            columns.add(None)
            continue
        keys = record_keys(record)
        columns.add(keys)
        if keys is not None:
            source.add(input_index, record)
    source.seal()
    return _usable_columns([columns.finish()])[0]


def _scan_cache(cache: RecordCache) -> tuple[_Pass1, _Source]:
    """Pass 1 over the record cache: read each segment's key file (computing only what is missing)."""
    segments = cache.segments()
    parts = [cache.keys(segment) for segment in segments]
    columns, segment_ids = _usable_columns(parts)
    offsets = [part.rows["offset"][part.rows["usable"] == 1] for part in parts]
    return columns, _CacheSource(segments, segment_ids, np.concatenate(offsets) if offsets else np.zeros(0, np.int64))


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
) -> DatasetBuild:
    """Turn validated log records into the eval, train/val and per-model ICL files plus a manifest.

    ``records`` may be a :class:`~agent_flywheel.record_cache.RecordCache` (what the flow passes: the
    keys come from its key files and only the records written out are parsed), a sequence (records are
    re-read from it by index) or a one-shot iterator (records are spooled to a temporary file in
    ``out_dir``). All three give the same files for the same records. ``embed`` is required for
    ``semantic_similarity``. Raises :class:`InsufficientRecordsError` when fewer than
    ``min_total_records`` remain after filtering and dedupe. Deterministic for a given ``random_seed``;
    with ``random_seed: null`` a seed is drawn and recorded in the manifest, so the run can still be
    reproduced.
    """
    if icl_cfg.example_selection == ExampleSelection.SEMANTIC and icl_cfg.max_examples > 0 and embed is None:
        raise ValueError("example_selection semantic_similarity needs an embed callable")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = split_cfg.random_seed if split_cfg.random_seed is not None else secrets.randbits(32)
    source: _Source
    if isinstance(records, RecordCache):
        scan, source = _scan_cache(records)
    else:
        if isinstance(records, Sequence) and not isinstance(records, str | bytes):
            source = _SequenceSource(records)
        else:
            source = _SpoolSource(out_dir / f".spool-{os.getpid()}.jsonl")
        try:
            scan = _scan(records, source)
        except BaseException:
            source.close()
            raise
    try:
        return _build(scan, source, split_cfg, icl_cfg, eval_cfg, models, out_dir, embed, seed)
    finally:
        source.close()


def _build(
    scan: _Pass1,
    source: _Source,
    split_cfg: DataSplitConfig,
    icl_cfg: ICLConfig,
    eval_cfg: EvaluationConfig,
    models: Sequence[NIMConfig],
    out_dir: Path,
    embed: Embedder | None,
    seed: int,
) -> DatasetBuild:
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
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(removed.items())) or "none"
        raise InsufficientRecordsError(
            f"{unique.size} usable records, fewer than min_total_records={split_cfg.min_total_records} "
            f"(read {scan.read}; removed: {reasons})"
        )
    selected = unique
    if unique.size > split_cfg.limit:
        picked = _rng(seed, 1).choice(unique.size, size=split_cfg.limit, replace=False)
        selected = unique[np.sort(picked)]
        removed[RemovalReason.OVER_LIMIT] = int(unique.size - selected.size)

    warnings: list[str] = []
    n_eval, n_val, _ = split_sizes(int(selected.size), split_cfg.eval_size, split_cfg.val_ratio)
    if n_eval < split_cfg.eval_size:
        warnings.append(f"eval_size {split_cfg.eval_size} capped to the {selected.size} selected records")
    rest_i, eval_i = stratified_split(labels[selected], n_eval, _seed_for(seed, 2))
    rest = selected[rest_i]
    train_i, val_i = stratified_split(labels[rest], n_val, _seed_for(seed, 3))
    eval_pos, val_pos, train_pos = selected[eval_i], rest[val_i], rest[train_i]
    if train_pos.size == 0:
        warnings.append("no records left for training: customization and ICL have nothing to learn from")

    split_code = np.full(flags.shape[0], -1, dtype=np.int8)
    split_code[eval_pos], split_code[val_pos], split_code[train_pos] = 0, 1, 2
    tool_calling = workload == WorkloadType.TOOL_CALLING

    base_dir, train_dir = out_dir / "base", out_dir / "train"
    eval_writer = _HashingWriter(base_dir / "eval_data.jsonl")
    train_writer = _HashingWriter(train_dir / "training" / "train_data.jsonl")
    val_writer = _HashingWriter(train_dir / "validation" / "val_data.jsonl")
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

    icl_sets, icl_manifest = _build_icl(
        _IclInputs(eval_records, train_pos, labels, names, example_chars, digests, tool_calling),
        source,
        icl_cfg,
        models,
        out_dir,
        embed,
        seed,
    )
    icl_paths: dict[str, Path] = {}
    for icl_set in icl_sets:
        files[icl_set.path.relative_to(out_dir).as_posix()] = _file_sha256(icl_set.path)
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
        "eval": _HexHashes(digests[eval_pos]),
        "validation": _HexHashes(digests[val_pos]),
        "train": _HexHashes(digests[train_pos]),
    }
    manifest_path = out_dir / "manifest.json"
    with open(manifest_path, "w", encoding="utf-8") as handle:
        _write_json(handle, {**summary, "record_hashes": split_hashes})
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


def _seed_for(seed: int, stage: int) -> int:
    """A derived integer seed per stage (stable across numpy versions: from SeedSequence state)."""
    return int(np.random.SeedSequence([seed % (1 << 64), stage]).generate_state(1, dtype=np.uint64)[0])


@dataclass(frozen=True)
class _IclInputs:
    eval_records: Mapping[int, Mapping[str, Any]]
    train_pos: np.ndarray
    labels: np.ndarray
    names: Sequence[str]
    example_chars: np.ndarray
    digests: np.ndarray
    tool_calling: bool


def _build_icl(
    data: _IclInputs,
    source: _Source,
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
    costs = {p: _example_cost(t) for p, t in texts.items()}
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
        similar = _semantic_hits(data.eval_records, user_texts, label_of, data.tool_calling, icl_cfg, embed)

    contexts: dict[int, list[str]] = {}
    for model in llms:
        contexts.setdefault(min(model.context_length, icl_cfg.max_context_length), []).append(model.model_name)

    sets: list[IclSet] = []
    manifest: dict[str, Any] = {"enabled": True, "selection": icl_cfg.example_selection.value, "sets": {}}
    overhead = _block_overhead_tokens()
    for context, model_names in sorted(contexts.items()):
        dropped: Counter[str] = Counter()
        per_record: Counter[int] = Counter()
        chosen_hashes: dict[str, list[str]] = {}
        paths = [out_dir / "icl" / _model_slug(name) / "eval_data.jsonl" for name in model_names]
        writer = _HashingWriter(paths[0])
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
            _, sample = stratified_split(train_labels, MAX_SEMANTIC_POOL, _seed_for(seed, 4))
            chosen.update(int(p) for p in train_pos[sample])
    return sorted(chosen)


def _embed_all(texts: Sequence[str], embed: Embedder) -> np.ndarray:
    """Unit-normalised float32 embeddings, requested in batches."""
    rows: list[np.ndarray] = []
    for start in range(0, len(texts), EMBED_BATCH_SIZE):
        batch = list(texts[start : start + EMBED_BATCH_SIZE])
        vectors = np.asarray(embed(batch), dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise ValueError(f"embed returned shape {vectors.shape} for {len(batch)} texts")
        rows.append(vectors)
    matrix = np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _semantic_hits(
    eval_records: Mapping[int, Mapping[str, Any]],
    user_texts: Mapping[int, str],
    label_of: Mapping[int, str],
    tool_calling: bool,
    icl_cfg: ICLConfig,
    embed: Embedder,
) -> dict[int, list[int]]:
    """Per eval record, the train examples in semantic preference order (cosine similarity, then
    relevance/coverage for tool-calling labels)."""
    pool = sorted(user_texts)
    pool_matrix = _embed_all([user_texts[p] for p in pool], embed)
    eval_positions = list(eval_records)
    queries = _embed_all([last_user_text(request_messages(eval_records[p]) or []) for p in eval_positions], embed)
    k = min(len(pool), icl_cfg.max_examples * (SEMANTIC_HITS_PER_EXAMPLE if tool_calling else 1))
    result: dict[int, list[int]] = {}
    if not pool:
        return {p: [] for p in eval_positions}
    for row, position in enumerate(eval_positions):
        scores = pool_matrix @ queries[row]  # cosine: both sides are unit vectors
        top = np.argpartition(-scores, k - 1)[:k] if k < len(pool) else np.arange(len(pool))
        top = top[np.lexsort((top, -scores[top]))]
        hits = [pool[int(i)] for i in top]
        if tool_calling:
            hits = relevance_coverage_order(
                hits, label_of, icl_cfg.max_examples, icl_cfg.similarity_config.relevance_ratio
            )
        result[position] = hits
    return result
