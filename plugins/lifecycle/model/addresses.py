"""The address a message goes to: the data-hygiene result when there is one, else the CRM value
cleaned up in SQL (trimmed and lowercased email; phone without spaces, dashes, dots or brackets).

Suppression checks and sending both use these expressions, so the address that was checked is
the address that is used. Each channel names the :class:`Address` it sends to (:data:`EMAIL`,
:data:`PHONE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, null, select, true
from sqlalchemy.sql.expression import ColumnElement, FromClause

from lifecycle.model import schema
from lifecycle.model.db import valid_e164, valid_email

if TYPE_CHECKING:
    from phonenumbers import PhoneNumber

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


@dataclass(frozen=True)
class Address:
    """A kind of contact address: the ``contacts`` column it comes from (also its key in a contact
    loaded for sending), the normalised SQL expression for a contacts row, the SQL check that it is
    valid, and data hygiene's verdict on it (``lifecycle_contact_quality`` columns)."""

    column: str
    of: Callable[[Any], ColumnElement[Any]]
    is_valid: Callable[[ColumnElement[Any]], ColumnElement[bool]]
    verdict: ColumnElement[Any]
    problem: ColumnElement[Any]


EMAIL = Address("email", email_address, valid_email, Q.c.email_valid, Q.c.email_problem)
PHONE = Address("phone", phone_number, valid_e164, Q.c.phone_valid, Q.c.phone_problem)
CONTACT_ID = Address("contact_id", lambda contacts: contacts.c.contact_id, lambda _id: true(), true(), null())
"""The contact's own id, for channels that reach a system rather than an inbox (webhooks): always
present, always valid."""
OWNER = Address(
    "owner", lambda contacts: func.nullif(func.trim(contacts.c.owner), ""), lambda _owner: true(), true(), null()
)
"""The contact's owner in the CRM (``contacts.owner``, a salesperson's user id), for channels that
reach the owner about the contact (sales tasks): a contact without one has no address."""


def phone_region(country: str | None) -> str | None:
    """A contact's country as the default region to read its phone in: ISO alpha-2, whatever the
    CRM wrapped it in (spaces, lower case, full-width letters); None when there is none."""
    import unicodedata

    region = unicodedata.normalize("NFKC", country or "").strip().upper()
    return region or None


def parse_phone(raw: str, country: str | None) -> PhoneNumber:
    """Read a CRM phone number with the contact's country as the default region: the one reading
    data hygiene, sending and the STOP lookup share. Raises ``phonenumbers.NumberParseException``."""
    import phonenumbers  # only where numbers are read: the program schema imports this module too

    return phonenumbers.parse(raw, phone_region(country))


def to_e164(raw: str | None, region: str | None = None) -> str | None:
    """A phone number in E.164 form (``+14155550100``), read as :func:`parse_phone` reads it; None
    when it cannot be a phone number."""
    import phonenumbers

    if not raw:
        return None
    try:
        number = parse_phone(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
