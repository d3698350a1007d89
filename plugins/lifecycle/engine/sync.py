"""The sync stage: copy the mapped source entities into the canonical mirror tables of the state database.

Every other stage runs its set-based SQL on the canonical tables (``contacts``, ``events``...) of
the state database. Where the source is not the state database, this stage keeps those tables a
mirror of the source: it reads the source with SELECTs only (on a read-only engine), applies the
mapping of ``config/sources.yml`` (columns, value vocabularies, JSON properties; without the file
the source holds the canonical tables as they are) and writes the mirror.

- An entity whose every mapping part names a ``watermark`` is copied **incrementally** after its
  first copy: the rows whose watermark is at or past the highest one copied, replacing the mirror's
  rows with the same key. When the source then counts a different number of rows than the mirror
  (rows deleted at the source), the entity is copied afresh.
- Any other entity is a **full refresh** with a checksum: the source rows are read and hashed;
  when neither the hash nor the count changed since the last copy nothing is written, else the
  mirror table is replaced in one transaction.

Each entity is written in one transaction under a lock (an advisory lock on PostgreSQL, the
write lock on SQLite), so two program runs syncing at once wait for each other and the second
finds nothing to copy: the stage is idempotent. What only the source can tell is wrong with a
mapping (a missing table or column, a value of the wrong type, a value outside a mapped
vocabulary) raises :class:`SourceError`, naming the file, the entry, the field and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    TIMESTAMP,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy import column as sql_column
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, DropIndex
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.config import ConfigError
from lifecycle.config.sources import (
    IDENTIFIER,
    KEYS,
    SOURCES_FILE,
    VOCABULARIES,
    EntityMapping,
    Sources,
    identity_mapping,
    is_json,
)
from lifecycle.model import schema
from lifecycle.model.db import utc_naive
from lifecycle.paths import config_dir

log = logging.getLogger(__name__)
BATCH = 50_000
"""Rows read, converted and written at a time."""
CUSTOM = "__custom"
"""The key of a contact row's custom attributes (written to ``lifecycle_contact_attributes``)."""
OPTIONAL = ("accounts",)
"""Entities copied whenever they are mapped, though no program needs them (templates read them)."""


class SourceError(ConfigError):
    """The source does not fit the mapping: names the file, the entry, the field and the fix."""


@dataclass(frozen=True)
class SyncResult:
    """What one entity's sync did: ``mode`` is full, incremental, unchanged or shared (nothing to copy)."""

    mode: str
    rows_read: int
    rows_written: int
    seconds: float


@dataclass
class Batch:
    """Canonical rows of one part, column by column: ``columns`` holds every mapped canonical column,
    ``custom`` the contacts' custom attributes (one dict a row), ``marks`` each row's watermark."""

    size: int
    columns: dict[str, list[Any]]
    custom: list[dict[str, Any]] | None = None
    marks: list[Any] | None = None

    def take(self, keep: Sequence[int]) -> Batch:
        """Only the rows at ``keep``."""

        def pick(values: Sequence[Any]) -> list[Any]:
            return [values[i] for i in keep]

        return Batch(
            len(keep),
            {name: pick(values) for name, values in self.columns.items()},
            pick(self.custom) if self.custom is not None else None,
            pick(self.marks) if self.marks is not None else None,
        )

    def checksum(self) -> int:
        """The sum (mod 2**64) of the rows' hashes: the same rows in any order give the same sum."""
        names = sorted(self.columns)
        columns = [self.columns[name] for name in names] + ([self.custom] if self.custom is not None else [])
        total = 0
        for row in zip(*columns, strict=True):
            total += int.from_bytes(hashlib.blake2b(repr(row).encode(), digest_size=8).digest(), "big")
        return total % (1 << 64)

    def top(self, top: Any) -> Any:
        """The highest watermark of ``top`` and the batch's."""
        marks = [m for m in self.marks or () if m is not None]
        if not marks:
            return top
        high = max(marks)
        return high if top is None or high > top else top

    def dicts(self) -> Iterator[dict[str, Any]]:
        """The rows as dicts (JSON text parsed; custom attributes under :data:`CUSTOM`)."""
        names = list(self.columns)
        for i, values in enumerate(zip(*self.columns.values(), strict=True)):
            row = {name: _as_json(v) if is_json_name(name) else v for name, v in zip(names, values, strict=True)}
            if self.custom is not None:
                row[CUSTOM] = self.custom[i]
            yield row


