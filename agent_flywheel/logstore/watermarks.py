"""How far each workload's logs have been read, and where that is kept between flywheel runs.

A :class:`Watermark` is the newest record read, kept as the index stores it (its ``position``, the timestamp's
sort value, in the index shape's unit, plus the same as an ISO time for people), where the next read starts
(``start``: the position minus the late-arrival window) and the ids of the records already read from ``start``
on. The next run asks for ``timestamp >= start`` and skips those ids, so a record that shares a timestamp with
records already read, or that reached the index late with a timestamp up to the late-arrival window older than
the newest one read (a producer that batches, a clock a little behind, a refresh not yet done), is read once,
and none is read twice. A record that arrives later still is not seen by incremental runs;
``full_rebuild`` reads everything again.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Protocol

from agent_flywheel.config import ExtractionConfig
from agent_flywheel.logstore.errors import LogStoreError
from agent_flywheel.logstore.shape import IndexShape, TimeUnit
from agent_flywheel.records.timestamps import format_timestamp, parse_timestamp
from agent_flywheel.state import StateError, StateStore, state_name


@dataclasses.dataclass(frozen=True)
class Watermark:
    """How far a workload's logs have been read (see the module).

    ``timestamp`` is the newest record read, as a time; ``position`` the same as the index stores it, in
    ``unit``; ``start`` the position the next read starts at (inclusive); ``ids`` the records already read
    from ``start`` on. A watermark without a position (saved by an earlier version) starts at ``timestamp``.
    """

    timestamp: datetime
    ids: frozenset[str] = frozenset()
    position: int | None = None
    unit: TimeUnit | None = None
    start: int | None = None

    @classmethod
    def at(
        cls, unit: TimeUnit, position: int, ids: frozenset[str] = frozenset(), start: int | None = None
    ) -> Watermark:
        """A watermark at a stored position of an index whose timestamps count ``unit``."""
        return cls(unit.time_at(position), ids, position, unit, position if start is None else start)

    @property
    def start_time(self) -> datetime:
        """Where the next read starts, as a time."""
        if self.position is None or self.unit is None or self.start is None:
            return self.timestamp
        return self.unit.time_at(self.start)

    def resume(self, shape: IndexShape) -> int:
        """The position the next read of an index of ``shape`` starts at.

        A watermark saved for another unit (the index was recreated with another mapping) or by an earlier
        version (no position: its ``timestamp`` was a true time even where the index stored 1970 dates)
        starts at the same time, converted.
        """
        if self.position is not None and self.unit is shape.unit and self.start is not None:
            return self.start
        return shape.position(self.start_time)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for a watermark store: the positions, and the times for people."""
        data: dict[str, Any] = {"timestamp": format_timestamp(self.timestamp), "ids": sorted(self.ids)}
        if self.position is not None and self.unit is not None:
            start = self.position if self.start is None else self.start
            data.update(position=self.position, unit=str(self.unit), start=start)
            data["start_timestamp"] = format_timestamp(self.unit.time_at(start))
        return data

    @classmethod
    def from_json(cls, data: Any) -> Watermark:
        """Read :meth:`to_json` back (and the earlier form without positions); raises ``ValueError`` on anything else."""
        if not isinstance(data, dict) or not isinstance(data.get("ids", []), list):
            raise ValueError(f"not a watermark: {data!r:.200}")
        ids = frozenset(str(i) for i in data.get("ids", []))
        timestamp = parse_timestamp(data.get("timestamp"))
        if data.get("position") is None:
            return cls(timestamp, ids)
        position, start = data.get("position"), data.get("start", data.get("position"))
        if isinstance(position, bool) or not isinstance(position, int) or not isinstance(start, int):
            raise ValueError(f"watermark position and start must be integers: {data!r:.200}")
        try:
            unit = TimeUnit(str(data.get("unit")))
        except ValueError:
            raise ValueError(f"watermark unit must be 's' or 'ms', got {data.get('unit')!r}") from None
        return cls(timestamp, ids, position, unit, start)


