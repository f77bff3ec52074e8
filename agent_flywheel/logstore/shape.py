"""What a log index looks like, and how to query it as it is: the one place that knows producers' index shapes.

The flywheel reads indices it did not create. Three shapes are common, and each needs different queries:

- **ours** (``flywheel logs import``, :data:`~agent_flywheel.logstore.index.LOG_INDEX_MAPPING`): keyword ids, a
  ``date`` timestamp that reads epoch seconds and ISO 8601;
- **the blueprint's** (its ``es_client`` creates the index): keyword ids, a ``date`` timestamp with the default
  format, which reads the epoch *seconds* its producers write as *milliseconds* (dates in January 1970);
- **Elasticsearch's guess** (NeMo Agent Toolkit's exporter writes into an index nobody created): ``text`` ids
  with a ``.keyword`` sub-field, and a ``long`` timestamp holding epoch seconds.

:func:`inspect_index` reads the mapping (``GET index/_mapping``, which also answers for an alias or a pattern)
and, where the mapping cannot say what a number means, the data (how many timestamps lie below 1e11, that is
before 1973 read as milliseconds or before the year 5138 read as seconds). The :class:`IndexShape` it returns
builds every query the log store sends: term filters on keyword fields, aggregations on keyword fields, the
timestamp's range bounds in the form the field stores, and the sort. A shape the flywheel cannot read
correctly raises :class:`IndexShapeError` with one line naming the field, what was found and the fix.

Timestamps are handled as **positions**: the integer a field stores and sorts on (its sort value), in the
shape's :class:`TimeUnit`. Watermarks keep positions, so a second run continues exactly where the first stopped
whatever the shape.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from agent_flywheel.logstore.errors import LogStoreError

if TYPE_CHECKING:
    from agent_flywheel.logstore.client import LogStoreClient

WORKLOAD_FIELD, CLIENT_FIELD, TIMESTAMP_FIELD = "workload_id", "client_id", "timestamp"

#: Stored timestamps below this are epoch seconds; at or above it, epoch milliseconds. As milliseconds it is
#: 1973-03-03, as seconds the year 5138, so no real timestamp is ambiguous.
SECONDS_BELOW = 100_000_000_000

#: Where the fix of every refusal is written out (a ready ``PUT index`` body).
FIX_DOC = "docs/migrating-from-the-blueprint.md#your-index"

_KEYWORD_TYPES = frozenset({"keyword", "constant_keyword", "wildcard"})
_TEXT_TYPES = frozenset({"text", "match_only_text"})
_INTEGER_TYPES = frozenset({"long", "integer", "unsigned_long"})
_DEFAULT_DATE_FORMAT = "strict_date_optional_time||epoch_millis"
_ISO_RANGE_FORMAT = "strict_date_optional_time"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds


class TimeUnit(StrEnum):
    """What one unit of a stored timestamp counts since the epoch."""

    SECONDS = "s"
    MILLIS = "ms"

    @property
    def per_second(self) -> int:
        """How many units make one second."""
        return 1 if self is TimeUnit.SECONDS else 1000

    def position(self, when: datetime) -> int:
        """``when`` counted in this unit since the epoch, floored (a naive datetime is UTC)."""
        utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        delta = utc - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return micros // (1_000_000 // self.per_second)

    def time_at(self, position: int) -> datetime:
        """The time ``position`` units after the epoch."""
        return _EPOCH + timedelta(microseconds=position * (1_000_000 // self.per_second))

    def holds_time(self, position: int) -> bool:
        """Whether ``position`` is a time from 1970 to the year 9999 (others are no timestamp the flywheel reads)."""
        return 0 <= position <= _LAST_SECOND * self.per_second


class IndexShapeError(LogStoreError):
    """The index maps a record field so that the flywheel cannot read it correctly (the message says how to fix it)."""


class IndexMissing(LogStoreError):
    """The log index (or every index a pattern names) does not exist."""


def fix_hint(index: str) -> str:
    """The fix every refusal ends with: the right mapping before any producer writes, then the records copied over."""
    return (
        f"create the index with the flywheel's mapping before any producer writes to it (`flywheel logs create-index "
        f"--index <new index>`, or `PUT <new index>` with the body in {FIX_DOC}), copy the records over with "
        f'`POST _reindex {{"source": {{"index": "{index}"}}, "dest": {{"index": "<new index>"}}}}` and point the '
        "LogStore block at the new index"
    )


@dataclasses.dataclass(frozen=True)
class IndexShape:
    """How one log index maps the record fields, and the queries that read it correctly.

    ``workload_field``/``client_field`` are the keyword fields to filter and aggregate on (``workload_id`` or
    ``workload_id.keyword``); None when no record has the field yet (nothing can match). ``timestamp_type`` is
    the mapped type (``date`` or ``long``...), None when unmapped. ``unit`` is what a stored timestamp counts;
    ``numeric_range`` says whether range bounds are sent as numbers (a ``long`` field, or a ``date`` field
    holding epoch seconds read as milliseconds) instead of ISO 8601. ``millis_numbers`` says whether a number
    from :data:`SECONDS_BELOW` up in a record's ``_source`` timestamp is epoch milliseconds (Elasticsearch read
    it so: a ``date`` field that reads numbers as milliseconds, or a ``long``), not seconds (our mapping). ``notes`` say what was found and handled (for the run log);
    ``warnings`` are the notes about data stored wrongly that the user should fix.
    """

    index: str
    workload_field: str | None = WORKLOAD_FIELD
    client_field: str | None = CLIENT_FIELD
    timestamp_type: str | None = "date"
    unit: TimeUnit = TimeUnit.MILLIS
    numeric_range: bool = False
    millis_numbers: bool = False
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @classmethod
    def own(cls, index: str) -> IndexShape:
        """The shape of an index created with :data:`~agent_flywheel.logstore.index.LOG_INDEX_MAPPING`."""
        return cls(index)

    @property
    def readable(self) -> bool:
        """Whether records can match at all (False until a producer wrote a record with every field)."""
        return None not in (self.workload_field, self.client_field, self.timestamp_type)

    def describe(self) -> str:
        """One line for the run log: the fields the queries use and what the timestamp holds."""
        if not self.readable:
            missing = [
                name
                for name, found in (
                    (WORKLOAD_FIELD, self.workload_field),
                    (CLIENT_FIELD, self.client_field),
                    (TIMESTAMP_FIELD, self.timestamp_type),
                )
                if found is None
            ]
            return f"log index {self.index!r}: no record has {', '.join(missing)} yet (unmapped), so none is read"
        if self.timestamp_type != "date":
            holds = f" holding epoch {'seconds' if self.unit is TimeUnit.SECONDS else 'milliseconds'}"
        elif self.unit is TimeUnit.SECONDS:
            holds = " holding epoch seconds (which Elasticsearch reads as milliseconds)"
        else:
            holds = ""
        return (
            f"log index {self.index!r}: filtering on {self.workload_field} and {self.client_field}, "
            f"timestamp {self.timestamp_type}{holds}"
        )

    # ------------------------------------------------------------------------------------- positions

    def position(self, when: datetime) -> int:
        """``when`` as the field stores it, floored to the shape's unit (the precision Elasticsearch compares)."""
        return self.unit.position(when)

    def time_at(self, position: int) -> datetime:
        """The time a stored position stands for."""
        return self.unit.time_at(position)

    def span(self, duration: timedelta) -> int:
        """A duration in positions (rounded up, so a window never comes out shorter)."""
        return math.ceil(duration.total_seconds() * self.unit.per_second)

    # ------------------------------------------------------------------------------------- queries

    def _bound(self, position: int) -> int | str:
        if self.numeric_range:
            return position
        return self.time_at(position).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def range_clause(
        self,
        lower: int | None = None,
        upper: int | None = None,
        *,
        upper_inclusive: bool = False,
    ) -> dict[str, Any] | None:
        """``lower <= timestamp < upper`` (``<=`` with ``upper_inclusive``) in positions; None without bounds."""
        bounds: dict[str, Any] = {}
        if lower is not None:
            bounds["gte"] = self._bound(lower)
            if upper is None and self.unit is TimeUnit.SECONDS:  # milliseconds beside the seconds sort after them
                upper, upper_inclusive = SECONDS_BELOW, False
        if upper is not None:
            bounds["lte" if upper_inclusive else "lt"] = self._bound(upper)
        if not bounds:
            return None
        if self.timestamp_type == "date":  # numbers on a date field: the stored millisecond values themselves
            bounds["format"] = "epoch_millis" if self.numeric_range else _ISO_RANGE_FORMAT
        return {"range": {TIMESTAMP_FIELD: bounds}}

    def window_query(
        self,
        workload_id: str,
        client_id: str,
        lower: int | None = None,
        upper: int | None = None,
        *,
        upper_inclusive: bool = False,
    ) -> dict[str, Any]:
        """One workload's and client's records with ``lower <= timestamp < upper`` (positions; either optional)."""
        filters: list[dict[str, Any]] = [
            {"term": {self.workload_field: workload_id}},
            {"term": {self.client_field: client_id}},
        ]
        clause = self.range_clause(lower, upper, upper_inclusive=upper_inclusive)
        if clause is not None:
            filters.append(clause)
        return {"bool": {"filter": filters}}

    def sort(self, order: str, tiebreaker: str = "_shard_doc") -> list[dict[str, Any]]:
        """Timestamp order with a tiebreaker for point-in-time paging (``_shard_doc``, or ``_id`` where the store
        has none: :meth:`~agent_flywheel.logstore.client.LogStoreClient.tiebreaker`); sort values are positions."""
        return [{TIMESTAMP_FIELD: {"order": order}}, {tiebreaker: order}]

    # ------------------------------------------------------------------------------------- record values

    def record_timestamp(self, value: Any) -> Any:
        """A ``_source`` timestamp in a form record validation reads right: numbers in milliseconds become ISO 8601.

        Validation reads numbers as epoch seconds (the blueprint's convention). In an index whose numbers are
        milliseconds (a ``long`` holding them, or a ``date`` field that reads them correctly) those from
        :data:`SECONDS_BELOW` up are converted; smaller ones are epoch seconds whatever the index made of them.
        """
        if not self.millis_numbers or isinstance(value, bool):
            return value
        original = value
        if isinstance(value, str):
            try:
                value = float(value) if value.strip() else value
            except ValueError:
                return original
        if isinstance(value, int | float) and math.isfinite(value) and value >= SECONDS_BELOW:
            try:
                moment = _EPOCH + timedelta(milliseconds=value)
            except OverflowError:
                return original
            return moment.isoformat().replace("+00:00", "Z")
        return original

    def document_timestamp(self, when: datetime) -> int | str:
        """What a writer puts in ``timestamp`` so that the index holds one form: the form its records have."""
        if self.timestamp_type in _INTEGER_TYPES or self.numeric_range:
            return self.position(when)
        utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        return utc.isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------------
