"""The source mapping (``config/sources.yml``): how a user's own tables become the canonical CRM model.

One entry per canonical entity (``contacts``, ``accounts``, ``consents``, ``events``,
``subscriptions``, ``opportunities``, ``tickets``); an entity a business lacks is left out. An
entry is one mapping or a list of them (their rows together make the entity)::

    contacts:
      table: analytics.users            # or query: "SELECT ... FROM ..."
      watermark: updated_at             # optional: copy only rows changed since the last sync
      columns:                          # canonical column -> source column or SQL expression
        contact_id: id
        lifecycle_stage: stage
      values:                           # canonical value -> source value(s)
        lifecycle_stage: {customer: customer_active, lead: [lead, mql]}

Without the file the source *is* the canonical model. This module checks the file without a
database: the file, the entry, the field and the fix for anything wrong. What only the source can
tell (a missing table or column, a wrong type, a value outside a mapped vocabulary) is checked by
the sync stage (:mod:`lifecycle.engine.sync`) with the same kind of message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, model_validator
from sqlalchemy import JSON

from lifecycle.config import ConfigError, _describe, _read_yaml, _Strict
from lifecycle.config.segments import JOURNEY_REFS, TIME_WINDOWS, custom_used, tables_used
from lifecycle.model import channels, schema
from lifecycle.model.ledger import PolicyRule, SuppressionReason
from lifecycle.paths import config_dir

if TYPE_CHECKING:
    from lifecycle.config import Policy, Program, SegmentCatalog

ENTITIES: tuple[str, ...] = tuple(schema.CRM_TABLES)
KEYS: Mapping[str, tuple[str, ...]] = {
    "contacts": ("contact_id",),
    "accounts": ("account_id",),
    "consents": ("contact_id", "channel", "purpose", "captured_at"),
    "events": ("event_id",),
    "subscriptions": ("subscription_id",),
    "opportunities": ("opportunity_id",),
    "tickets": ("ticket_id",),
}
"""What identifies a row of each entity: a source row copied again replaces the mirror's row."""

VOCABULARIES: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("contacts", "lifecycle_stage"): schema.LIFECYCLE_STAGES,
    ("contacts", "churn_reason"): schema.CHURN_REASONS,
    ("consents", "channel"): tuple(channels.names()),
    ("consents", "purpose"): schema.CONSENT_PURPOSES,
    ("consents", "status"): schema.CONSENT_STATUSES,
    ("subscriptions", "status"): schema.SUBSCRIPTION_STATUSES,
    ("subscriptions", "billing_status"): schema.BILLING_STATUSES,
    ("opportunities", "stage"): schema.OPPORTUNITY_STAGES,
    ("tickets", "status"): schema.TICKET_STATUSES,
}
"""Canonical columns with a closed vocabulary: every mapped source value must land in it."""

ALWAYS_NEEDED = ("contacts", "consents")
"""Every program reads its contacts and their consents (suppression)."""

RULE_ENTITIES: Mapping[PolicyRule, str] = {
    SuppressionReason.OPEN_SUPPORT_TICKET: "tickets",
    SuppressionReason.IN_SALES_NEGOTIATION: "opportunities",
    SuppressionReason.RECENT_PURCHASE: "events",
}
"""The entity each policy suppression rule reads."""

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SOURCES_FILE = "sources.yml"


def required_columns(entity: str) -> tuple[str, ...]:
    """The canonical columns a mapping of ``entity`` must give: its key and its NOT NULL columns."""
    table = schema.CRM_TABLES[entity]
    return tuple(dict.fromkeys([*KEYS[entity], *(c.name for c in table.columns if not c.nullable)]))


def is_json(entity: str, column: str) -> bool:
    """Whether a canonical column holds JSON (``events.properties``)."""
    return isinstance(schema.CRM_TABLES[entity].c[column].type, JSON)


CUSTOM_TYPES = ("text", "number", "boolean", "timestamp")
CUSTOM_ENTITIES = ("contacts", "events")
CUSTOM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class CustomAttribute(_Strict):
    """An extra field of a contact or an event: its type and the source column or SQL expression."""

    type: str = "text"
    source: str

    @model_validator(mode="after")
    def _known_type(self) -> CustomAttribute:
        if self.type not in CUSTOM_TYPES:
            raise ValueError(f"type {self.type!r} is not one of {list(CUSTOM_TYPES)}")
        return self