def read_bounds(
    shape: IndexShape, since: datetime | Watermark | None, until: datetime | None
) -> tuple[int | None, int | None]:
    """The stored positions a read or a count of an index of ``shape`` runs between: from where a watermark
    resumes, or from the time ``since`` (inclusive), to ``until``; None where the window is open."""
    if isinstance(since, Watermark):
        lower: int | None = since.resume(shape)
    else:
        lower = shape.position(since) if since is not None else None
    upper = shape.position(until) if until is not None else None
    return lower, upper


class WatermarkStore(Protocol):
    """Where the last read position of each (workload, client) is kept between flywheel runs."""

    def get(self, workload_id: str, client_id: str) -> Watermark | None:
        """The saved watermark, or None before the first successful run."""
        ...

    def set(self, workload_id: str, client_id: str, watermark: Watermark) -> None:
        """Save the watermark (after the run that read up to it has succeeded)."""
        ...


class MemoryWatermarkStore:
    """A watermark store in a dict: for tests and one-off runs."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], Watermark] = {}

    def get(self, workload_id: str, client_id: str) -> Watermark | None:
        """The saved watermark, or None."""
        return self._marks.get((workload_id, client_id))

    def set(self, workload_id: str, client_id: str, watermark: Watermark) -> None:
        """Save the watermark."""
        self._marks[(workload_id, client_id)] = watermark


class StateWatermarkStore:
    """Watermarks as state documents, one per (workload, client), named ``<prefix>-watermark-<workload>--<client>``.

    In production the :class:`~agent_flywheel.state.StateStore` is Prefect's (Variables, large documents in the
    result storage), so a run on any worker continues where the last successful run stopped, on whichever
    worker that was; for development, files (:class:`~agent_flywheel.state.FileStateStore`). A document that
    cannot be read raises rather than reading as "no watermark", which would silently re-read everything.
    """

    KIND = "watermark"

    def __init__(self, state: StateStore) -> None:
        self.state = state

    @staticmethod
    def name(workload_id: str, client_id: str) -> str:
        """The state document of one (workload, client)."""
        return state_name(StateWatermarkStore.KIND, workload_id, client_id)

    def get(self, workload_id: str, client_id: str) -> Watermark | None:
        """The saved watermark, or None when this workload and client have none yet."""
        name = self.name(workload_id, client_id)
        try:
            entry = self.state.get(name)
        except StateError as exc:
            raise LogStoreError(f"watermark of {workload_id}/{client_id}: {exc}") from None
        if entry is None:
            return None
        try:
            return Watermark.from_json(entry)
        except ValueError as exc:
            raise LogStoreError(f"watermark of {workload_id}/{client_id} ({name}): {exc}") from None

    def set(self, workload_id: str, client_id: str, watermark: Watermark) -> None:
        """Save the watermark (the workload and client are kept in the document, for people reading it)."""
        entry = {
            **watermark.to_json(),
            "workload_id": workload_id,
            "client_id": client_id,
            "updated_at": format_timestamp(datetime.now(UTC)),
        }
        self.state.set(self.name(workload_id, client_id), entry)


def extraction_window(
    config: ExtractionConfig, store: WatermarkStore | None, workload_id: str, client_id: str
) -> tuple[datetime | Watermark | None, datetime | None]:
    """``(since, until)`` for :func:`extract` from the config and the saved watermark.

    An explicit ``config.since`` wins; otherwise ``full_rebuild`` reads from the start; otherwise the
    saved watermark (None on the first run) continues where the last successful run stopped.
    """
    until = parse_timestamp(config.until) if config.until else None
    if config.since:
        return parse_timestamp(config.since), until
    if config.full_rebuild or store is None:
        return None, until
    return store.get(workload_id, client_id), until