class _Part:
    """One mapping part of an entity, compiled: its SELECT and how a source row becomes a canonical row."""

    def __init__(self, entity: str, where: str, mapping: EntityMapping, file: Path, strict: bool) -> None:
        self.entity, self.where, self.mapping, self.file, self.strict = entity, where, mapping, file, strict
        self.table = schema.CRM_TABLES[entity]
        self.outputs: list[tuple[str, str]] = []  # (select label, canonical column or column.property)
        for canonical, source in mapping.columns.items():
            if isinstance(source, dict):
                self.outputs += [(f"p__{canonical}__{prop}", f"{canonical}.{prop}") for prop in source]
            else:
                self.outputs.append((f"c__{canonical}", canonical))
        self.value_maps = {c: mapping.source_values(c) for c in mapping.values}
        self.custom = mapping.custom_attributes()

    def _expression(self, source: str) -> ColumnElement[Any]:
        return sql_column(source) if IDENTIFIER.match(source) else literal_column(f"({source})")

    def _from(self) -> Any:
        if self.mapping.query is not None:
            return text(f"({self.mapping.query}) AS lifecycle_source")
        schema_name, _, name = (self.mapping.table or "").rpartition(".")
        return table(name, schema=schema_name or None)

    def _selected(self) -> list[ColumnElement[Any]]:
        exprs: list[ColumnElement[Any]] = []
        for canonical, source in self.mapping.columns.items():
            if isinstance(source, dict):
                exprs += [self._expression(s).label(f"p__{canonical}__{p}") for p, s in source.items()]
            else:
                exprs.append(self._expression(source).label(f"c__{canonical}"))
        exprs += [self._expression(spec.source).label(f"x__{name}") for name, spec in self.custom.items()]
        return exprs

    def select(self, since: Any = None, limit: int | None = None) -> Any:
        """The part's rows (those at or past the watermark ``since``, when given; the first ``limit``)."""
        stmt = select(*self._selected()).select_from(self._from())
        if since is not None and self.mapping.watermark:
            wm = self._expression(self.mapping.watermark)
            stmt = stmt.add_columns(wm.label("w__")).where(wm >= _mark_param(since))
        elif self.mapping.watermark:
            stmt = stmt.add_columns(self._expression(self.mapping.watermark).label("w__"))
        return stmt if limit is None else stmt.limit(limit)

    def count(self) -> Any:
        """The number of rows the part reads."""
        return select(func.count()).select_from(self._from())

    def header(self) -> Any:
        """No rows, only the table's column names (a missing table or column is named before any read)."""
        return select(text("*")).select_from(self._from()).limit(0)

    def check_source(self, conn: Connection) -> None:
        """A missing table or column, named with the fix, before any row is read."""
        if self.mapping.table is None:
            return
        try:
            header = conn.execute(self.header())
            present = {str(name).lower() for name in list(header.keys())}
        except DBAPIError:
            conn.rollback()
            self.fail("table", f"table {self.mapping.table!r} is not in the source — fix: name an existing table")
        for canonical, source in self.mapping.columns.items():
            for label, spec in source.items() if isinstance(source, dict) else [(None, source)]:
                if IDENTIFIER.match(spec) and spec.lower() not in present:
                    field = f"columns.{canonical}" + (f".{label}" if label else "")
                    self.fail(
                        field,
                        f"column {spec!r} is not in {self.mapping.table} — fix: use one of {sorted(present)} "
                        "or an SQL expression",
                    )
        for name, attribute in self.custom.items():
            if IDENTIFIER.match(attribute.source) and attribute.source.lower() not in present:
                self.fail(
                    f"custom.{name}.source",
                    f"column {attribute.source!r} is not in {self.mapping.table} — fix: use one of {sorted(present)} "
                    "or an SQL expression",
                )
        mark = self.mapping.watermark
        if mark and IDENTIFIER.match(mark) and mark.lower() not in present:
            self.fail("watermark", f"column {self.mapping.watermark!r} is not in {self.mapping.table}")

    def fail(self, field: str, message: str) -> None:
        raise SourceError(self.file, [f"{self.where}.{field}: {message}"])

    def batches(self, conn: Connection, since: Any = None, limit: int | None = None) -> Iterator[Batch]:
        """The canonical rows as the source yields them, a batch at a time, converted column by column
        (the first ``limit`` only, when given: a sample). Problems with the mapping raise at the end."""
        try:
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(self.select(since, limit))
        except DBAPIError as exc:
            first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            self.fail(
                "query" if self.mapping.query else "columns",
                f"the source refused the SELECT ({first}) — fix: check the table, the columns and the expressions",
            )
        unmapped: dict[str, dict[Any, int]] = {}
        self.unreadable: dict[str, tuple[int, Any]] = {}
        self.readable: set[str] = set()
        labels = list(result.keys())
        for rows in result.partitions(BATCH):
            raw = dict(zip(labels, zip(*rows, strict=True), strict=True))
            columns: dict[str, list[Any]] = {}
            properties: dict[str, dict[str, list[Any]]] = {}
            for label, target in self.outputs:
                if "." in target:
                    canonical, prop = target.split(".", 1)
                    properties.setdefault(canonical, {})[prop] = [_plain(v) for v in raw[label]]
                else:
                    columns[target] = self.convert_column(target, raw[label], rows, unmapped)
            for canonical, props in properties.items():
                names = list(props)
                columns[canonical] = [
                    dict(zip(names, values, strict=True)) for values in zip(*props.values(), strict=True)
                ]
            custom = {name: self.convert_custom_column(name, raw[f"x__{name}"], rows) for name in self.custom}
            attributes = (
                [dict(zip(custom, values, strict=True)) for values in zip(*custom.values(), strict=True)]
                if custom
                else None
            )
            if attributes is not None and self.entity == "events":
                merged = columns.get("properties") or [None] * len(rows)
                columns["properties"] = [{**(_as_json(p) or {}), **a} for p, a in zip(merged, attributes, strict=True)]
                attributes = None
            yield Batch(len(rows), columns, attributes, list(raw["w__"]) if "w__" in raw else None)
        for column, (count, example) in self.unreadable.items():
            if column not in self.readable:  # not one value reads as the type: the mapping, not the rows
                if column.startswith("custom."):
                    kind = self.custom[column.removeprefix("custom.")].type
                    self.fail(
                        column,
                        f"{self.custom[column.removeprefix('custom.')].source!r} gives values that are not {kind} "
                        f"({count} rows, e.g. {example!r}) — fix: declare the type the column holds",
                    )
                kind = _kind_name(self.table.c[column].type)
                self.fail(
                    f"columns.{column}",
                    f"{self.mapping.columns[column]!r} gives values that are not {kind} ({count} rows, e.g. "
                    f"{example!r}) — fix: map {kind} column, or an expression that yields one",
                )
        if unmapped:
            column, seen = next(iter(unmapped.items()))
            sample = ", ".join(f"{v!r} ({n} rows)" for v, n in list(seen.items())[:5])
            vocabulary = list(VOCABULARIES[(self.entity, column)])
            self.fail(
                f"values.{column}",
                f"source values outside the mapped vocabulary: {sample} — fix: map each onto one of {vocabulary} "
                f"under values.{column}",
            )

    def rows(
        self, conn: Connection, since: Any = None, limit: int | None = None
    ) -> Iterator[tuple[dict[str, Any], Any]]:
        """Canonical rows one by one, as dicts (with each row's watermark value): for samples."""
        for batch in self.batches(conn, since, limit):
            for i, row in enumerate(batch.dicts()):
                yield row, batch.marks[i] if batch.marks is not None else None

    def convert_column(self, column: str, values: Sequence[Any], rows: Sequence[Any], unmapped: dict) -> list[Any]:
        """One column of a batch as its canonical column holds it: values already of the column's
        type pass as they are, vocabulary values are converted once per distinct value, the rest
        one by one (:meth:`convert`)."""
        slow = self.convert
        if column in self.value_maps or (self.strict and (self.entity, column) in VOCABULARIES):
            memo: dict[Any, Any] = {}
            out: list[Any] = []
            for i, value in enumerate(values):
                if value is None:
                    out.append(None)
                    continue
                key = (value.__class__, value)
                try:
                    hit = memo.get(key)
                except TypeError:  # unhashable: convert it alone
                    out.append(slow(column, value, rows[i]._mapping, unmapped))
                    continue
                if hit is None:
                    hit = slow(column, value, rows[i]._mapping, unmapped)
                    if hit is not None:  # unmapped and unreadable values are counted at every row
                        memo[key] = hit
                out.append(hit)
            return out
        kind = self.table.c[column].type
        if is_json(self.entity, column):
            return [self._json_text(column, v, rows, i, unmapped) for i, v in enumerate(values)]
        if isinstance(kind, DateTime):
            out = [
                v
                if v is None or (v.__class__ is datetime and v.tzinfo is None)
                else slow(column, v, rows[i]._mapping, unmapped)
                for i, v in enumerate(values)
            ]
        else:
            exact = float if isinstance(kind, Float) else int if isinstance(kind, Integer) else str
            out = [
                v if v is None or v.__class__ is exact else slow(column, v, rows[i]._mapping, unmapped)
                for i, v in enumerate(values)
            ]
        if column not in self.readable and any(v is not None for v in out):
            self.readable.add(column)
        return out

    def _json_text(self, column: str, value: Any, rows: Sequence[Any], i: int, unmapped: dict) -> Any:
        """A JSON column's source text is kept as it is once it parses (written without a second
        encoding); other values go through :meth:`convert`."""
        if value.__class__ is not str:
            return None if value is None else self.convert(column, value, rows[i]._mapping, unmapped)
        try:
            json.loads(value)
        except ValueError:
            self._unreadable(column, value)
            return None
        self.readable.add(column)
        return value

    def convert_custom_column(self, name: str, values: Sequence[Any], rows: Sequence[Any]) -> list[Any]:
        """One custom attribute of a batch as its declared type (:meth:`convert_custom` for the values
        that are not of it already)."""
        kind = self.custom[name].type
        slow = self.convert_custom
        if kind == "timestamp":
            out = [
                None
                if v is None
                else v.isoformat(sep=" ", timespec="microseconds")
                if v.__class__ is datetime and v.tzinfo is None
                else slow(name, v, rows[i]._mapping)
                for i, v in enumerate(values)
            ]
        else:
            exact = {"number": float, "boolean": bool}.get(kind, str)
            out = [
                v if v is None or v.__class__ is exact else slow(name, v, rows[i]._mapping)
                for i, v in enumerate(values)
            ]
        if any(v is not None for v in out):
            self.readable.add(f"custom.{name}")
        return out

    def _unreadable(self, column: str, value: Any) -> None:
        count, example = self.unreadable.get(column, (0, value))
        self.unreadable[column] = (count + 1, example)

    def convert_custom(self, name: str, value: Any, raw: Any) -> Any:
        """One source value of a custom attribute, as its declared type (JSON-ready)."""
        if value is None:
            return None
        kind = self.custom[name].type
        try:
            converted = _coerce_custom(kind, value)
            self.readable.add(f"custom.{name}")
            return converted
        except TypeError:
            key = ", ".join(str(raw.get(f"c__{k}")) for k in KEYS[self.entity])
            self.fail(
                f"custom.{name}",
                f"{self.custom[name].source!r} gives {type(value).__name__} values ({value!r} for {key}), but "
                f"custom.{name} is declared {kind} — fix: declare the type the column holds, or give an "
                "expression that yields one",
            )
        except ValueError:
            self._unreadable(f"custom.{name}", value)
            return None

    def convert(self, column: str, value: Any, raw: Any, unmapped: dict[str, dict[Any, int]]) -> Any:
        """One source value as its canonical column holds it."""
        if value is None:
            return None
        mapped = self.value_maps.get(column)
        if mapped:
            hit = mapped.get(value, mapped.get(str(value)) if not isinstance(value, bool) else None)
            if hit is not None:
                value = hit
            elif (self.entity, column) not in VOCABULARIES:
                value = str(value)
            else:
                unmapped.setdefault(column, {}).setdefault(value, 0)
                unmapped[column][value] += 1
                return None
        elif self.strict and str(value) not in VOCABULARIES.get((self.entity, column), (str(value),)):
            unmapped.setdefault(column, {}).setdefault(value, 0)
            unmapped[column][value] += 1
            return None
        kind = self.table.c[column].type
        try:
            converted = _coerce(kind, value, is_json(self.entity, column))
            self.readable.add(column)
            return converted
        except TypeError:
            key = ", ".join(str(raw.get(f"c__{k}")) for k in KEYS[self.entity])
            source = self.mapping.columns[column]
            self.fail(
                f"columns.{column}",
                f"{source!r} gives {type(value).__name__} values ({value!r} for {key}), but {self.entity}.{column} "
                f"is {_kind_name(kind)} — fix: map a {_kind_name(kind)} column, or an expression that yields one",
            )
        except ValueError:
            # Unreadable text in a typed column: a bad CRM row, NULL in the mirror (counted; the whole
            # column unreadable is a wrong mapping).
            self._unreadable(column, value)
            return None


