"""Index mappings: which fields exist, of which type, and how a document's values are read and normalised.

Only the semantics that matter for the local stack are modelled: ``keyword`` is exact, ``text`` is tokenised,
``date`` is parsed to epoch millis, numbers and booleans are coerced as ES does, objects with
``enabled: false`` are kept in ``_source`` but not indexed, and unknown fields follow ``dynamic``
(``true`` adds them to the mapping, ``false``/``runtime`` ignores them, ``strict`` rejects the document).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from simulators.logserver.dates import parse_date, split_formats
from simulators.logserver.errors import EsError

KEYWORD, TEXT, DATE, LONG, DOUBLE, BOOLEAN, NONE = "keyword", "text", "date", "long", "double", "boolean", "none"
COLUMN_KINDS = (KEYWORD, DATE, LONG, DOUBLE, BOOLEAN)

_KINDS = {
    **dict.fromkeys(("keyword", "constant_keyword", "wildcard", "ip", "version"), KEYWORD),
    **dict.fromkeys(("text", "match_only_text", "search_as_you_type"), TEXT),
    **dict.fromkeys(("date", "date_nanos"), DATE),
    **dict.fromkeys(("long", "integer", "short", "byte", "unsigned_long"), LONG),
    **dict.fromkeys(("double", "float", "half_float", "scaled_float"), DOUBLE),
    "boolean": BOOLEAN,
    **dict.fromkeys(
        (
            "binary",
            "flattened",
            "geo_point",
            "geo_shape",
            "point",
            "shape",
            "dense_vector",
            "sparse_vector",
            "rank_feature",
            "rank_features",
            "semantic_text",
            "histogram",
            "integer_range",
            "long_range",
            "float_range",
            "double_range",
            "date_range",
            "ip_range",
            "completion",
            "token_count",
            "alias",
            "join",
            "percolator",
        ),
        NONE,
    ),
}
_OBJECT_TYPES = ("object", "nested")
_LONG_RANGE = (-(2**63), 2**63 - 1)
_DATE_DETECT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[\d:.,]+(Z|[+-]\d{2}(:?\d{2})?)?)?$")
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Field:
    """One searchable leaf field (a multi-field like ``msg.keyword`` reads its value from ``msg``)."""

    path: str
    type: str
    kind: str
    source_path: str
    formats: list[str] = field(default_factory=list)
    ignore_above: int | None = None
    ignore_malformed: bool = False


@dataclass
class ParsedDocument:
    """What indexing extracts from a document: normalised values per field and whether the mapping grew."""

    values: dict[str, list[Any]]
    mapping_changed: bool


def analyze(text: str) -> list[str]:
    """The standard analyzer, near enough: lower-cased word tokens."""
    return [token.lower() for token in _TOKEN_RE.findall(text)]


def normalize_dynamic(value: Any, inherited: str = "true") -> str:
    """``dynamic`` as one of ``true``, ``false``, ``strict``, ``runtime`` (JSON booleans or strings)."""
    if value is None:
        return inherited
    text = str(value).lower()
    if text not in ("true", "false", "strict", "runtime"):
        raise EsError(400, "mapper_parsing_exception", f"Could not convert [dynamic] to boolean or [strict]: [{value}]")
    return text


def _is_object(spec: dict[str, Any]) -> bool:
    return spec.get("type") in _OBJECT_TYPES or ("type" not in spec and "properties" in spec) or not spec


def validate_mappings(mappings: Any) -> dict[str, Any]:
    """A ``mappings`` body checked and copied; typed mappings (``{"_doc": {...}}``) are unwrapped."""
    if mappings is None:
        return {"properties": {}}
    if not isinstance(mappings, dict):
        raise EsError(400, "mapper_parsing_exception", "Failed to parse mapping: mappings must be an object")
    mappings = copy.deepcopy(mappings)
    if set(mappings) == {"_doc"} and isinstance(mappings["_doc"], dict):
        mappings = mappings["_doc"]
    normalize_dynamic(mappings.get("dynamic"))
    props = mappings.setdefault("properties", {})
    _validate_properties(props, "")
    return mappings


def _validate_properties(props: Any, prefix: str) -> None:
    if not isinstance(props, dict):
        raise EsError(400, "mapper_parsing_exception", f"Expected map for property [properties] on [{prefix}]")
    for name, spec in props.items():
        path = prefix + name
        if not isinstance(spec, dict):
            raise EsError(400, "mapper_parsing_exception", f"Expected map for property [fields] on field [{path}]")
        if _is_object(spec):
            normalize_dynamic(spec.get("dynamic"))
            _validate_properties(spec.get("properties", {}), path + ".")
            continue
        type_name = spec.get("type")
        if type_name not in _KINDS:
            raise EsError(
                400, "mapper_parsing_exception", f"No handler for type [{type_name}] declared on field [{path}]"
            )
        for sub_name, sub_spec in (spec.get("fields") or {}).items():
            if not isinstance(sub_spec, dict) or sub_spec.get("type") not in _KINDS:
                raise EsError(
                    400,
                    "mapper_parsing_exception",
                    f"No handler for type [{(sub_spec or {}).get('type')}] declared on field [{path}.{sub_name}]",
                )


def merge_mappings(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``PUT /{index}/_mapping``: new fields are added; a field's type cannot change."""
    merged = copy.deepcopy(current)
    for key, value in update.items():
        if key != "properties":
            merged[key] = value
    _merge_properties(merged.setdefault("properties", {}), update.get("properties", {}), "")
    return merged


