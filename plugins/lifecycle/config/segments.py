"""The segment language: a declarative YAML expression compiled to one SQLAlchemy boolean clause.

A segment is a mapping with exactly one of these keys::

    {attribute: lifecycle_stage, in: [lead, trial]}       # contact column, one operator
    {attribute: custom.preferred_plan, eq: pro}            # a custom attribute (config/sources.yml)
    {event: signed_up, within_last: 7d}                    # an event exists in a time window
    {event: [cart_abandoned, quote_sent], count: {gte: 2}, where: {product: Pro}}
    {event: activated, since: enrollment}                   # inside journeys: after enrolling
    {related: subscriptions, where: {status: active, renews_at: {within_next: 30d}}}
    {score: churn_risk, gte: 0.7}                          # a published predictive score
    {score: purchase_propensity, decile_gte: 8}            # its decile, 1 (lowest) .. 10
    {all: [...]}, {any: [...]}, {not: {...}}, {segment: core_customers}

Times are relative to the run's as-of time, never to the clock. Every value becomes a bound
parameter. :func:`parse` checks an expression and names the path of anything wrong;
:func:`compile_segment` turns a parsed expression into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, Table, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.config.durations import parse_duration
from lifecycle.model import schema
from lifecycle.model.db import json_boolean, json_number, json_timestamp, json_value

COMPARISONS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "is_null")
TIME_WINDOWS = ("within_last", "within_next", "older_than")
JOURNEY_REFS = ("after", "before")
OPERATORS = COMPARISONS + TIME_WINDOWS + JOURNEY_REFS
RELATED_TABLES = ("subscriptions", "opportunities", "tickets", "accounts")
COMPOSITES = ("all", "any", "not", "segment")
LEAF_KEYS = ("attribute", "event", "related", "score")
SCORE_VALUE_OPS = ("gt", "gte", "lt", "lte")
SCORE_DECILE_OPS = ("decile", "decile_gt", "decile_gte", "decile_lt", "decile_lte")
PROPERTY_NAME = re.compile(r"\w[\w.:/-]{0,63}")
CUSTOM_PREFIX = "custom."
CUSTOM_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


class SegmentError(ValueError):
    """A segment expression is wrong; ``path`` says where, the message says how to fix it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.detail = message


@dataclass(frozen=True)
class Condition:
    """``column <op> value`` on a table; ``value`` is a timedelta for time windows."""

    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class Attribute:
    condition: Condition


@dataclass(frozen=True)
class Event:
    types: tuple[str, ...]
    within_last: timedelta | None = None
    since_enrollment: bool = False
    count: tuple[str, int] | None = None
    where: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Related:
    table: str
    where: tuple[Condition, ...] = ()
    count: tuple[str, int] | None = None


@dataclass(frozen=True)
class Score:
    """A published predictive score (``lifecycle_scores``): its value (``gte``...) or decile
    (``decile: [9, 10]``, ``decile_gte: 8``...). A contact with no score never matches."""

    name: str
    op: str
    value: float | int | tuple[int, ...]


@dataclass(frozen=True)
class Combine:
    op: str  # all | any
    children: tuple[Segment, ...]


@dataclass(frozen=True)
class Not:
    child: Segment


@dataclass(frozen=True)
class Ref:
    name: str


Segment = Attribute | Event | Related | Score | Combine | Not | Ref


# --- parsing ---------------------------------------------------------------------------------


def _table_columns(table_name: str) -> set[str]:
    return {c.name for c in schema.CRM_TABLES[table_name].columns}


def _is_time_column(table_name: str, column: str) -> bool:
    return schema.CRM_TABLES[table_name].c[column].type.python_type is datetime


def _parse_condition(table: str, column: str, spec: Any, path: str) -> Condition:
    columns = _table_columns(table)
    if table == "contacts" and column.startswith(CUSTOM_PREFIX):
        return _parse_custom(column, spec, path)
    if column not in columns:
        raise SegmentError(path, f"unknown column {column!r} of {table}; use one of {sorted(columns)}")
    if not isinstance(spec, Mapping):
        return Condition(column, "eq", spec)
    if len(spec) != 1:
        raise SegmentError(path, f"give exactly one operator for {column!r}, one of {list(OPERATORS)}")
    op, value = next(iter(spec.items()))
    if op in TIME_WINDOWS and not _is_time_column(table, column):
        raise SegmentError(path, f"{op} needs a timestamp column; {column!r} is not one")
    return _condition(column, op, value, path)


