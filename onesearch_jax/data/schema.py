"""Typed records of the KuaiSearch layout and the errors raised when input breaks it.

The five record types follow the public KuaiSearch release field for field and in the same order
(items, users, recall sessions, per-impression rank rows, graded relevance pairs), so that a file
read and written back is byte-identical. Parsing is driven by the dataclass annotations; every
failure raises :class:`RecordError` naming the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

SPLITS: tuple[str, ...] = ("train", "valid", "test")
RELEVANCE_TIERS: tuple[int, ...] = (0, 1, 2, 3)
# The 18 attribute types of OneSearch's query and item understanding (the paper's attribute
# taxonomy): the vocabulary of attribute lexicons, item attributes and keyword types.
ATTRIBUTE_TYPES: tuple[str, ...] = (
    "entity", "modifier", "brand", "material", "style", "function", "location", "audience",
    "color", "scene", "specifications", "price", "model", "anchor", "series", "marketing",
    "season", "pattern",
)  # fmt: skip


class RecordError(ValueError):
    """A record that does not follow the schema.

    Attributes:
        path: file the record came from (or ``"<memory>"``).
        line: 1-based line number, or 0 when not read from a file.
        field: dotted field name, or ``None`` for line-level problems (JSON, UTF-8).
        kind: a short machine-readable category (``"type"``, ``"missing_field"``, ...).
        reason: the human-readable explanation.
    """

    def __init__(self, *, path: str, line: int, field: str | None, kind: str, reason: str):
        self.path, self.line, self.field, self.kind, self.reason = path, line, field, kind, reason
        where = f"{path}:{line}"
        super().__init__(f"{where}: field '{field}': {reason}" if field else f"{where}: {reason}")


@dataclasses.dataclass(frozen=True)
class _Check:
    """Value constraint attached to a field through ``dataclasses.field(metadata=...)``."""

    minimum: float | None = None
    choices: tuple[Any, ...] | None = None
    nonempty: bool = False
    kind: str = "value"


def _field(**check: Any) -> Any:
    return dataclasses.field(metadata={"check": _Check(**check)})


def _non_negative() -> Any:
    return _field(minimum=0)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One product (items.jsonl). Category id 0 with name ``UNKNOWN`` marks a missing level."""

    FILE: ClassVar[str] = "items.jsonl"
    item_id: int = _non_negative()
    item_title: str = _field(nonempty=True)
    brand_id: int = _non_negative()
    brand_name: str
    seller_id: int = _non_negative()
    seller_name: str
    category_level1_id: int = _non_negative()
    category_level1_name: str
    category_level2_id: int = _non_negative()
    category_level2_name: str
    category_level3_id: int = _non_negative()
    category_level3_name: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """One searcher's profile (users.jsonl)."""

    FILE: ClassVar[str] = "users.jsonl"
    user_id: int = _non_negative()
    gender: str
    age_bucket: str
    fre_country: str
    fre_province: str
    fre_city: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SearchSession:
    """One search request with what was shown and what the user did (recall.jsonl).

    Clicked and purchased items must be among the impressed ones; purchases need not be clicks
    (the public demo has an order placed from the result page without a logged click).
    """

    FILE: ClassVar[str] = "recall.jsonl"
    user_id: int = _non_negative()
    session_id: int = _non_negative()
    impressed_item_ids: tuple[int, ...] = _non_negative()
    clicked_item_ids: tuple[int, ...] = _non_negative()
    purchased_item_ids: tuple[int, ...] = _non_negative()
    time_index: int = _field(minimum=0)
    query: str = _field(nonempty=True, kind="empty_query")
    split: str = _field(choices=SPLITS)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserStats:
    """User activity over the 30 days before the request."""

    user_show_cnt_30d_hist: float = _non_negative()
    user_click_cnt_30d_hist: float = _non_negative()
    user_order_cnt_30d_hist: float = _non_negative()
    user_gmv_30d_hist: float = _non_negative()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ItemStats:
    """Item exposure and feedback over the 30 days before the request."""

    item_show_cnt_30d_hist: float = _non_negative()
    item_click_cnt_30d_hist: float = _non_negative()
    item_order_cnt_30d_hist: float = _non_negative()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RankRow:
    """One impression of one item in one session, with context features (rank.jsonl)."""

    FILE: ClassVar[str] = "rank.jsonl"
    user_id: int = _non_negative()
    session_id: int = _non_negative()
    user_fan_number: int = _non_negative()
    user_follow_number: int = _non_negative()
    time_index: int = _field(minimum=0)
    search_entrance: str
    recently_clicked_item_ids: tuple[int, ...] = _non_negative()
    recently_purchased_item_ids: tuple[int, ...] = _non_negative()
    query: str = _field(nonempty=True, kind="empty_query")
    target_item_id: int = _non_negative()
    target_item_price: float = _field(minimum=0)
    is_clicked: int = _field(choices=(0, 1))
    is_purchased: int = _field(choices=(0, 1))
    user_statistical_features: UserStats
    target_item_statistical_features: ItemStats
    split: str = _field(choices=SPLITS)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RelevancePair:
    """A human-graded query-item pair (relevance.jsonl); score tiers 0 (irrelevant) to 3."""

    FILE: ClassVar[str] = "relevance.jsonl"
    query: str = _field(nonempty=True, kind="empty_query")
    item_title: str = _field(nonempty=True)
    brand: str
    seller_name: str
    attr_value: str
    score: int = _field(choices=RELEVANCE_TIERS)


