"""The address a message goes to: the data-hygiene result when there is one, else the CRM value
cleaned up in SQL (trimmed and lowercased email; phone without spaces, dashes, dots or brackets).

Suppression checks and sending both use these expressions, so the address that was checked is
the address that is used.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.sql.expression import ColumnElement, FromClause

from lifecycle.model import schema

Q = schema.contact_quality


def _clean_phone(column: ColumnElement) -> ColumnElement:
    for char in (" ", "-", "(", ")", "."):
        column = func.replace(column, char, "")
    return column


def email_address(contacts: FromClause) -> ColumnElement:
    """The email to use for a row of ``contacts`` (a contacts table or alias)."""
    checked = (
        select(Q.c.email_normalized)
        .where(Q.c.contact_id == contacts.c.contact_id, Q.c.email_valid.is_(True))
        .scalar_subquery()
    )
    return func.coalesce(checked, func.lower(func.trim(contacts.c.email)))


def phone_number(contacts: FromClause) -> ColumnElement:
    """The phone number to use for a row of ``contacts`` (a contacts table or alias)."""
    checked = (
        select(Q.c.phone_e164)
        .where(Q.c.contact_id == contacts.c.contact_id, Q.c.phone_valid.is_(True))
        .scalar_subquery()
    )
    return func.coalesce(checked, _clean_phone(func.trim(contacts.c.phone)))


def address(channel: str, contacts: FromClause) -> ColumnElement:
    """The address for ``channel`` (email or sms)."""
    return email_address(contacts) if channel == "email" else phone_number(contacts)