def _merge_properties(target: dict[str, Any], update: dict[str, Any], prefix: str) -> None:
    for name, spec in update.items():
        existing = target.get(name)
        if existing is None:
            target[name] = copy.deepcopy(spec)
        elif _is_object(existing) and _is_object(spec):
            for key, value in spec.items():
                if key != "properties":
                    existing[key] = value
            _merge_properties(existing.setdefault("properties", {}), spec.get("properties", {}), prefix + name + ".")
        elif existing.get("type") != spec.get("type"):
            raise EsError(
                400,
                "illegal_argument_exception",
                f"mapper [{prefix}{name}] cannot be changed from type [{existing.get('type', 'object')}] "
                f"to [{spec.get('type', 'object')}]",
            )
        else:
            target[name] = {**existing, **copy.deepcopy(spec)}


class Mapping:
    """A read-only view of an index's mappings: leaf fields by full name, and object paths."""

    def __init__(self, mappings: dict[str, Any]) -> None:
        self.raw = mappings
        self.fields: dict[str, Field] = {}
        self.leaves: dict[str, tuple[Field, list[Field]]] = {}
        self.objects: set[str] = set()
        self._collect(mappings.get("properties", {}), "")

    def _collect(self, props: dict[str, Any], prefix: str) -> None:
        for name, spec in props.items():
            path = prefix + name
            if _is_object(spec):
                self.objects.add(path)
                if spec.get("enabled", True) is not False:
                    self._collect(spec.get("properties", {}), path + ".")
                continue
            fld = self.fields[path] = _make_field(path, path, spec)
            subfields = []
            for sub_name, sub_spec in (spec.get("fields") or {}).items():
                sub = self.fields[f"{path}.{sub_name}"] = _make_field(f"{path}.{sub_name}", path, sub_spec)
                subfields.append(sub)
            self.leaves[path] = (fld, subfields)

    def field(self, path: str) -> Field | None:
        """The leaf field of that name, or None when it is unmapped (ES then matches nothing)."""
        return self.fields.get(path)

    def leaf_fields_under(self, path: str) -> list[Field]:
        """Every leaf of an object path (``exists`` on an object is true when any leaf has a value)."""
        prefix = path + "."
        return [f for name, f in self.fields.items() if name.startswith(prefix)]