class EntityMapping(_Strict):
    """One source table or query mapped onto a canonical entity."""

    table: str | None = None
    query: str | None = None
    columns: dict[str, str | dict[str, str]]
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)
    watermark: str | None = None
    custom: dict[str, CustomAttribute | str] = Field(default_factory=dict)

    def custom_attributes(self) -> dict[str, CustomAttribute]:
        """The declared custom attributes, a bare source being a text attribute."""
        return {
            name: spec if isinstance(spec, CustomAttribute) else CustomAttribute(source=spec)
            for name, spec in self.custom.items()
        }

    @model_validator(mode="after")
    def _one_source(self) -> EntityMapping:
        if (self.table is None) == (self.query is None):
            raise ValueError("give either table (a source table) or query (a SELECT), not both or neither")
        return self

    def source_values(self, column: str) -> dict[Any, str]:
        """Source value -> canonical value for ``column`` (empty: copied as they are)."""
        out: dict[Any, str] = {}
        for canonical, source in self.values.get(column, {}).items():
            for value in source if isinstance(source, list) else [source]:
                out[value] = canonical
        return out

    def digest(self) -> str:
        """A short fingerprint: a changed mapping copies its entity afresh."""
        return hashlib.md5(json.dumps(self.model_dump(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def identity_mapping(entity: str) -> EntityMapping:
    """The mapping of a source that already holds the canonical table (no sources.yml)."""
    columns: dict[str, str | dict[str, str]] = {c.name: c.name for c in schema.CRM_TABLES[entity].columns}
    return EntityMapping(table=entity, columns=columns)


def _entry_problems(entity: str, where: str, mapping: EntityMapping) -> list[str]:
    table = schema.CRM_TABLES[entity]
    known = [c.name for c in table.columns]
    problems = []
    for column, source in mapping.columns.items():
        if column not in table.c:
            problems.append(f"{where}.columns.{column}: {entity} has no column {column!r} — fix: use one of {known}")
        elif isinstance(source, dict) and not is_json(entity, column):
            problems.append(
                f"{where}.columns.{column}: only a JSON column takes a mapping of properties — fix: give one "
                "source column or SQL expression"
            )
    missing = [c for c in required_columns(entity) if c not in mapping.columns]
    if missing:
        problems.append(
            f"{where}.columns: {', '.join(missing)} not mapped — fix: map {'them' if len(missing) > 1 else 'it'} "
            f"to a source column or an expression (a constant is written in quotes: \"'email'\")"
        )
    for column, spec in mapping.values.items():
        if column not in mapping.columns:
            problems.append(f"{where}.values.{column}: the column is not mapped — fix: map it under columns first")
            continue
        vocabulary = VOCABULARIES.get((entity, column))
        wrong = [v for v in spec if vocabulary is not None and v not in vocabulary]
        if wrong:
            problems.append(
                f"{where}.values.{column}: {', '.join(map(repr, wrong))} not a canonical {column} — fix: map "
                f"source values onto {list(vocabulary or ())}"
            )
    if mapping.custom and entity not in CUSTOM_ENTITIES:
        problems.append(
            f"{where}.custom: only contacts and events take custom attributes — fix: move them to contacts or events"
        )
    for name in mapping.custom:
        if not CUSTOM_NAME.match(name):
            problems.append(
                f"{where}.custom.{name}: not a usable name — fix: lower-case letters, digits and _, a letter first"
            )
        elif (
            entity == "events"
            and isinstance(mapping.columns.get("properties"), dict)
            and name in mapping.columns["properties"]
        ):
            problems.append(
                f"{where}.custom.{name}: also a mapped property — fix: keep one (event attributes are properties)"
            )
    if mapping.watermark is not None and not mapping.watermark.strip():
        problems.append(f"{where}.watermark: empty — fix: name a source column that grows when a row changes")
    return problems


@dataclass(frozen=True)
class Sources:
    """The mapping file, read: the entities mapped, and the problems of every entity that is wrong."""

    file: Path
    entities: dict[str, tuple[EntityMapping, ...]]
    errors: dict[str, list[str]] = field(default_factory=dict)

    def custom_attributes(self, entity: str) -> dict[str, CustomAttribute]:
        """Every custom attribute ``entity``'s mapping parts declare (the first declaration of a name wins)."""
        out: dict[str, CustomAttribute] = {}
        for mapping in self.entities.get(entity, ()):
            for name, spec in mapping.custom_attributes().items():
                out.setdefault(name, spec)
        return out

    def problems_for(self, entity: str, needed_by: str) -> list[str]:
        """Why ``entity`` cannot feed ``needed_by`` (a program's reason to read it); empty when it can."""
        if entity in self.errors:
            return self.errors[entity]
        if entity not in self.entities:
            return [
                f"{entity}: not mapped, and {needed_by} — fix: map {entity} in {self.file.name} (see README, "
                "'Bring your own data'), or change the program so it does not read it"
            ]
        return []


def load_sources(path: Path | None = None) -> Sources | None:
    """Read ``config/sources.yml``; ``None`` when there is none (the source is the canonical model).

    A file that cannot be read at all raises :class:`ConfigError`; a wrong entity is kept in
    :attr:`Sources.errors`, so only the programs that read it break."""
    path = path or config_dir() / SOURCES_FILE
    if not path.exists():
        return None
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(path, ["the file must hold a mapping of entities (contacts:, events: ...)"])
    unknown = [key for key in data if key not in ENTITIES]
    if unknown:
        raise ConfigError(
            path, [f"{key}: not a canonical entity — fix: use one of {list(ENTITIES)}" for key in unknown]
        )
    entities: dict[str, tuple[EntityMapping, ...]] = {}
    errors: dict[str, list[str]] = {}
    for entity, spec in data.items():
        parts = spec if isinstance(spec, list) else [spec]
        mappings, problems = [], []
        for i, part in enumerate(parts):
            where = f"{entity}[{i}]" if isinstance(spec, list) else entity
            if not isinstance(part, dict):
                problems.append(f"{where}: write a mapping (table or query, columns...) — fix: see the README")
                continue
            try:
                mapping = EntityMapping.model_validate(part)
            except ValidationError as exc:
                problems += [f"{where}.{_describe(e)}".replace(f"{where}.(top level)", where) for e in exc.errors()]
                continue
            problems += _entry_problems(entity, where, mapping)
            mappings.append(mapping)
        if problems or not parts:
            errors[entity] = problems or [f"{entity}: empty — fix: map it, or leave the entity out"]
        else:
            entities[entity] = tuple(mappings)
    return Sources(path, entities, errors)


def entities_needed(program: Program, catalog: SegmentCatalog, policy: Policy | None) -> dict[str, str]:
    """The entities ``program`` reads, each with why (for the message when one is missing)."""
    needed = {entity: f"every program reads {entity}" for entity in ALWAYS_NEEDED}
    from lifecycle.config import _program_segments

    for where, expr in _program_segments(program):
        for entity in sorted(tables_used(expr.parsed, catalog.parsed)):
            needed.setdefault(entity, f"program {program.id} reads it in {where}")
    if program.audience.trigger_event:
        needed.setdefault("events", f"program {program.id} reads it in audience.trigger_event")
    if program.audience.anchor is not None:
        needed.setdefault(program.audience.anchor.table, f"program {program.id} reads it in audience.anchor")
    for rule, entity in RULE_ENTITIES.items():
        if policy is not None and policy.applies(rule, program):
            needed.setdefault(entity, f"policy rule {rule} applies to program {program.id}")
    return needed


def program_problems(program: Program, sources: Sources, catalog: SegmentCatalog, policy: Policy | None) -> list[str]:
    """Why ``program`` cannot run on the mapped source; empty when every entity it reads is mapped."""
    problems: list[str] = []
    for entity, why in entities_needed(program, catalog, policy).items():
        problems += sources.problems_for(entity, why)
    return problems + custom_problems(program, sources, catalog)


def custom_problems(program: Program, sources: Sources | None, catalog: SegmentCatalog) -> list[str]:
    """The custom contact attributes ``program``'s segments read that the mapping does not declare,
    or compare in a way their type does not allow."""
    from lifecycle.config import _program_segments

    declared = sources.custom_attributes("contacts") if sources is not None else {}
    file = sources.file.name if sources is not None else SOURCES_FILE
    problems = []
    for where, expr in _program_segments(program):
        for name, (path, op) in custom_used(expr.parsed, catalog.parsed, where).items():
            spec = declared.get(name)
            if spec is None:
                problems.append(
                    f"{path}: custom.{name} is not a custom attribute of contacts (program {program.id}) — fix: "
                    f"declare it under contacts.custom in {file} (name: {{type: text, source: <column>}}), "
                    f"or use one of {sorted(declared) or 'the built-in columns'}"
                )
            elif (op in TIME_WINDOWS or op in JOURNEY_REFS) and spec.type != "timestamp":
                problems.append(
                    f"{path}: {op} needs a timestamp, and custom.{name} is {spec.type} (program {program.id}) — "
                    f"fix: compare it with eq/in/gt..., or declare it with type: timestamp in {file}"
                )
    return problems