def _mark_param(since: Any) -> Any:
    """The last copy's watermark, bound as the type the source gave it: an aware datetime (a
    ``TIMESTAMP`` column on BigQuery, ``TIMESTAMP_TZ`` on Snowflake) as a timestamp with time zone, a
    naive one (``DATETIME``, ``TIMESTAMP_NTZ``) as a datetime. BigQuery compares a ``TIMESTAMP`` only
    with a ``TIMESTAMP``, and types each parameter by this."""
    if isinstance(since, datetime) and since.tzinfo is not None:
        return bindparam("since", since, type_=TIMESTAMP(timezone=True))
    return bindparam("since", since)


def entity_parts(entity: str, sources: Sources | None, file: Path) -> list[_Part]:
    """How ``entity`` is read from the source: its mapping parts (``entity[i]`` when there are
    several), or the canonical table itself when there is no mapping (``file`` names it in errors)."""
    if sources is None:
        return [_Part(entity, entity, identity_mapping(entity), file, strict=False)]
    mappings = sources.entities[entity]
    return [
        _Part(entity, f"{entity}[{i}]" if len(mappings) > 1 else entity, m, sources.file, strict=True)
        for i, m in enumerate(mappings)
    ]


def _kind_name(kind: Any) -> str:
    if isinstance(kind, DateTime):
        return "a timestamp"
    if isinstance(kind, Integer | Float):
        return "a number"
    if isinstance(kind, JSON):
        return "JSON"
    return "text"