def _condition(column: str, op: Any, value: Any, path: str) -> Condition:
    """``column op value`` once the operator is known and its value reads as that operator needs."""
    if op not in OPERATORS:
        raise SegmentError(path, f"unknown operator {op!r}; use one of {list(OPERATORS)}")
    if op in TIME_WINDOWS:
        try:
            value = parse_duration(value)
        except ValueError as exc:
            raise SegmentError(f"{path}.{op}", str(exc)) from None
    elif op in JOURNEY_REFS and value not in ("enrollment", "anchor"):
        raise SegmentError(f"{path}.{op}", "compare to 'enrollment' or 'anchor'")
    _check_value(op, value, path)
    return Condition(column, op, value)


def _parse_custom(column: str, spec: Any, path: str) -> Condition:
    """A custom contact attribute: its type is the one sources.yml declares; checked with the mapping."""
    name = column.removeprefix(CUSTOM_PREFIX)
    if not CUSTOM_NAME.fullmatch(name):
        raise SegmentError(
            path, f"{column!r}: write a custom attribute as custom.<name declared in config/sources.yml>"
        )
    if not isinstance(spec, Mapping):
        return Condition(column, "eq", spec)
    op, value = next(iter(spec.items()))
    return _condition(column, op, value, path)


def _check_value(op: str, value: Any, path: str) -> None:
    if op in ("in", "not_in") and (not isinstance(value, list) or not value):
        raise SegmentError(f"{path}.{op}", "give a non-empty list of values")
    if op == "is_null" and not isinstance(value, bool):
        raise SegmentError(f"{path}.is_null", "use true or false")


def _parse_count(spec: Any, path: str) -> tuple[str, int]:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SegmentError(path, "write the count like {gte: 2}")
    op, value = next(iter(spec.items()))
    if op not in ("eq", "gte", "gt", "lte", "lt") or not isinstance(value, int) or value < 0:
        raise SegmentError(path, "write the count like {gte: 2} with eq/gt/gte/lt/lte and an integer >= 0")
    return op, value


def _parse_where_map(spec: Any, path: str, parse_one: Callable[[str, Any, str], Condition]) -> tuple[Condition, ...]:
    if not isinstance(spec, Mapping) or not spec:
        raise SegmentError(path, "give a mapping of field: value or field: {operator: value}")
    return tuple(parse_one(str(k), v, f"{path}.{k}") for k, v in spec.items())


def _property_condition(prop: str, spec: Any, path: str) -> Condition:
    if not PROPERTY_NAME.fullmatch(prop):
        raise SegmentError(path, f"property name {prop!r} is not usable; use letters, digits and _ - . : /")
    if not isinstance(spec, Mapping):
        return Condition(prop, "eq", spec)
    if len(spec) != 1 or next(iter(spec)) not in COMPARISONS:
        raise SegmentError(path, f"use one operator of {list(COMPARISONS)} for an event property")
    op, value = next(iter(spec.items()))
    _check_value(op, value, path)
    return Condition(prop, op, value)


def parse(expr: Any, path: str = "segment") -> Segment:
    """Check a segment expression and return its parsed form; raises SegmentError."""
    if not isinstance(expr, Mapping) or not expr:
        raise SegmentError(path, "a segment is a mapping such as {attribute: lifecycle_stage, eq: lead}")
    keys = set(expr)
    kinds = keys & set(LEAF_KEYS + COMPOSITES)
    if len(kinds) != 1:
        raise SegmentError(
            path, f"use exactly one of {list(LEAF_KEYS + COMPOSITES)} (found {sorted(kinds) or sorted(keys)})"
        )
    kind = kinds.pop()
    if kind in ("all", "any"):
        items = expr[kind]
        if keys != {kind} or not isinstance(items, list) or not items:
            raise SegmentError(f"{path}.{kind}", "give a non-empty list of segments")
        return Combine(kind, tuple(parse(item, f"{path}.{kind}[{i}]") for i, item in enumerate(items)))
    if kind == "not":
        if keys != {"not"}:
            raise SegmentError(path, "'not' takes one segment and nothing beside it")
        return Not(parse(expr["not"], f"{path}.not"))
    if kind == "segment":
        if keys != {"segment"} or not isinstance(expr["segment"], str):
            raise SegmentError(path, "write a named segment as {segment: <name from config/segments.yml>}")
        return Ref(expr["segment"])
    if kind == "attribute":
        ops = keys - {"attribute"}
        if len(ops) != 1:
            raise SegmentError(path, f"give the attribute one operator, one of {list(OPERATORS)}")
        op = ops.pop()
        return Attribute(_parse_condition("contacts", str(expr["attribute"]), {op: expr[op]}, path))
    if kind == "event":
        return _parse_event(expr, path)
    if kind == "score":
        return _parse_score(expr, path)
    return _parse_related(expr, path)