# Reading the shape
# --------------------------------------------------------------------------------------------------


def _properties(mappings: Any) -> dict[str, Any]:
    if not isinstance(mappings, dict):
        return {}
    if "properties" not in mappings and len(mappings) == 1:  # a typed mapping ({"_doc": {...}}) of older clusters
        only = next(iter(mappings.values()))
        if isinstance(only, dict) and "properties" in only:
            mappings = only
    properties = mappings.get("properties")
    return properties if isinstance(properties, dict) else {}


def _record_fields(mappings: Any) -> tuple[Any, Any, Any]:
    properties = _properties(mappings)
    return tuple(properties.get(name) for name in (WORKLOAD_FIELD, CLIENT_FIELD, TIMESTAMP_FIELD))  # type: ignore[return-value]


def _type_of(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "unknown"
    return str(spec.get("type") or "object")


def _id_field(index: str, name: str, spec: Any) -> tuple[str | None, str | None]:
    """The field to filter and aggregate ``name`` on, and a note when it is not ``name`` itself."""
    if spec is None:
        return None, None
    kind = _type_of(spec)
    if kind in _KEYWORD_TYPES:
        return name, None
    if kind in _TEXT_TYPES:
        for sub_name, sub_spec in (spec.get("fields") or {}).items():
            if _type_of(sub_spec) in _KEYWORD_TYPES:
                return f"{name}.{sub_name}", f"{name} is {kind}, so filtering and counting on {name}.{sub_name}"
        raise IndexShapeError(
            f"log index {index!r}: {name} is mapped as {kind} without a keyword sub-field, so records cannot be "
            f"selected by exact {name} (a term query on {kind} matches single words) nor counted per {name}; "
            f"fix: {fix_hint(index)}"
        )
    raise IndexShapeError(f"log index {index!r}: {name} is mapped as {kind}, not keyword; fix: {fix_hint(index)}")


def _count_timestamps(client: LogStoreClient, index: str, bounds: dict[str, Any]) -> int:
    return client.count(index, {"range": {TIMESTAMP_FIELD: bounds}})


def _probe_units(client: LogStoreClient, index: str, *, date: bool) -> tuple[int, int]:
    """How many stored timestamps look like epoch seconds (below :data:`SECONDS_BELOW`) and like milliseconds."""
    extra = {"format": "epoch_millis"} if date else {}
    seconds = _count_timestamps(client, index, {"gt": 0, "lt": SECONDS_BELOW, **extra})
    millis = _count_timestamps(client, index, {"gte": SECONDS_BELOW, **extra})
    return seconds, millis


def _minority(index: str, kind: str, unit: TimeUnit, seconds: int, millis: int) -> tuple[str, ...]:
    """The warning for a timestamp field holding both forms (the larger one decides how it is read)."""
    if not (seconds and millis):
        return ()
    if unit is TimeUnit.SECONDS:
        few = f"{millis} records with real dates (ISO 8601 or epoch milliseconds) among {seconds} in epoch seconds"
    elif kind == "date":
        few = f"{seconds} records in epoch seconds, which Elasticsearch stored as January 1970 dates, among {millis} real dates"
    else:
        few = f"{seconds} records in epoch seconds among {millis} in epoch milliseconds"
    return (
        f"timestamp ({kind}) holds {few}: they sort apart from the others, so a first run or a full rebuild reads "
        f"them but incremental runs and the traffic watch do not; write one form from every producer (epoch "
        f"seconds or ISO 8601), or {fix_hint(index)}",
    )


def _first_numeric_format(spec: dict[str, Any]) -> str | None:
    for fmt in str(spec.get("format") or _DEFAULT_DATE_FORMAT).split("||"):
        if fmt.strip() in ("epoch_millis", "epoch_second"):
            return fmt.strip()
    return None


def _timestamp_shape(client: LogStoreClient, index: str, spec: Any) -> dict[str, Any]:
    """The timestamp part of an :class:`IndexShape`: type, unit, range form, notes."""
    if spec is None:
        return {"timestamp_type": None}
    kind = _type_of(spec)
    if kind == "date":
        numbers = _first_numeric_format(spec)
        if numbers != "epoch_millis":  # numbers are seconds (our mapping), or not accepted at all: dates are real
            return {"timestamp_type": kind}
        seconds, millis = _probe_units(client, index, date=True)
        if seconds > millis:
            return {
                "timestamp_type": kind,
                "unit": TimeUnit.SECONDS,
                "numeric_range": True,
                "millis_numbers": True,
                "warnings": (
                    f"timestamp is a date field holding epoch seconds, which Elasticsearch reads as milliseconds "
                    f"({seconds} records dated January 1970: the blueprint's mapping); the flywheel compares them "
                    f"as seconds, so incremental runs and the traffic watch work; Kibana and date queries still see "
                    f"1970: to store real dates, {fix_hint(index)}",
                    *_minority(index, kind, TimeUnit.SECONDS, seconds, millis),
                ),
            }
        return {
            "timestamp_type": kind,
            "millis_numbers": True,
            "warnings": _minority(index, kind, TimeUnit.MILLIS, seconds, millis),
        }
    if kind in _INTEGER_TYPES:
        seconds, millis = _probe_units(client, index, date=False)
        unit = TimeUnit.MILLIS if millis > seconds else TimeUnit.SECONDS
        holds = "epoch milliseconds" if unit is TimeUnit.MILLIS else "epoch seconds"
        return {
            "timestamp_type": kind,
            "unit": unit,
            "numeric_range": True,
            "millis_numbers": True,
            "notes": (f"timestamp is a {kind} holding {holds} (Elasticsearch's dynamic mapping); compared as numbers",),
            "warnings": _minority(index, kind, unit, seconds, millis),
        }
    if kind == "date_nanos":
        raise IndexShapeError(
            f"log index {index!r}: timestamp is mapped as date_nanos, which the flywheel does not read; "
            f"fix: {fix_hint(index)}"
        )
    found = {
        "float": "float (Elasticsearch's guess for a number with a fraction: it keeps about 7 digits, so epoch "
        "seconds lose up to two minutes)",
        "text": "text (Elasticsearch's guess for a string it did not take for a date)",
    }.get(kind, kind)
    raise IndexShapeError(
        f"log index {index!r}: timestamp is mapped as {found}, not date or long; fix: {fix_hint(index)}"
    )


def inspect_index(client: LogStoreClient, index: str) -> IndexShape:
    """Read the log index's mapping (and, where needed, its data) into the :class:`IndexShape` that queries it.

    Called on first contact by extraction, the traffic watch and the writer. An alias or pattern whose indices
    map the record fields differently is refused (one query cannot read both). Raises :class:`IndexMissing`
    when no index exists, :class:`IndexShapeError` (one line: field, what was found, the fix) when the shape
    cannot be read correctly.
    """
    response = client.get_mapping(index)  # raises IndexMissing
    mappings: Mapping[str, Any] = {str(name): (body or {}).get("mappings") for name, body in response.items()}
    if not mappings:
        raise IndexMissing(f"log index {index!r} does not exist (the pattern matches no index)")
    by_fields: dict[str, list[str]] = {}
    for name, body in sorted(mappings.items()):
        by_fields.setdefault(repr(_record_fields(body)), []).append(name)
    if len(by_fields) > 1:
        groups = "; ".join(
            f"{', '.join(names)}: {_describe_fields(_record_fields(mappings[names[0]]))}"
            for names in by_fields.values()
        )
        raise IndexShapeError(
            f"log index {index!r}: its indices map the record fields differently ({groups}), so no one query reads "
            f"them all; fix: point the LogStore block at indices of one mapping, or {fix_hint(index)}"
        )
    workload_spec, client_spec, timestamp_spec = _record_fields(next(iter(mappings.values())))
    workload_field, workload_note = _id_field(index, WORKLOAD_FIELD, workload_spec)
    client_field, client_note = _id_field(index, CLIENT_FIELD, client_spec)
    timestamp = _timestamp_shape(client, index, timestamp_spec)
    notes = [note for note in (workload_note, client_note) if note]
    notes += list(timestamp.pop("notes", ()))
    return IndexShape(
        index=index, workload_field=workload_field, client_field=client_field, notes=tuple(notes), **timestamp
    )


def _describe_fields(fields: tuple[Any, Any, Any]) -> str:
    names = (WORKLOAD_FIELD, CLIENT_FIELD, TIMESTAMP_FIELD)
    return ", ".join(
        f"{name} {_type_of(spec) if spec is not None else 'unmapped'}" for name, spec in zip(names, fields, strict=True)
    )