def _plain(value: Any) -> Any:
    if value is None or value.__class__ in (str, int, float):
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _coerce(kind: Any, value: Any, json_column: bool) -> Any:
    """``value`` in the canonical column's type; TypeError for a value of the wrong kind altogether,
    ValueError for text that does not read as the type."""
    if json_column:
        if isinstance(value, dict | list):
            return value
        if isinstance(value, str | bytes):
            return json.loads(value)
        raise TypeError(value)
    if isinstance(kind, DateTime):
        if isinstance(value, datetime):
            return utc_naive(value)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        if isinstance(value, str):
            return utc_naive(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
        raise TypeError(value)
    if isinstance(kind, Integer | Float):
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise TypeError(value)
        number = float(value)
        return int(number) if isinstance(kind, Integer) else number
    if isinstance(value, bool | datetime | date | dict | list):
        raise TypeError(value)
    return str(value)


def _coerce_custom(kind: str, value: Any) -> Any:
    """A custom attribute's value as JSON holds it: timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC
    text (what :class:`~lifecycle.model.db.json_timestamp` compares), numbers, booleans, text."""
    if kind == "timestamp":
        stamp = _coerce(DateTime(), value, False)
        return stamp.isoformat(sep=" ", timespec="microseconds")
    if kind == "number":
        return _coerce(Float(), value, False)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int | Decimal) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            if value.strip().lower() in ("true", "t", "yes", "1"):
                return True
            if value.strip().lower() in ("false", "f", "no", "0"):
                return False
            raise ValueError(value)
        raise TypeError(value)
    return _coerce(schema.contacts.c.first_name.type, value, False)