def _make_field(path: str, source_path: str, spec: dict[str, Any]) -> Field:
    type_name = str(spec.get("type"))
    kind = _KINDS.get(type_name, NONE)
    return Field(
        path=path,
        type=type_name,
        kind=kind,
        source_path=source_path,
        formats=split_formats(spec.get("format")) if kind == DATE else [],
        ignore_above=spec.get("ignore_above"),
        ignore_malformed=bool(spec.get("ignore_malformed", False)),
    )


def convert_value(fld: Field, value: Any) -> Any:
    """A JSON value normalised for a field's kind (str, int millis, int, float, 0/1); ValueError if it does not fit."""
    kind = fld.kind
    if kind in (KEYWORD, TEXT):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return value if isinstance(value, str) else repr(value)
        raise ValueError(f"expected a string but found [{type(value).__name__}]")
    if kind == DATE:
        return parse_date(value, fld.formats)
    if kind == LONG:
        if isinstance(value, bool):
            raise ValueError("Current token (VALUE_TRUE) not numeric, can not use numeric value accessors")
        number = int(float(value)) if isinstance(value, str | float) else int(value)
        if not _LONG_RANGE[0] <= number <= _LONG_RANGE[1]:
            raise ValueError(f"Value [{value}] is out of range for a long")
        return number
    if kind == DOUBLE:
        if isinstance(value, bool):
            raise ValueError("Current token (VALUE_TRUE) not numeric, can not use numeric value accessors")
        return float(value)
    if kind == BOOLEAN:
        if isinstance(value, bool):
            return int(value)
        if value in ("true", "false", ""):
            return 1 if value == "true" else 0
        raise ValueError(f"Failed to parse value [{value}] as only [true] or [false] are allowed.")
    return value


def source_values(source: Any, path: str) -> list[Any]:
    """Every scalar under a dotted path of a ``_source``, arrays flattened and dotted keys honoured."""
    out: list[Any] = []
    _collect_values(source, path.split("."), out)
    return out


def _collect_values(node: Any, parts: list[str], out: list[Any]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect_values(item, parts, out)
        return
    if not parts:
        if node is not None and not isinstance(node, dict):
            out.append(node)
        return
    if not isinstance(node, dict):
        return
    for i in range(1, len(parts) + 1):
        key = ".".join(parts[:i])
        if key in node:
            _collect_values(node[key], parts[i:], out)


def field_values(fld: Field, source: Any) -> list[Any]:
    """A field's normalised values in a document, skipping values that do not convert (as ``ignore_malformed``)."""
    values: list[Any] = []
    for raw in source_values(source, fld.source_path):
        try:
            value = convert_value(fld, raw)
        except (ValueError, TypeError, OverflowError):
            continue
        if fld.kind == KEYWORD and fld.ignore_above is not None and len(value) > fld.ignore_above:
            continue
        values.append(value)
    return values


def _infer(value: Any, date_detection: bool) -> dict[str, Any] | None:
    if isinstance(value, list):
        for item in value:
            if item is not None:
                return _infer(item, date_detection)
        return None
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, dict):
        return {"properties": {}}
    if isinstance(value, str):
        if date_detection and _DATE_DETECT_RE.match(value):
            try:
                parse_date(value, ["strict_date_optional_time"])
                return {"type": "date"}
            except ValueError:
                pass
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return None


def _preview(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:80] + "..."


