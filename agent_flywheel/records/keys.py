"""What the dataset build needs to know of each record, computed once, and the key file that keeps it.

Every flywheel run rebuilds its datasets from all the records the workload has collected, so a key that
is computed on every build (the conversation hash above all, several JSON parses' worth of work per
record) costs each run in proportion to everything ever collected. The record cache therefore computes
the keys of a record when the record is written (extraction has it in hand and hashes it anyway for its
own dedupe) and keeps them beside the segment in a small binary key file; the build reads those columns
and parses only the records it writes out. A segment without a valid key file is scanned instead, with
the same function, so both paths give the same datasets.

The keys of one record: whether its shape is usable, the conversation hash (dedupe), the timestamp
(newest wins), the label (stratification), flags of the answer's tool calls (quality filters) and the
length of its in-context example (shortest examples first).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from agent_flywheel.jsonlines import load_line
from agent_flywheel.records.conversation import conversation_digest, parse_arguments, render_example

NO_TOOL = "no_tool"
# Bumped whenever a key's definition changes (the hash, the flags, the example format): key files of an
# older version are ignored and their segments scanned again.
KEYS_VERSION = 1
KEY_FILE_SUFFIX = ".keys"

HAS_CALL = 1
MALFORMED_CALL = 2
BAD_ARGUMENTS = 4

KEY_ROW = np.dtype(
    [
        ("offset", "<i8"),
        ("digest", "u1", (32,)),
        ("timestamp", "<f8"),
        ("example_chars", "<i8"),
        ("label", "<i4"),
        ("flags", "u1"),
        ("usable", "u1"),
    ]
)


# --------------------------------------------------------------------------------------------------
# Fields of a log record
# --------------------------------------------------------------------------------------------------


def response_message(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """``response.choices[0].message``, or None when the record has no answer in that shape."""
    response = record.get("response")
    choices = response.get("choices") if isinstance(response, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    return message if isinstance(message, Mapping) else None


def request_messages(record: Mapping[str, Any]) -> list[Any] | None:
    """``request.messages`` when it is a non-empty list, else None."""
    request = record.get("request")
    messages = request.get("messages") if isinstance(request, Mapping) else None
    return messages if isinstance(messages, list) and messages else None


def request_tools(record: Mapping[str, Any]) -> list[Any]:
    """The tools offered in the request (an empty list when none)."""
    request = record.get("request")
    tools = request.get("tools") if isinstance(request, Mapping) else None
    return tools if isinstance(tools, list) else []


def record_label(record: Mapping[str, Any]) -> str:
    """The stratification label: the answer's first tool name, or ``no_tool``."""
    message = response_message(record)
    calls = message.get("tool_calls") if message else None
    if isinstance(calls, list) and calls and isinstance(calls[0], Mapping):
        function = calls[0].get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    return NO_TOOL


def record_timestamp(record: Mapping[str, Any]) -> float:
    """Epoch seconds from a number, a numeric string, an ISO 8601 string or a datetime; -inf if unknown."""
    value = record.get("timestamp")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool):
        return -math.inf
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return -math.inf
    return -math.inf


def call_flags(message: Mapping[str, Any]) -> int:
    """``HAS_CALL``, ``MALFORMED_CALL`` (no name, or not a function call) and ``BAD_ARGUMENTS`` (a
    non-empty arguments string that is not JSON) of an answer, or-ed together."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return 0
    flags = HAS_CALL
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if (
            not isinstance(function, Mapping)
            or not isinstance(function.get("name"), str)
            or call.get("type", "function") != "function"
        ):
            flags |= MALFORMED_CALL
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments.strip():
            parsed = parse_arguments(arguments)
            if isinstance(parsed, str) and parsed is arguments:
                flags |= BAD_ARGUMENTS
    return flags


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordKeys:
    """The keys of one usable record."""

    digest: bytes
    timestamp: float
    flags: int
    label: str
    example_chars: int


def record_keys(record: Any, digest: bytes | None = None) -> RecordKeys | None:
    """The keys of a record, or None when its shape is unusable (no request messages, no answer, or
    content the canonical form cannot take): the build counts those as ``invalid_format``.

    ``digest``: the record's conversation hash (as bytes) when the caller computed it already, as
    extraction does for its dedupe (:func:`~agent_flywheel.records.documents.record_digest` of the validated record
    equals that of its document); it is then not computed again."""
    if not isinstance(record, Mapping):
        return None
    messages = request_messages(record)
    answer = response_message(record)
    if messages is None or answer is None:
        return None
    try:
        if digest is None:
            digest = conversation_digest(messages, request_tools(record))
        example = render_example(1, [m for m in messages if isinstance(m, Mapping)], answer)
    except (TypeError, ValueError, AttributeError):
        return None
    return RecordKeys(digest, record_timestamp(record), call_flags(answer), record_label(record), len(example))


@dataclass
class KeyColumns:
    """The keys of a run of records as compact columns, one row per record (usable or not).

    ``offsets`` are byte offsets of the records' lines in their segment (0 where there is no file).
    ``labels`` index ``label_names``.
    """

    offsets: array[int] = field(default_factory=lambda: array("q"))
    digests: bytearray = field(default_factory=bytearray)
    timestamps: array[float] = field(default_factory=lambda: array("d"))
    example_chars: array[int] = field(default_factory=lambda: array("q"))
    labels: array[int] = field(default_factory=lambda: array("i"))
    flags: bytearray = field(default_factory=bytearray)
    usable: bytearray = field(default_factory=bytearray)
    label_names: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.usable)

    def add(self, keys: RecordKeys | None, offset: int = 0) -> None:
        """Append one record's keys (None: an unusable record, kept as a row so rows match lines)."""
        self.offsets.append(offset)
        if keys is None:
            self.digests += bytes(32)
            self.timestamps.append(-math.inf)
            self.example_chars.append(0)
            self.labels.append(0)
            self.flags.append(0)
            self.usable.append(0)
            return
        self.digests += keys.digest
        self.timestamps.append(keys.timestamp)
        self.example_chars.append(keys.example_chars)
        self.labels.append(self.label_names.setdefault(keys.label, len(self.label_names)))
        self.flags.append(keys.flags)
        self.usable.append(1)

    def finish(self) -> SegmentKeys:
        """The columns as one structured array (the key file's body) with the label names in id order."""
        n = len(self)
        table = np.zeros(n, dtype=KEY_ROW)
        if n:
            table["offset"] = np.frombuffer(self.offsets, dtype=np.int64)
            table["digest"] = np.frombuffer(bytes(self.digests), dtype=np.uint8).reshape(n, 32)
            table["timestamp"] = np.frombuffer(self.timestamps, dtype=np.float64)
            table["example_chars"] = np.frombuffer(self.example_chars, dtype=np.int64)
            table["label"] = np.frombuffer(self.labels, dtype=np.int32)
            table["flags"] = np.frombuffer(bytes(self.flags), dtype=np.uint8)
            table["usable"] = np.frombuffer(bytes(self.usable), dtype=np.uint8)
        return SegmentKeys(table, sorted(self.label_names, key=self.label_names.__getitem__))