def dump_mark(value: Any) -> Any:
    """A watermark value as JSON (a timestamp, a number or text), for :func:`load_mark`."""
    if isinstance(value, datetime | date):
        return {"t": "datetime", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {"t": "number", "v": float(value)}
    return {"t": "plain", "v": value}


def load_mark(mark: Mapping[str, Any] | None) -> Any:
    """The watermark value :func:`dump_mark` stored (None for none)."""
    if mark is None:
        return None
    return datetime.fromisoformat(mark["v"]) if mark["t"] == "datetime" else mark["v"]


def _lock(conn: Connection, entity: str) -> None:
    """Serialise writers of one entity: PostgreSQL's advisory lock, SQLite's database write lock."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.md5(f"lifecycle_sync:{entity}".encode()).digest()[:4], "big")
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    else:
        s = schema.source_sync
        conn.execute(s.update().where(s.c.entity == entity).values(entity=s.c.entity))


def _as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def is_json_name(column: str) -> bool:
    """Whether a canonical column holds JSON (``properties``)."""
    return column == "properties"


def _json_cell(value: Any) -> Any:
    return value if value is None or value.__class__ is str else json.dumps(value)


def _sqlite_time(value: Any) -> Any:
    # SQLAlchemy's SQLite DATETIME storage format, which every stage's bound parameters compare with.
    return value.isoformat(sep=" ", timespec="microseconds") if value.__class__ is datetime else value


def _copy_cell(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    kind = value.__class__
    if kind is datetime:
        return str(value.isoformat(sep=" "))
    if kind is dict or kind is list:
        value = json.dumps(value)
    elif kind is not str:
        return str(value)
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


def _bulk_insert(conn: Connection, table: Any, names: Sequence[str], columns: Sequence[Sequence[Any]]) -> None:
    """Append rows given column by column: ``COPY`` on PostgreSQL, one ``executemany`` on SQLite
    (values already in the form the database holds: timestamps as text on SQLite, JSON as text)."""
    listed = ", ".join(names)
    if conn.dialect.name == "postgresql":
        body = "".join("\t".join(map(_copy_cell, row)) + "\n" for row in zip(*columns, strict=True))
        statement = f"COPY {table.name} ({listed}) FROM STDIN"
        cursor = conn.connection.cursor()
        try:
            if hasattr(cursor, "copy_expert"):
                cursor.copy_expert(statement, io.StringIO(body))
            else:
                with cursor.copy(statement) as copy:
                    copy.write(body)
        finally:
            cursor.close()
        return
    converted = []
    for name, values in zip(names, columns, strict=True):
        kind = table.c[name].type
        if isinstance(kind, DateTime):
            values = [_sqlite_time(v) for v in values]
        elif isinstance(kind, JSON):
            values = [_json_cell(v) for v in values]
        converted.append(values)
    marks = ", ".join("?" for _ in names)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({listed}) VALUES ({marks})", list(zip(*converted, strict=True)))


def _write(conn: Connection, entity: str, batch: Batch, replace_keys: bool) -> int:
    """Write a batch into the mirror (replacing the mirror's rows with the same keys first, for an
    incremental copy), with the contacts' custom attributes."""
    if not batch.size:
        return 0
    mirror = schema.CRM_TABLES[entity]
    keys = KEYS[entity]
    if replace_keys:
        for first in range(0, batch.size, 500):
            if len(keys) == 1:
                chosen = batch.columns[keys[0]][first : first + 500]
                conn.execute(delete(mirror).where(mirror.c[keys[0]].in_(chosen)))
            else:
                tuples = list(zip(*(batch.columns[k][first : first + 500] for k in keys), strict=True))
                conn.execute(delete(mirror).where(tuple_(*(mirror.c[k] for k in keys)).in_(tuples)))
    names = [c.name for c in mirror.columns]
    empty = [None] * batch.size
    _bulk_insert(conn, mirror, names, [batch.columns.get(name, empty) for name in names])
    if entity == "contacts":
        attrs = schema.contact_attributes
        ids = batch.columns["contact_id"]
        if replace_keys:
            for first in range(0, batch.size, 500):
                conn.execute(delete(attrs).where(attrs.c.contact_id.in_(ids[first : first + 500])))
        if batch.custom is not None:
            kept = [i for i, a in enumerate(batch.custom) if a]
            values = [[ids[i] for i in kept], [json.dumps(batch.custom[i]) for i in kept]]
            if kept:
                _bulk_insert(conn, attrs, ["contact_id", "attributes"], values)
    return batch.size


def _new_keys(batch: Batch, entity: str, seen: set[Any]) -> Batch:
    """The batch without rows whose key was seen before in the same copy: the mirror's key is unique."""
    keys = KEYS[entity]
    if len(keys) == 1:
        values: Sequence[Any] = batch.columns[keys[0]]
    else:
        values = list(zip(*(batch.columns[k] for k in keys), strict=True))
    keep = []
    for i, key in enumerate(values):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return batch if len(keep) == batch.size else batch.take(keep)


def _rebuild(conn: Connection, entity: str, drop: bool) -> None:
    """A first copy loads the mirror without its secondary indexes (``drop``), then builds them and
    refreshes the planner's statistics, as the seeder does for the canonical tables."""
    mirror = schema.CRM_TABLES[entity]
    for index in sorted(mirror.indexes, key=lambda index: str(index.name)):
        conn.execute(DropIndex(index, if_exists=True) if drop else CreateIndex(index, if_not_exists=True))
    if not drop:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA analysis_limit=2000")
        conn.exec_driver_sql(f"ANALYZE {mirror.name}")


def _copy(
    conn: Connection, src: Connection, entity: str, parts: Sequence[_Part], first: bool
) -> tuple[int, int, str, list[Any]]:
    """Replace the mirror with the source rows in one pass, hashing them on the way unless every part
    has a watermark (later copies of those are incremental: no checksum is ever compared): (rows
    read, rows written, checksum, watermarks)."""
    hashed = not all(part.mapping.watermark for part in parts)
    conn.execute(delete(schema.CRM_TABLES[entity]))
    if entity == "contacts":
        conn.execute(delete(schema.contact_attributes))
    if first:
        _rebuild(conn, entity, drop=True)
    seen: set[Any] = set()
    total = read = written = 0
    tops: list[Any] = []
    for part in parts:
        top = None
        for batch in part.batches(src):
            total = (total + batch.checksum()) % (1 << 64) if hashed else 0
            read += batch.size
            top = batch.top(top)
            written += _write(conn, entity, _new_keys(batch, entity, seen), replace_keys=False)
        tops.append(dump_mark(top) if top is not None else None)
    _rebuild(conn, entity, drop=False)
    return read, written, f"{total:016x}" if hashed else "", tops


def _checksum(src: Connection, parts: Sequence[_Part]) -> tuple[int, str, list[Any]]:
    """Read the source rows only to hash them: (rows, checksum, watermarks)."""
    total = count = 0
    tops: list[Any] = []
    for part in parts:
        top = None
        for batch in part.batches(src):
            total = (total + batch.checksum()) % (1 << 64)
            count += batch.size
            top = batch.top(top)
        tops.append(dump_mark(top) if top is not None else None)
    return count, f"{total:016x}", tops


def sync_entity(source: Engine, state: Engine, entity: str, parts: Sequence[_Part]) -> SyncResult:
    """Bring one entity's mirror up to date with the source (see the module docstring)."""
    started = time.perf_counter()
    s = schema.source_sync
    mirror = schema.CRM_TABLES[entity]
    digest = hashlib.md5("".join(p.mapping.digest() for p in parts).encode()).hexdigest()[:16]
    with source.connect() as src:
        for part in parts:
            part.check_source(src)
        with state.begin() as conn:
            _lock(conn, entity)
            last = conn.execute(select(s).where(s.c.entity == entity)).mappings().first()
            same_mapping = last is not None and last["mapping"] == digest
            marks = (last["watermarks"] or []) if last is not None and same_mapping else None
            incremental = marks is not None and all(p.mapping.watermark for p in parts) and len(marks) == len(parts)
            read = written = 0
            if incremental:
                new_marks = []
                seen: set[Any] = set()
                changed: list[Batch] = []
                for part, mark in zip(parts, marks or [], strict=True):
                    top = load_mark(mark)
                    for batch in part.batches(src, top):
                        changed.append(batch)
                        top = batch.top(top)
                    new_marks.append(dump_mark(top) if top is not None else mark)
                for batch in changed:
                    read += batch.size
                    written += _write(conn, entity, _new_keys(batch, entity, seen), replace_keys=True)
                source_count = sum(src.execute(p.count()).scalar_one() for p in parts)
                mirror_count = conn.execute(select(func.count()).select_from(mirror)).scalar_one()
                if source_count == mirror_count:
                    _record(conn, entity, digest, new_marks, mirror_count, last["checksum"] if last else "")
                    mode = "incremental" if written else "unchanged"
                    return SyncResult(mode, read, written, round(time.perf_counter() - started, 3))
            elif same_mapping:
                # A previous copy of this mapping: hash first, and write only when the rows changed.
                count, checksum, tops = _checksum(src, parts)
                read += count
                if last is not None and last["checksum"] == checksum:
                    mirror_count = conn.execute(select(func.count()).select_from(mirror)).scalar_one()
                    if mirror_count == last["row_count"] == count:
                        _record(conn, entity, digest, tops, count, checksum)
                        return SyncResult("unchanged", read, written, round(time.perf_counter() - started, 3))
            # No previous copy, a changed mapping, changed rows or deleted ones: one pass that writes.
            copied, copied_written, checksum, tops = _copy(conn, src, entity, parts, first=last is None)
            read += copied
            written += copied_written
            mirror_count = conn.execute(select(func.count()).select_from(mirror)).scalar_one()
            _record(conn, entity, digest, tops, mirror_count, checksum)
    return SyncResult("full", read, written, round(time.perf_counter() - started, 3))


def _record(conn: Connection, entity: str, digest: str, marks: list[Any], count: int, checksum: str) -> None:
    s = schema.source_sync
    conn.execute(delete(s).where(s.c.entity == entity))
    conn.execute(
        s.insert().values(
            entity=entity,
            mapping=digest,
            watermarks=marks,
            row_count=count,
            checksum=checksum,
            synced_at=utc_naive(datetime.now().astimezone()),
        )
    )


def same_database(source_url: str, state_url: str) -> bool:
    """Whether the source and the state are one database (then nothing is copied)."""
    return source_url == state_url


def sync(
    source: Engine,
    state: Engine,
    sources: Sources | None,
    entities: Iterable[str],
    *,
    shared: bool,
    also: Iterable[str] = (),
) -> dict[str, SyncResult]:
    """Copy ``entities`` from the source into the state's mirror, then ``also`` (what other programs
    read, which capping weighs, and the accounts templates read) as far as they copy.

    A problem with one of ``entities`` raises :class:`SourceError` after the rest are copied; one
    with an entity of ``also`` is only logged (it breaks the programs that need it, not this one).
    ``shared``: the source and the state are one database; without a mapping nothing is copied, and
    a mapping is refused (its mirror would write into the source)."""
    wanted = list(dict.fromkeys(entities))
    extra = [e for e in dict.fromkeys([*also, *OPTIONAL]) if e not in wanted]
    if shared:
        if sources is not None:
            raise SourceError(
                sources.file,
                [
                    "the source and the state are one database, so the mapped copy would write into the source — "
                    "fix: configure the lifecycle_state connection (a database of its own for the engine's tables)"
                ],
            )
        return {entity: SyncResult("shared", 0, 0, 0.0) for entity in wanted}
    schema.crm_metadata.create_all(state, checkfirst=True)
    file = sources.file if sources is not None else Path(SOURCES_FILE)
    results: dict[str, SyncResult] = {}
    problems: list[str] = []
    for entity in [*wanted, *extra]:
        required = entity in wanted
        if sources is not None and (entity in sources.errors or entity not in sources.entities):
            # Left out or wrong in the file: the mirror stays as it is; programs that need it do not load.
            problems += sources.errors.get(entity, []) if required else []
            continue
        try:
            results[entity] = sync_entity(source, state, entity, entity_parts(entity, sources, file))
        except SourceError as exc:
            if required:
                problems += exc.problems
            else:
                log.warning("not copied (programs that read it will fail): %s", exc)
            continue
        log.info("sync %s: %s", entity, asdict(results[entity]))
    if problems:
        raise SourceError(file, problems)
    return results


def entities_for(program_id: str | None, fallback: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """What a run must copy (the entities ``program_id`` reads, else ``fallback``) and what it copies
    besides (what every other valid program reads: capping weighs their demand)."""
    from lifecycle import config
    from lifecycle.config.sources import entities_needed

    catalog = config.load_segments()
    try:
        policy: config.Policy | None = config.load_policy()
    except ConfigError:
        policy = None
    programs, _errors = config.load_all_programs()
    needs = {pid: list(entities_needed(p, catalog, policy)) for pid, p in programs.items()}
    own = needs.pop(program_id, list(fallback)) if program_id else list(fallback)
    if program_id and program_id not in programs:
        program = config.load_program(config_dir() / "programs" / f"{program_id}.yml", catalog)
        own = list(entities_needed(program, catalog, policy))
    others = sorted({e for entities in needs.values() for e in entities} - set(own))
    return own, others
