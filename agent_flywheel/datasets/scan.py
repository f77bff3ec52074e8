"""Pass 1 of the build: the keys of every usable record as compact numpy columns.

Only these columns (hash, timestamp, label, flags, example size) are kept per record; records are
fetched again by position for the output, so a million records fit in a few hundred MB.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_flywheel.datasets.sources import CacheSource, RecordSource, as_mapping
from agent_flywheel.records.cache import RecordCache
from agent_flywheel.records.keys import KEY_ROW, KeyColumns, SegmentKeys, record_keys


@dataclass
class UsableKeys:
    """The keys of the usable records (position ``i`` is row ``i``), as numpy columns, plus counts."""

    digests: np.ndarray  # (n, 32) uint8
    timestamps: np.ndarray
    flags: np.ndarray
    labels: np.ndarray  # ids into label_names
    example_chars: np.ndarray
    label_names: list[str]  # sorted, so the split does not depend on which label the input showed first
    read: int
    invalid: int


def usable_columns(parts: Sequence[SegmentKeys]) -> tuple[UsableKeys, np.ndarray]:
    """The usable rows of some key tables as one :class:`UsableKeys`, and the part each row came from."""
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
    columns = UsableKeys(
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


def scan_input(records: Iterable[Any], source: RecordSource) -> UsableKeys:
    """Pass 1 over records in hand: compute every record's keys; hand the usable ones to ``source``."""
    columns = KeyColumns()
    for input_index, raw in enumerate(records):
        try:
            record = as_mapping(raw)
        except TypeError:
            columns.add(None)
            continue
        keys = record_keys(record)
        columns.add(keys)
        if keys is not None:
            source.add(input_index, record)
    source.seal()
    return usable_columns([columns.finish()])[0]


def scan_cache(cache: RecordCache) -> tuple[UsableKeys, RecordSource]:
    """Pass 1 over the record cache: read each segment's key file (computing only what is missing)."""
    segments = cache.segments()
    parts = [cache.keys(segment) for segment in segments]
    columns, segment_ids = usable_columns(parts)
    offsets = [part.rows["offset"][part.rows["usable"] == 1] for part in parts]
    return columns, CacheSource(segments, segment_ids, np.concatenate(offsets) if offsets else np.zeros(0, np.int64))