def _parse_score(expr: Mapping, path: str) -> Score:
    name = expr["score"]
    if name not in schema.SCORE_NAMES:
        raise SegmentError(f"{path}.score", f"unknown score {name!r}; use one of {list(schema.SCORE_NAMES)}")
    ops = set(expr) - {"score"}
    allowed = SCORE_VALUE_OPS + SCORE_DECILE_OPS
    if len(ops) != 1 or not ops <= set(allowed):
        raise SegmentError(
            path,
            f"give the score one operator, one of {list(allowed)}: e.g. {{score: {name}, gte: 0.7}} "
            f"or {{score: {name}, decile_gte: 8}}",
        )
    op = ops.pop()
    value = expr[op]
    if op in SCORE_VALUE_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SegmentError(f"{path}.{op}", f"a score is a probability: give a number from 0 to 1, not {value!r}")
        return Score(name, op, float(value))
    deciles = value if op == "decile" and isinstance(value, list) else [value]
    if not deciles or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 10 for d in deciles):
        raise SegmentError(
            f"{path}.{op}",
            f"a decile is a whole number from 1 (lowest) to 10 (highest), or a list of them; not {value!r}",
        )
    return Score(name, op, tuple(deciles) if op == "decile" else deciles[0])


def _parse_event(expr: Mapping, path: str) -> Event:
    allowed = {"event", "within_last", "since", "count", "where"}
    if keys := set(expr) - allowed:
        raise SegmentError(path, f"unknown key(s) {sorted(keys)} for an event; allowed: {sorted(allowed)}")
    types = expr["event"]
    types = (types,) if isinstance(types, str) else tuple(types or ())
    if not types or not all(isinstance(t, str) and t for t in types):
        raise SegmentError(f"{path}.event", "name an event type or a list of event types")
    within = None
    if "within_last" in expr:
        try:
            within = parse_duration(expr["within_last"])
        except ValueError as exc:
            raise SegmentError(f"{path}.within_last", str(exc)) from None
    since = expr.get("since")
    if since not in (None, "enrollment"):
        raise SegmentError(f"{path}.since", "the only value is 'enrollment'")
    count = _parse_count(expr["count"], f"{path}.count") if "count" in expr else None
    where = _parse_where_map(expr["where"], f"{path}.where", _property_condition) if "where" in expr else ()
    return Event(types, within, since == "enrollment", count, where)


def _parse_related(expr: Mapping, path: str) -> Related:
    allowed = {"related", "where", "count"}
    if keys := set(expr) - allowed:
        raise SegmentError(path, f"unknown key(s) {sorted(keys)} for a related table; allowed: {sorted(allowed)}")
    table = expr["related"]
    if table not in RELATED_TABLES:
        raise SegmentError(f"{path}.related", f"unknown table {table!r}; use one of {list(RELATED_TABLES)}")
    where: tuple[Condition, ...] = ()
    if "where" in expr:
        where = _parse_where_map(
            expr["where"], f"{path}.where", lambda col, spec, p: _parse_condition(table, col, spec, p)
        )
    count = _parse_count(expr["count"], f"{path}.count") if "count" in expr else None
    return Related(table, where, count)


def references(segment: Segment) -> set[str]:
    """Names of the named segments an expression uses."""
    if isinstance(segment, Ref):
        return {segment.name}
    if isinstance(segment, Combine):
        return set().union(*(references(c) for c in segment.children))
    if isinstance(segment, Not):
        return references(segment.child)
    return set()


def tables_used(segment: Segment, catalog: Mapping[str, Segment]) -> set[str]:
    """The canonical CRM tables an expression reads (named segments followed through ``catalog``)."""
    if isinstance(segment, Attribute):
        return {"contacts"}
    if isinstance(segment, Event):
        return {"events"}
    if isinstance(segment, Related):
        return {"contacts", segment.table} if segment.table == "accounts" else {segment.table}
    if isinstance(segment, Score):
        return set()  # the engine's own lifecycle_scores
    if isinstance(segment, Combine):
        return set().union(*(tables_used(c, catalog) for c in segment.children))
    if isinstance(segment, Not):
        return tables_used(segment.child, catalog)
    return tables_used(catalog[segment.name], catalog) if segment.name in catalog else set()


