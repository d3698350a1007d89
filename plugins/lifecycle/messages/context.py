"""The template context: the one way a ledger message plus CRM data becomes what templates see.

Sending and previews (``lifecycle preview``, test copies) read the CRM through the same columns
(:func:`crm_columns`), the same row reader (:func:`read_crm`, which survives what a CRM may hold:
text in a timestamp column, broken JSON) and the same :func:`template_context`, so a preview
shows exactly what the send task would render. Addresses are loaded (normalised) for sending but
never exposed to a template.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Table, Text, select, type_coerce
from sqlalchemy.sql.elements import ColumnElement

from lifecycle.model import schema
from lifecycle.model.addresses import email_address, phone_number
from lifecycle.model.db import Record
from lifecycle.model.ledger import OutcomeReason

CONTACT_FIELDS = (
    "contact_id",
    "first_name",
    "last_name",
    "country",
    "region",
    "timezone",
    "locale",
    "role",
    "industry",
    "lifecycle_stage",
    "plan",
    "mrr",
    "ltv",
    "owner",
    "churn_reason",
    "created_at",
    "last_active_at",
)
ACCOUNT_FIELDS = ("name", "industry", "tier")
_TIMESTAMPS = frozenset(c.name for c in schema.contacts.c if isinstance(c.type, DateTime))


@dataclass(frozen=True)
class MessageData:
    """What one message's templates are rendered from: its place in a program and the CRM's rows."""

    program: str
    step: str
    variant: str | None
    contact: Mapping[str, Any]
    account: Mapping[str, Any] | None
    trigger: Mapping[str, Any] | None


def crm_columns(contacts: Table, accounts: Table, trigger: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    """The labelled columns :func:`read_crm` reads: every contact column (timestamps as text, so a
    bad value reaches Python instead of failing the query; addresses normalised), the account's
    template fields and the trigger event's properties."""
    return [
        *(
            (type_coerce(c, Text) if c.name in _TIMESTAMPS else c).label(f"contact__{c.name}")
            for c in contacts.c
            if c.name not in ("email", "phone")
        ),
        email_address(contacts).label("contact__email"),
        phone_number(contacts).label("contact__phone"),
        *(accounts.c[name].label(f"account__{name}") for name in ACCOUNT_FIELDS),
        type_coerce(trigger, Text).label("trigger"),
        type_coerce(
            select(schema.contact_attributes.c.attributes)
            .where(schema.contact_attributes.c.contact_id == contacts.c.contact_id)
            .scalar_subquery(),
            Text,
        ).label("contact_custom"),
        *(
            select(schema.scores.c[column])
            .where(schema.scores.c.contact_id == contacts.c.contact_id, schema.scores.c.score == name)
            .scalar_subquery()
            .label(f"score__{name}__{column}")
            for name in schema.SCORE_NAMES
            for column in ("value", "decile")
        ),
    ]


def _json_object(value: Any) -> Mapping[str, Any] | None:
    """A JSON column's value as a mapping or None; ValueError for broken JSON or any other value."""
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, Mapping | None):
        raise ValueError("not a JSON object")
    return parsed


def _custom(value: Any) -> dict[str, Any]:
    """The contact's custom attributes; timestamps (``YYYY-MM-DD HH:MM:SS.ffffff`` text) as datetimes."""
    out = dict(_json_object(value) or {})
    for name, item in out.items():
        if isinstance(item, str) and len(item) == 26 and item[4] == "-" and item[10] == " ":
            with contextlib.suppress(ValueError):
                out[name] = datetime.fromisoformat(item)
    return out


def read_crm(
    row: Record,
) -> tuple[dict[str, Any], dict[str, Any], Mapping[str, Any] | None, str | None]:
    """The contact, account and trigger of a row selected with :func:`crm_columns`, and what could
    not be read (None when all of it could)."""
    contact: dict[str, Any] = {}
    problems: list[str] = []
    for column in schema.contacts.c:
        value = row[f"contact__{column.name}"]
        if column.name in _TIMESTAMPS and isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = None
                problems.append(f"contacts.{column.name} is not a timestamp")
        contact[column.name] = value
    try:
        contact["custom"] = _custom(row["contact_custom"])
    except ValueError:
        contact["custom"] = {}
        problems.append("the contact's custom attributes are not a JSON object")
    contact["scores"] = {name: row[f"score__{name}__value"] for name in schema.SCORE_NAMES}
    contact["score_deciles"] = {name: row[f"score__{name}__decile"] for name in schema.SCORE_NAMES}
    account = {name: row[f"account__{name}"] for name in ACCOUNT_FIELDS}
    try:
        trigger = _json_object(row["trigger"])
    except ValueError:
        trigger = None
        problems.append("the trigger event's properties are not a JSON object")
    problem = f"{OutcomeReason.UNREADABLE_CRM_DATA}: {'; '.join(problems)}" if problems else None
    return contact, account, trigger, problem


def template_context(data: MessageData, links: Mapping[str, str], brand: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a template sees: the contact's non-address fields (its custom attributes under
    ``contact.custom``), the account, the trigger
    event's properties, the A/B variant, the program and step, links, the brand, and the contact's
    published predictive scores (``scores.churn_risk``: a probability, ``score_deciles.churn_risk``:
    1..10; None where the contact has none)."""
    scores = data.contact.get("scores") or {}
    deciles = data.contact.get("score_deciles") or {}
    return {
        "contact": {k: data.contact.get(k) for k in CONTACT_FIELDS}
        | {"custom": dict(data.contact.get("custom") or {})},
        "account": {k: (data.account or {}).get(k) for k in ACCOUNT_FIELDS},
        "trigger": dict(data.trigger or {}),
        "variant": data.variant,
        "program": data.program,
        "step": data.step,
        "links": dict(links),
        "brand": dict(brand),
        "scores": {name: scores.get(name) for name in schema.SCORE_NAMES},
        "score_deciles": {name: deciles.get(name) for name in schema.SCORE_NAMES},
    }
