"""Consent captured with its proof: subscriptions from signup forms, pending until the person uses
the signed confirmation link (double opt-in), and paper forms imported from a CSV file.

A capture is a row of ``lifecycle_consent_captures`` in the state, keyed by the normalised address,
not by a contact: the CRM is read-only and a subscriber need not be a contact yet. Suppression
matches captures to contacts by address (and by the contact id recorded when it was confirmed), so
a subscriber the CRM later gains is covered from then on. A pending capture grants nothing; a
granted one (confirmed, or a paper form) counts as a granted consent from ``confirmed_at``, newest
row in force with the CRM's own consents.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import html
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import Connection, Select, func, insert, literal, select, update

from lifecycle import config
from lifecycle.channels import registry
from lifecycle.channels.email import EMAIL_CHANNEL
from lifecycle.messages import i18n
from lifecycle.model import schema
from lifecycle.model.db import utc_naive
from lifecycle.model.schema import CAPTURE_GRANTED, CAPTURE_PENDING, CONSENT_PURPOSES

K = schema.consent_captures
WEB_FORM = "web_form"
PAPER = "paper"
MARKETING = "marketing"
IMPORT_COLUMNS = ("email", "form_id", "form_version", "consent_text", "captured_at", "source")
"""The columns a CSV of paper forms must have (``purpose`` is optional: marketing by default)."""


def normalise_email(text: str) -> str | None:
    """The address as captures store and match it (trimmed, lower case), None when it is not one."""
    from email_validator import EmailNotValidError, validate_email

    address = text.strip().lower()
    if not address or len(address) > 320:
        return None
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return None
    return address


def ip_key(secret: str, ip: str) -> str:
    """A keyed hash of an IP address: enough to count its requests, not to read it back."""
    return hmac.new(secret.encode(), ip.encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Proof:
    """What a capture records as proof: the form and version, the consent text shown, when, and
    the IP address where the policy keeps it."""

    form_id: str
    form_version: str
    consent_text: str
    captured_at: datetime
    ip_address: str | None = None


def rate_limited(conn: Connection, address: str, key: str | None, now: datetime, rules: config.Capture) -> bool:
    """Whether the address, or the IP address behind ``key``, has made as many requests as the
    policy allows in its window (``capture.per_address``, ``capture.per_ip``)."""

    def count(condition: Any, since: timedelta) -> int:
        return int(conn.execute(select(func.count()).where(condition, K.c.captured_at > now - since)).scalar_one())

    if count(K.c.address == address, rules.per_address.per) >= rules.per_address.max:
        return True
    return key is not None and count(K.c.ip_key == key, rules.per_ip.per) >= rules.per_ip.max


def record_pending(conn: Connection, address: str, proof: Proof, key: str | None) -> int:
    """Record a subscription waiting for its confirmation link; returns its id."""
    return int(
        conn.execute(
            insert(K)
            .values(
                address=address,
                channel=EMAIL_CHANNEL.name,
                purpose=MARKETING,
                status=CAPTURE_PENDING,
                source=WEB_FORM,
                form_id=proof.form_id,
                form_version=proof.form_version,
                consent_text=proof.consent_text,
                captured_at=proof.captured_at,
                ip_address=proof.ip_address,
                ip_key=key,
            )
            .returning(K.c.capture_id)
        ).scalar_one()
    )


def _contact_for(conn: Connection, address: str) -> str | None:
    """The CRM contact with ``address``, when there is one (the first by id, when several share it)."""
    c = schema.contacts
    return conn.execute(
        select(c.c.contact_id).where(EMAIL_CHANNEL.address.of(c) == address).order_by(c.c.contact_id).limit(1)
    ).scalar_one_or_none()


class Confirmation(Enum):
    """What using a confirmation link did."""

    CONFIRMED = "confirmed"
    ALREADY_USED = "already_used"
    UNKNOWN = "unknown"


def confirm(conn: Connection, capture_id: int, now: datetime) -> Confirmation:
    """Grant a pending subscription, once: a second use of its link changes nothing."""
    address = conn.execute(select(K.c.address).where(K.c.capture_id == capture_id)).scalar_one_or_none()
    if address is None:
        return Confirmation.UNKNOWN
    granted = conn.execute(
        update(K)
        .where(K.c.capture_id == capture_id, K.c.status == CAPTURE_PENDING)
        .values(status=CAPTURE_GRANTED, confirmed_at=now, contact_id=_contact_for(conn, address))
    ).rowcount
    return Confirmation.CONFIRMED if granted else Confirmation.ALREADY_USED


def confirmation_email(
    brand: config.Brand, form: config.ConsentForm, url: str, language: str = i18n.DEFAULT
) -> tuple[str, str, str]:
    """The confirmation email's subject, HTML and text in ``language`` (the form's): the consent text
    agreed to (the operator's words, as shown) and the link."""

    def say(key: str, **values: str) -> str:
        return i18n.text(language, key, **values)

    subject = say("email_subject", brand=brand.name)
    text = (
        f"{say('email_intro', brand=brand.name)}\n\n"
        f"{say('email_agreed', consent=form.consent_text)}\n\n{say('email_confirm')}: {url}\n\n"
        f"{say('email_ignore')}\n"
        f"{brand.postal_address}\n"
    )
    body = (
        f'<div lang="{html.escape(language)}">'
        f"<p>{html.escape(say('email_intro', brand=brand.name))}</p>"
        f"<p>{html.escape(say('email_agreed', consent=form.consent_text))}</p>"
        f'<p><a href="{html.escape(url)}">{html.escape(say("confirm_button"))}</a></p>'
        f"<p>{html.escape(say('email_ignore'))}</p>"
        f"<p>{html.escape(brand.postal_address)}</p></div>"
    )
    return subject, body, text


# --- paper forms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    """One valid row of a CSV of paper forms, ready to record."""

    line: int
    address: str
    purpose: str
    proof: Proof

    @property
    def import_key(self) -> str:
        """The row's identity: the same form for the same address at the same time is one consent."""
        parts = (
            self.address,
            self.purpose,
            self.proof.form_id,
            self.proof.form_version,
            self.proof.captured_at.isoformat(),
        )
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _captured_at(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value
    return utc_naive(value)


def _row_problems(line: int, row: dict[str, Any], now: datetime) -> tuple[Imported | None, list[str]]:
    problems = []
    email = (row.get("email") or "").strip()
    address = normalise_email(email)
    if address is None:
        problems.append(f"line {line}: email {email!r} is not an email address — fix: write one address, name@domain")
    for column in ("form_id", "form_version", "consent_text"):
        if not (row.get(column) or "").strip():
            problems.append(f"line {line}: {column} is empty — fix: copy it from the paper form")
    captured: datetime | None = None
    try:
        captured = _captured_at(row.get("captured_at") or "")
    except ValueError:
        problems.append(
            f"line {line}: captured_at {row.get('captured_at')!r} is not a date-time — fix: write ISO 8601, "
            "e.g. 2026-03-01T10:00:00Z (the date the form was signed)"
        )
    if captured is not None and captured > now:
        problems.append(f"line {line}: captured_at {captured.isoformat()} is in the future — fix: the signing date")
    source = (row.get("source") or "").strip()
    if source != PAPER:
        problems.append(f"line {line}: source {source!r} is not {PAPER} — fix: write {PAPER} (a form signed on paper)")
    purpose = (row.get("purpose") or MARKETING).strip()
    if purpose not in CONSENT_PURPOSES:
        problems.append(f"line {line}: purpose {purpose!r} is not one of {list(CONSENT_PURPOSES)} — fix: use one")
    if problems or address is None or captured is None:
        return None, problems
    proof = Proof(row["form_id"].strip(), row["form_version"].strip(), row["consent_text"].strip(), captured)
    return Imported(line, address, purpose, proof), []


def read_import(lines: Iterable[str], now: datetime) -> tuple[list[Imported], list[str]]:
    """The rows of a CSV of paper forms, and every problem found, by line number, with its fix.
    ``now`` bounds ``captured_at`` (a form cannot be signed in the future)."""
    reader = csv.DictReader(lines)
    missing = [column for column in IMPORT_COLUMNS if column not in (reader.fieldnames or ())]
    if missing:
        return [], [f"line 1: the header lacks {missing} — fix: the columns are {', '.join(IMPORT_COLUMNS)}"]
    rows, problems = [], []
    for row in reader:
        if None in row:
            problems.append(f"line {reader.line_num}: more fields than the header — fix: quote text that has commas")
            continue
        found, wrong = _row_problems(reader.line_num, row, now)
        problems += wrong
        if found is not None:
            rows.append(found)
    return rows, problems


def import_rows(conn: Connection, rows: Iterable[Imported]) -> tuple[int, int]:
    """Record paper forms as granted consents (a signed form is its own confirmation); a row already
    imported (the same address, form and time) is skipped. Returns (imported, skipped)."""
    imported = skipped = 0
    for row in rows:
        key = row.import_key
        if conn.execute(select(K.c.capture_id).where(K.c.import_key == key)).first() is not None:
            skipped += 1
            continue
        conn.execute(
            insert(K).values(
                address=row.address,
                channel=EMAIL_CHANNEL.name,
                purpose=row.purpose,
                status=CAPTURE_GRANTED,
                source=PAPER,
                form_id=row.proof.form_id,
                form_version=row.proof.form_version,
                consent_text=row.proof.consent_text,
                captured_at=row.proof.captured_at,
                confirmed_at=row.proof.captured_at,
                contact_id=_contact_for(conn, row.address),
                import_key=key,
            )
        )
        imported += 1
    return imported, skipped


def granted_rows(contact_id: Any, channel: str, purpose: str, at: datetime) -> Select[Any]:
    """SQL: the contact's granted captures for ``channel`` and ``purpose`` in effect at ``at``, as
    consent rows (``granted``, when it took effect), for the consent check to weigh with the CRM's
    consents. A capture counts for the contact it is matched to (:func:`match_contacts`)."""
    return (
        select(literal(CAPTURE_GRANTED).label("status"), K.c.confirmed_at.label("at"))
        .where(
            K.c.contact_id == contact_id,
            K.c.channel == channel,
            K.c.purpose == purpose,
            K.c.status == CAPTURE_GRANTED,
            K.c.confirmed_at <= at,
        )
        .correlate_except(K)
    )


def match_contacts(conn: Connection) -> int:
    """Match granted captures that have no contact yet to the CRM contact with their address (the
    first by id, when several share it), now that the CRM may have gained one. Reads the contacts
    only when such captures exist; returns how many were matched."""
    unmatched = select(K.c.address).where(K.c.contact_id.is_(None), K.c.status == CAPTURE_GRANTED)
    if conn.execute(unmatched.limit(1)).first() is None:
        return 0
    c = schema.contacts
    matched = 0
    channels = conn.execute(select(K.c.channel).where(K.c.contact_id.is_(None)).distinct()).scalars().all()
    for channel in channels:
        address = registry.get(channel).address.of(c)
        rows = conn.execute(
            select(c.c.contact_id, address.label("address"))
            .where(address.in_(unmatched.where(K.c.channel == channel)))
            .order_by(c.c.contact_id)
        )
        first: dict[str, str] = {}
        for row in rows:
            first.setdefault(row.address, row.contact_id)
        for found, contact_id in first.items():
            matched += conn.execute(
                update(K)
                .where(K.c.contact_id.is_(None), K.c.channel == channel, K.c.address == found)
                .values(contact_id=contact_id)
            ).rowcount
    return matched