def custom_used(segment: Segment, catalog: Mapping[str, Segment], path: str = "segment") -> dict[str, tuple[str, str]]:
    """The custom contact attributes an expression reads: name -> (where, the operator used)."""
    if isinstance(segment, Attribute):
        cond = segment.condition
        if cond.column.startswith(CUSTOM_PREFIX):
            return {cond.column.removeprefix(CUSTOM_PREFIX): (path, cond.op)}
        return {}
    if isinstance(segment, Combine):
        out: dict[str, tuple[str, str]] = {}
        for i, child in enumerate(segment.children):
            out |= custom_used(child, catalog, f"{path}.{segment.op}[{i}]")
        return out
    if isinstance(segment, Not):
        return custom_used(segment.child, catalog, f"{path}.not")
    if isinstance(segment, Ref) and segment.name in catalog:
        return custom_used(catalog[segment.name], catalog, f"segments.yml {segment.name}")
    return {}


def uses_journey(segment: Segment, catalog: Mapping[str, Segment] | None = None) -> bool:
    """Whether an expression refers to the enrollment (``since``/``after``/``before``)."""
    if isinstance(segment, Event):
        return segment.since_enrollment
    if isinstance(segment, Attribute):
        return segment.condition.op in JOURNEY_REFS
    if isinstance(segment, Related):
        return any(c.op in JOURNEY_REFS for c in segment.where)
    if isinstance(segment, Score):
        return False
    if isinstance(segment, Combine):
        return any(uses_journey(c, catalog) for c in segment.children)
    if isinstance(segment, Not):
        return uses_journey(segment.child, catalog)
    return catalog is not None and segment.name in catalog and uses_journey(catalog[segment.name], catalog)


# --- compiling -------------------------------------------------------------------------------


@dataclass
class Context:
    """What a compiled segment is relative to.

    ``contact_id`` is the outer query's contact id column. When ``contacts_in_scope`` is true the
    outer query selects from ``contacts`` and attributes are read directly; otherwise they are
    looked up through a correlated EXISTS. ``enrolled_at``/``anchor_at`` are columns of the
    enrollment the expression is evaluated for (journey exits and step conditions).
    """

    as_of: datetime
    contact_id: ColumnElement
    contacts_in_scope: bool = True
    catalog: Mapping[str, Segment] = field(default_factory=dict)
    enrolled_at: ColumnElement | None = None
    anchor_at: ColumnElement | None = None


_COUNT_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _compare(column: ColumnElement, cond: Condition, ctx: Context) -> ColumnElement:
    op, value = cond.op, cond.value
    if op == "eq":
        return column.is_(None) if value is None else column == value
    if op == "ne":
        return or_(column.is_(None), column != value)
    if op == "in":
        return column.in_(value)
    if op == "not_in":
        return or_(column.is_(None), column.not_in(value))
    if op == "is_null":
        return column.is_(None) if value else column.is_not(None)
    if op in _COUNT_OPS:
        return _COUNT_OPS[op](column, value)
    if op == "within_last":
        return and_(column >= ctx.as_of - value, column <= ctx.as_of)
    if op == "within_next":
        return and_(column >= ctx.as_of, column <= ctx.as_of + value)
    if op == "older_than":
        cutoff: datetime = ctx.as_of - value
        return column < cutoff
    reference = ctx.enrolled_at if value == "enrollment" else ctx.anchor_at
    if reference is None:
        raise SegmentError(cond.column, f"'{op}: {value}' only works inside a journey (exit goal or step)")
    return column > reference if op == "after" else column < reference


def _count_clause(count_expr: ColumnElement[Any], count: tuple[str, int]) -> ColumnElement:
    op, n = count
    return _COUNT_OPS[op](count_expr, n)


def _property(column: ColumnElement[Any], cond: Condition) -> json_value:
    value = cond.value[0] if isinstance(cond.value, list) and cond.value else cond.value
    if isinstance(value, bool):
        return json_boolean(column, cond.column)
    if isinstance(value, int | float):
        return json_number(column, cond.column)
    return json_value(column, cond.column)


def _custom_value(cond: Condition, ctx: Context) -> ColumnElement[Any]:
    """A custom contact attribute of the contact in scope (NULL when it has none), typed by the value
    it is compared with: a timestamp for time windows and journey references, a number, a boolean,
    else text. The name and the value are bound parameters."""
    name = cond.column.removeprefix(CUSTOM_PREFIX)
    value = cond.value[0] if isinstance(cond.value, list) and cond.value else cond.value
    attrs = schema.contact_attributes.alias("custom_attr")
    kind: type[json_value] = json_value
    if cond.op == "is_null":
        kind = json_value
    elif cond.op in TIME_WINDOWS + JOURNEY_REFS or isinstance(value, datetime):
        kind = json_timestamp
    elif isinstance(value, bool):
        kind = json_boolean
    elif isinstance(value, int | float):
        kind = json_number
    return select(kind(attrs.c.attributes, name)).where(attrs.c.contact_id == ctx.contact_id).scalar_subquery()