@dataclass(frozen=True)
class SegmentKeys:
    """The keys of every record of one segment: a structured array (see ``KEY_ROW``) and the label names."""

    rows: np.ndarray
    label_names: list[str]


def key_file(segment: Path) -> Path:
    """Where a segment's keys are kept: beside it, same name, ``.keys`` suffix."""
    return segment.with_suffix(KEY_FILE_SUFFIX)


def write_key_file(segment: Path, keys: SegmentKeys) -> None:
    """Save the keys of a complete segment: a JSON header line (version, rows, the segment's size, the
    label names), then the rows. Written to a temporary name and renamed, so a reader never sees half."""
    header = {
        "version": KEYS_VERSION,
        "rows": len(keys.rows),
        "segment_bytes": segment.stat().st_size,
        "labels": keys.label_names,
    }
    target = key_file(segment)
    partial = target.with_suffix(".keys.partial")
    with open(partial, "wb") as handle:
        handle.write(orjson.dumps(header) + b"\n")
        handle.write(keys.rows.tobytes())
    partial.replace(target)


def _valid_header(segment: Path) -> tuple[dict[str, Any], int] | None:
    """The header of a segment's key file and where its rows start, if the file describes the segment as
    it is now (this version, the segment's current size, as many rows as the header says)."""
    path = key_file(segment)
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
        header = orjson.loads(first)
        size, key_size = segment.stat().st_size, path.stat().st_size
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or header.get("version") != KEYS_VERSION or header.get("segment_bytes") != size:
        return None
    rows, labels = header.get("rows"), header.get("labels")
    if not isinstance(rows, int) or not isinstance(labels, list) or key_size != len(first) + rows * KEY_ROW.itemsize:
        return None
    return header, len(first)


def read_key_file(segment: Path) -> SegmentKeys | None:
    """The saved keys of a segment, or None when there are none or they do not describe the segment as it
    is now (another version, another size, a short file): the caller scans the segment instead."""
    valid = _valid_header(segment)
    if valid is None:
        return None
    header, start = valid
    try:
        with open(key_file(segment), "rb") as handle:
            handle.seek(start)
            body = handle.read()
    except OSError:
        return None
    if len(body) != header["rows"] * KEY_ROW.itemsize:  # changed since the header was read
        return None
    return SegmentKeys(np.frombuffer(body, dtype=KEY_ROW), [str(label) for label in header["labels"]])


def key_file_rows(segment: Path) -> int | None:
    """How many records a segment holds, from its key file's header alone (None if the file is not valid)."""
    valid = _valid_header(segment)
    return None if valid is None else int(valid[0]["rows"])


def scan_lines(lines: Iterable[tuple[int, bytes]]) -> SegmentKeys:
    """Keys of ``(offset, line)`` pairs computed from the lines themselves: a segment with no valid key
    file. A line that is not JSON is an unusable row, not an error."""
    columns = KeyColumns()
    for offset, line in lines:
        try:
            record = load_line(line)
        except (ValueError, RecursionError):
            record = None
        columns.add(record_keys(record), offset)
    return columns.finish()


def iter_lines(handle: IO[bytes]) -> Iterable[tuple[int, bytes]]:
    """``(offset, line)`` for each non-blank line of a binary file, in order."""
    offset = 0
    for line in handle:
        if line.strip():
            yield offset, line
        offset += len(line)
