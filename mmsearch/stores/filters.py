"""Validated, store-neutral filter trees, parsed from the API's `Filter`.

Field names are checked against the filterable core fields and the
collection's declared attributes, values against the field's kind; errors are
InvalidQuery (mmsearch.stores.errors) whose `field` is the path
(`filter.all_of[1].condition.eq`). Each store
adapter translates the tree into its own filter language.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Literal

from mmsearch.stores.base import CORE_FIELDS, FILTERABLE_CORE, AttributeValue, FieldKind
from mmsearch.stores.errors import InvalidQuery
from mmsearch.v1 import common_pb2

MAX_DEPTH = 8
MAX_NODES = 64
MAX_IN_VALUES = 1024
ATTRIBUTE_PREFIX = "attributes."


@dataclass(frozen=True)
class Condition:
    # The stored field: a core field name, or "attributes.<name>".
    field: str
    kind: FieldKind
    op: Literal["eq", "in", "range"]
    values: tuple[AttributeValue, ...] = ()  # eq: one value; in: many
    gt: AttributeValue | None = None
    gte: AttributeValue | None = None
    lt: AttributeValue | None = None
    lte: AttributeValue | None = None


@dataclass(frozen=True)
class AllOf:
    nodes: tuple[FilterNode, ...]


@dataclass(frozen=True)
class AnyOf:
    nodes: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Not:
    node: FilterNode


FilterNode = Condition | AllOf | AnyOf | Not


def _value(value: common_pb2.Value, kind: FieldKind, path: str) -> AttributeValue:
    which = value.WhichOneof("kind")
    if which is None:
        raise InvalidQuery("value is empty", field=path)
    expected = {
        "keyword": ("string_value",),
        "keyword_list": ("string_value",),
        "int": ("int_value",),
        "float": ("double_value", "int_value"),
        "bool": ("bool_value",),
        "datetime": ("timestamp_value",),
    }[kind]
    if which not in expected:
        raise InvalidQuery(f"a {kind} field needs {' or '.join(expected)}, not {which}", field=path)
    if which == "timestamp_value":
        try:
            return value.timestamp_value.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError, OSError) as exc:
            raise InvalidQuery("timestamp is out of range (years 1 to 9999)", field=path) from exc
    if kind == "float":
        number = float(getattr(value, which))
        if not math.isfinite(number):
            raise InvalidQuery("a number must be finite (not NaN or infinity)", field=path)
        return number
    result: AttributeValue = getattr(value, which)
    return result


def field_kind(name: str, attributes: Mapping[str, FieldKind], path: str) -> FieldKind:
    if name in FILTERABLE_CORE:
        return CORE_FIELDS[name]
    if name.startswith(ATTRIBUTE_PREFIX) and name[len(ATTRIBUTE_PREFIX) :] in attributes:
        return attributes[name[len(ATTRIBUTE_PREFIX) :]]
    known = [*FILTERABLE_CORE, *(ATTRIBUTE_PREFIX + a for a in sorted(attributes))]
    raise InvalidQuery(f"unknown filter field {name!r}; filterable: {', '.join(known)}", field=path)


def parse_filter(
    tree: common_pb2.Filter, attributes: Mapping[str, FieldKind], path: str = "filter"
) -> FilterNode | None:
    """None when the filter is empty (no restriction)."""
    if tree.WhichOneof("expr") is None:
        return None
    count = [0]
    return _parse(tree, attributes, path, 1, count)


def _parse(
    tree: common_pb2.Filter, attributes: Mapping[str, FieldKind], path: str, depth: int, count: list[int]
) -> FilterNode:
    count[0] += 1
    if depth > MAX_DEPTH:
        raise InvalidQuery(f"filter is deeper than {MAX_DEPTH} levels", field=path)
    if count[0] > MAX_NODES:
        raise InvalidQuery(f"filter has more than {MAX_NODES} nodes", field=path)
    which = tree.WhichOneof("expr")
    if which is None:
        raise InvalidQuery("empty filter node: set condition, all_of, any_of or negate", field=path)
    if which == "negate":
        return Not(_parse(tree.negate, attributes, f"{path}.negate", depth + 1, count))
    if which in ("all_of", "any_of"):
        group = getattr(tree, which).filters
        if not group:
            raise InvalidQuery(f"{which} needs at least one filter", field=f"{path}.{which}")
        nodes = tuple(
            _parse(sub, attributes, f"{path}.{which}[{i}]", depth + 1, count) for i, sub in enumerate(group)
        )
        return AllOf(nodes) if which == "all_of" else AnyOf(nodes)
    return _condition(tree.condition, attributes, f"{path}.condition")


def _condition(cond: common_pb2.FieldCondition, attributes: Mapping[str, FieldKind], path: str) -> Condition:
    kind = field_kind(cond.field, attributes, f"{path}.field")
    op = cond.WhichOneof("op")
    if op == "eq":
        return Condition(cond.field, kind, "eq", (_value(cond.eq, kind, f"{path}.eq"),))
    if op == "in":
        values = getattr(cond, "in").values  # `in` is a Python keyword
        if not values or len(values) > MAX_IN_VALUES:
            raise InvalidQuery(f"`in` needs 1 to {MAX_IN_VALUES} values", field=f"{path}.in")
        return Condition(
            cond.field, kind, "in", tuple(_value(v, kind, f"{path}.in[{i}]") for i, v in enumerate(values))
        )
    if op == "range":
        if kind not in ("int", "float", "datetime"):
            raise InvalidQuery(f"range needs a number or timestamp field; {cond.field} is {kind}", field=path)
        bounds = {
            name: _value(getattr(cond.range, name), kind, f"{path}.range.{name}")
            for name in ("gt", "gte", "lt", "lte")
            if cond.range.HasField(name)
        }
        if not bounds:
            raise InvalidQuery("range needs at least one bound", field=f"{path}.range")
        return Condition(cond.field, kind, "range", **bounds)  # type: ignore[arg-type]
    raise InvalidQuery("condition needs eq, in or range", field=path)