class DocumentParser:
    """Walks one document against a mapping: extracts indexed values and grows the mapping when dynamic."""

    def __init__(self, mappings: dict[str, Any], doc_id: str | None, known: Mapping | None = None) -> None:
        self.mappings = mappings
        self.doc_id = doc_id
        self.known = known
        self.values: dict[str, list[Any]] = {}
        self.changed = False
        self._date_detection = mappings.get("date_detection", True) is not False

    def parse(self, source: Any) -> ParsedDocument:
        """Index a ``_source``; raises ES's ``document_parsing_exception`` family on bad values."""
        if not isinstance(source, dict):
            raise EsError(400, "document_parsing_exception", "failed to parse, document is empty")
        top_dynamic = normalize_dynamic(self.mappings.get("dynamic"))
        self._walk(source, self.mappings.setdefault("properties", {}), top_dynamic, "")
        return ParsedDocument(self.values, self.changed)

    def _error(self, path: str, type_name: str, value: Any, cause: str) -> EsError:
        return EsError(
            400,
            "document_parsing_exception",
            f"failed to parse field [{path}] of type [{type_name}] in document with id '{self.doc_id}'. "
            f"Preview of field's value: '{_preview(value)}'",
            caused_by={"type": "illegal_argument_exception", "reason": cause},
        )

    def _walk(self, obj: dict[str, Any], props: dict[str, Any], dynamic: str, prefix: str) -> None:
        for raw_key, raw_value in obj.items():
            key, value = raw_key, raw_value
            if "." in key and key.strip("."):
                head, _, rest = key.partition(".")
                key, value = head, {rest: raw_value}
            if not key:
                raise EsError(400, "document_parsing_exception", "field name cannot be an empty string")
            if value is None:
                continue
            path = prefix + key
            spec = props.get(key)
            if spec is None:
                if dynamic == "strict":
                    within = prefix[:-1] or "_doc"
                    raise EsError(
                        400,
                        "strict_dynamic_mapping_exception",
                        f"mapping set to strict, dynamic introduction of [{key}] within [{within}] is not allowed",
                    )
                if dynamic in ("false", "runtime"):
                    continue
                spec = _infer(value, self._date_detection)
                if spec is None:
                    continue
                props[key] = spec
                self.changed = True
            if _is_object(spec):
                self._walk_object(path, key, spec, value, dynamic)
            else:
                self._leaf(path, spec, value)

    def _walk_object(self, path: str, key: str, spec: dict[str, Any], value: Any, dynamic: str) -> None:
        if spec.get("enabled", True) is False:
            return
        child_dynamic = normalize_dynamic(spec.get("dynamic"), dynamic)
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if not isinstance(item, dict):
                raise EsError(
                    400,
                    "document_parsing_exception",
                    f"object mapping for [{path}] tried to parse field [{key}] as object, but found a concrete value",
                )
            self._walk(item, spec.setdefault("properties", {}), child_dynamic, path + ".")

    def _leaf(self, path: str, spec: dict[str, Any], value: Any) -> None:
        items = _flatten(value)
        cached = self.known.leaves.get(path) if self.known is not None else None
        if cached is not None and cached[0].type == spec.get("type"):
            fld, subfields = cached
        else:
            fld = _make_field(path, path, spec)
            subfields = [
                _make_field(f"{path}.{name}", path, sub_spec) for name, sub_spec in (spec.get("fields") or {}).items()
            ]
        for item in items:
            if isinstance(item, dict):
                raise self._error(path, fld.type, item, f"Can't get text on a START_OBJECT at {path}")
            self._add(fld, item, path)
            for sub in subfields:
                self._add(sub, item, path)

    def _add(self, fld: Field, item: Any, path: str) -> None:
        if fld.kind not in COLUMN_KINDS:
            if fld.kind == TEXT and not isinstance(item, str | int | float | bool):
                raise self._error(path, fld.type, item, "expected a string")
            return
        try:
            value = convert_value(fld, item)
        except (ValueError, TypeError, OverflowError) as exc:
            if fld.ignore_malformed:
                return
            raise self._error(path, fld.type, item, str(exc)) from None
        if fld.kind == KEYWORD and fld.ignore_above is not None and len(value) > fld.ignore_above:
            return
        self.values.setdefault(fld.path, []).append(value)


def _flatten(value: Any) -> list[Any]:
    if not isinstance(value, list):
        return [value]
    out: list[Any] = []
    for item in value:
        if item is not None:
            out.extend(_flatten(item))
    return out