RECORD_TYPES: dict[str, type] = {
    "items": Item,
    "users": User,
    "recall": SearchSession,
    "rank": RankRow,
    "relevance": RelevancePair,
}

_NO_CHECK = _Check()


@dataclasses.dataclass(frozen=True)
class _FieldSpec:
    name: str
    kind: type  # int, float, str, tuple (of int) or a record dataclass
    check: _Check


def _specs(cls: type) -> tuple[_FieldSpec, ...]:
    cached = _SPEC_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kind = tuple if typing.get_origin(hint) is tuple else hint
        if kind not in (int, float, str, tuple) and not dataclasses.is_dataclass(kind):
            raise TypeError(f"unsupported field type {hint!r} on {cls.__name__}.{f.name}")
        specs.append(_FieldSpec(f.name, kind, f.metadata.get("check", _NO_CHECK)))
    _SPEC_CACHE[cls] = tuple(specs)
    return _SPEC_CACHE[cls]


_SPEC_CACHE: dict[type, tuple[_FieldSpec, ...]] = {}
_TYPE_NAMES = {int: "integer", float: "number", str: "string", tuple: "list of integers"}


def _json_type(value: Any) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "object",
        types.NoneType: "null",
    }.get(type(value), type(value).__name__)


def from_json(cls: type, obj: Any, *, path: str = "<memory>", line: int = 0, prefix: str = ""):
    """Builds a record of type ``cls`` from a decoded JSON object, checking every field.

    Args:
        cls: one of the record dataclasses of this module.
        obj: the decoded JSON value of one line.
        path: file name used in error messages.
        line: line number used in error messages.
        prefix: dotted path of the enclosing field for nested records.

    Returns:
        The record.

    Raises:
        RecordError: on a missing, unknown, mistyped or out-of-range field.
    """

    def fail(name: str | None, kind: str, reason: str) -> RecordError:
        return RecordError(path=path, line=line, field=name, kind=kind, reason=reason)

    if not isinstance(obj, Mapping):
        raise fail(prefix or None, "type", f"expected a JSON object, got {_json_type(obj)}")
    specs = _specs(cls)
    known = {s.name for s in specs}
    for key in obj:
        if key not in known:
            raise fail(prefix + str(key), "unknown_field", f"unknown field for {cls.__name__}")
    values = {}
    for spec in specs:
        name = prefix + spec.name
        if spec.name not in obj:
            raise fail(name, "missing_field", "missing")
        values[spec.name] = _convert(spec, obj[spec.name], name, fail, path, line)
    record = cls(**values)
    _check_consistency(record, fail)
    return record


def _convert(spec: _FieldSpec, value: Any, name: str, fail, path: str, line: int) -> Any:
    kind, check = spec.kind, spec.check
    if dataclasses.is_dataclass(kind):
        return from_json(kind, value, path=path, line=line, prefix=name + ".")
    if kind is tuple:
        if not isinstance(value, list):
            raise fail(name, "type", f"expected a list of integers, got {_json_type(value)}")
        for i, v in enumerate(value):
            if type(v) is not int:
                raise fail(name, "type", f"element {i}: expected integer, got {_json_type(v)}")
            if check.minimum is not None and v < check.minimum:
                raise fail(name, "value", f"element {i}: {v} is below {check.minimum}")
        return tuple(value)
    if kind is float:
        if type(value) not in (int, float):
            raise fail(name, "type", f"expected number, got {_json_type(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise fail(name, "value", f"{value} is not finite")
    elif type(value) is not kind:
        raise fail(name, "type", f"expected {_TYPE_NAMES[kind]}, got {_json_type(value)}")
    if check.minimum is not None and value < check.minimum:
        raise fail(name, check.kind, f"{value} is below {check.minimum}")
    if check.choices is not None and value not in check.choices:
        raise fail(name, check.kind, f"{value!r} is not one of {list(check.choices)}")
    if check.nonempty and not value.strip():
        raise fail(name, check.kind, "empty or blank")
    return value


def _check_consistency(record: Any, fail) -> None:
    if isinstance(record, SearchSession):
        shown = set(record.impressed_item_ids)
        for name in ("clicked_item_ids", "purchased_item_ids"):
            missing = [i for i in getattr(record, name) if i not in shown]
            if missing:
                raise fail(name, "inconsistent", f"items {missing[:5]} were never impressed")


def to_json_dict(record: Any) -> dict[str, Any]:
    """The JSON object of a record, fields in schema order (lists for tuples)."""
    out = {}
    for spec in _specs(type(record)):
        value = getattr(record, spec.name)
        if dataclasses.is_dataclass(spec.kind):
            value = to_json_dict(value)
        elif spec.kind is tuple:
            value = list(value)
        out[spec.name] = value
    return out