def _event_clause(node: Event, ctx: Context) -> ColumnElement:
    if node.since_enrollment and ctx.enrolled_at is None:
        raise SegmentError("since", "'since: enrollment' only works inside a journey (exit goal or step)")

    def filters(ev: Table) -> list[ColumnElement[bool]]:
        matched = [ev.c.contact_id == ctx.contact_id, ev.c.event_type.in_(node.types), ev.c.occurred_at <= ctx.as_of]
        if node.within_last is not None:
            matched.append(ev.c.occurred_at >= ctx.as_of - node.within_last)
        if ctx.enrolled_at is not None and node.since_enrollment:
            matched.append(ev.c.occurred_at >= ctx.enrolled_at)
        matched.extend(_compare(_property(ev.c.properties, c), c, ctx) for c in node.where)
        return matched

    ev = schema.all_events("ev", filters)
    if node.count is None:
        return exists().select_from(ev)
    counted = select(func.count()).select_from(ev).scalar_subquery()
    return _count_clause(counted, node.count)


def _related_clause(node: Related, ctx: Context) -> ColumnElement:
    table = schema.CRM_TABLES[node.table].alias(f"rel_{node.table}")
    if node.table == "accounts":
        owner = schema.contacts.alias("acct_owner")
        link: ColumnElement[bool] = exists().where(
            owner.c.contact_id == ctx.contact_id, owner.c.account_id == table.c.account_id
        )
    else:
        link = table.c.contact_id == ctx.contact_id
    filters = [link, *(_compare(table.c[c.column], c, ctx) for c in node.where)]
    if node.count is None:
        return exists().where(*filters)
    counted = select(func.count()).select_from(table).where(*filters).scalar_subquery()
    return _count_clause(counted, node.count)


def _score_clause(node: Score, ctx: Context) -> ColumnElement:
    s = schema.scores.alias("seg_score")
    test: ColumnElement[bool]
    if isinstance(node.value, tuple):
        test = s.c.decile.in_(node.value)
    elif node.op in SCORE_DECILE_OPS:
        test = _COUNT_OPS[node.op.removeprefix("decile_")](s.c.decile, node.value)
    else:
        test = _COUNT_OPS[node.op](s.c.value, node.value)
    return exists().where(s.c.contact_id == ctx.contact_id, s.c.score == node.name, test)


def compile_segment(node: Segment, ctx: Context) -> ColumnElement:
    """The SQL boolean clause for ``node``, correlated to ``ctx.contact_id``."""
    if isinstance(node, Combine):
        parts = [compile_segment(c, ctx) for c in node.children]
        return and_(true(), *parts) if node.op == "all" else or_(false(), *parts)
    if isinstance(node, Not):
        return not_(compile_segment(node.child, ctx))
    if isinstance(node, Ref):
        if node.name not in ctx.catalog:
            raise SegmentError("segment", f"unknown named segment {node.name!r}; define it in config/segments.yml")
        return compile_segment(ctx.catalog[node.name], ctx)
    if isinstance(node, Event):
        return _event_clause(node, ctx)
    if isinstance(node, Related):
        return _related_clause(node, ctx)
    if isinstance(node, Score):
        return _score_clause(node, ctx)
    if node.condition.column.startswith(CUSTOM_PREFIX):
        return _compare(_custom_value(node.condition, ctx), node.condition, ctx)
    if ctx.contacts_in_scope:
        return _compare(schema.contacts.c[node.condition.column], node.condition, ctx)
    inner = schema.contacts.alias("attr_contact")
    return exists().where(
        inner.c.contact_id == ctx.contact_id, _compare(inner.c[node.condition.column], node.condition, ctx)
    )


def audience_query(node: Segment, as_of: datetime, catalog: Mapping[str, Segment]) -> Select[Any]:
    """``SELECT DISTINCT contact_id FROM contacts WHERE <segment>``: the whole audience in one
    statement, each contact id once (a CRM view may repeat an id or lack one)."""
    ctx = Context(as_of=as_of, contact_id=schema.contacts.c.contact_id, catalog=catalog)
    contact_id = schema.contacts.c.contact_id
    return select(contact_id).where(contact_id.is_not(None), compile_segment(node, ctx)).distinct()


__all__ = [
    "Context",
    "SegmentError",
    "audience_query",
    "compile_segment",
    "custom_used",
    "parse",
    "references",
    "uses_journey",
]
