"""Paid-audience sync: a program's members kept as an ad platform's audience (``audience_sync``).

Who is in it, as of the run:

- the program's members: ``enrolled`` (default), the contacts in an active enrollment of the
  treatment group, so a contact who converted (the exit goal) or met an exit rule leaves; or
  ``segment``, the entry segment's members as of the run (the run's ``lifecycle_audience``
  snapshot), less the program holdout and the global control group;
- with consent for the ``ads`` purpose: the newest ``consents`` row of purpose ``ads`` (on any
  channel) in force at the as-of time is ``granted`` (no row, ``withdrawn`` or ``denied`` is no
  consent; of rows at the same moment, a non-granted one wins);
- not opted out of everything (``unsubscribed`` on every inbox channel, what "unsubscribe from all"
  records); a contact erased from the CRM has no contacts row, so it is in nothing.

Each member is one row of SHA-256 hashes (lowercase hex) of its normalised identifiers: the email
trimmed and lowercased; the phone read into E.164 with the contact's country
(:func:`lifecycle.model.addresses.to_e164`), hashed as Meta asks, digits only with the country code
(``+14155550100`` → ``14155550100``). An identifier that cannot be read is sent empty; a member with
neither is left out. Two contacts with the same identifiers are one row.

Each run sends the difference between those rows and the rows recorded as synced
(``lifecycle_ad_audience_members``, migration 0016): removes, then adds, in batches of
``batch_size`` rows (Meta takes 10,000 a request). Each batch is recorded right after the platform
took it, so a re-run or a retried task sends only what is still missing. A crash between a request
and its record sends that batch again on the next run: the platform treats adding a row it holds,
or removing one it does not, as a no-op, so the replay is harmless. No address is ever logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Connection, Engine, and_, bindparam, case, delete, func, insert, select
from sqlalchemy.sql.expression import ColumnElement

from lifecycle.channels.retry import ProviderError
from lifecycle.config import AudienceSync
from lifecycle.engine import journeys, suppression
from lifecycle.engine.scope import RunScope
from lifecycle.model import schema
from lifecycle.model.addresses import EMAIL, PHONE, to_e164
from lifecycle.model.ledger import EnrollmentState

log = logging.getLogger(__name__)

ADS_PURPOSE = "ads"
"""The consent purpose that lets a contact be matched into ad audiences."""
SCHEMA = {"email": "EMAIL_SHA256", "phone": "PHONE_SHA256"}
"""The platform's schema name of each identifier's hash."""
ADD: Literal["add"] = "add"
REMOVE: Literal["remove"] = "remove"

Row = tuple[str, ...]
"""One member as uploaded: the hash of each configured identifier, in order ('' for one not known)."""
Upload = Callable[[Literal["add", "remove"], Sequence[str], Sequence[Row]], object]
"""``upload(action, schema, rows)``: add or remove one batch of rows; raises
:class:`~lifecycle.channels.retry.ProviderError` when the platform did not take it."""

A = schema.ad_audience_members
S = schema.ad_audience_syncs
C = schema.contacts
E = schema.enrollments


class AudienceSyncError(RuntimeError):
    """The platform did not take a batch: what was taken is recorded, the rest waits for the next run."""


# --- normalising and hashing ----------------------------------------------------------------


def normalise_email(raw: str | None) -> str | None:
    """The email as the ad platforms hash it, trimmed and lowercased; None when it is no address."""
    email = (raw or "").strip().lower()
    local, at, domain = email.partition("@")
    if not (local and at and "." in domain) or any(ch.isspace() for ch in email) or "@" in domain:
        return None
    return email


def normalise_phone(raw: str | None, country: str | None = None) -> str | None:
    """The phone in E.164 (``+14155550100``), read with the contact's country; None when it cannot be."""
    return to_e164((raw or "").strip() or None, country)


def sha256(text: str) -> str:
    """The lowercase hex SHA-256 of ``text`` (UTF-8), as the platforms want it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hashed_email(raw: str | None) -> str:
    """The email's hash, '' when there is no email."""
    email = normalise_email(raw)
    return sha256(email) if email else ""


def hashed_phone(raw: str | None, country: str | None = None) -> str:
    """The phone's hash as Meta matches it: E.164 without its ``+``; '' when there is no phone."""
    e164 = normalise_phone(raw, country)
    return sha256(e164.removeprefix("+")) if e164 else ""


def member_row(
    identifiers: Sequence[str], email: str | None, phone: str | None, country: str | None = None
) -> Row | None:
    """The row a contact is uploaded as (one hash per identifier); None when it has none of them."""
    hashes = {"email": lambda: hashed_email(email), "phone": lambda: hashed_phone(phone, country)}
    row = tuple(hashes[name]() for name in identifiers)
    return row if any(row) else None


# --- who is in the audience -----------------------------------------------------------------


def _ads_consent(contact_id: ColumnElement, at: datetime) -> ColumnElement:
    """The status of the contact's newest ``ads`` consent row in force at ``at`` (any channel)."""
    k = schema.consents.alias("ads_consent")
    return (
        select(k.c.status)
        .where(k.c.contact_id == contact_id, k.c.purpose == ADS_PURPOSE, k.c.captured_at <= at)
        .order_by(k.c.captured_at.desc(), case((k.c.status == "granted", 1), else_=0))
        .limit(1)
        .correlate_except(k)
        .scalar_subquery()
    )


def _members(run: RunScope, sync: AudienceSync) -> ColumnElement[bool]:
    """True for a contact id (``contacts.contact_id``) that is one of the program's members."""
    program = run.program
    if sync.members == "segment":
        a = schema.audience
        in_segment = (
            select(a.c.contact_id)
            .where(a.c.program == program.id, a.c.run_id == run.run_id, a.c.contact_id == C.c.contact_id)
            .exists()
        )
        return and_(in_segment, journeys.group_expr(program, run.policy, C.c.contact_id) == "treatment")
    return (
        select(E.c.contact_id)
        .where(
            E.c.program == program.id,
            E.c.contact_id == C.c.contact_id,
            E.c.state == EnrollmentState.ACTIVE,
            E.c.group == "treatment",
            E.c.enrolled_at <= run.as_of,
        )
        .exists()
    )


def eligible_rows(conn: Connection, run: RunScope, sync: AudienceSync) -> set[Row]:
    """The rows the audience must hold as of the run."""
    query = select(EMAIL.of(C).label("email"), PHONE.of(C).label("phone"), C.c.country).where(
        _members(run, sync),
        _ads_consent(C.c.contact_id, run.as_of) == "granted",
        ~suppression.unsubscribed_everywhere(C.c.contact_id),
    )
    rows = (member_row(sync.identifiers, r.email, r.phone, r.country) for r in conn.execute(query))
    return {row for row in rows if row is not None}


# --- the diff and the sync ------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    """What a sync sends: rows to add and rows to remove, each in a stable order."""

    adds: list[Row]
    removes: list[Row]


def diff(wanted: Iterable[Row], synced: Iterable[Row]) -> Diff:
    """The rows to add (wanted, not synced) and remove (synced, no longer wanted)."""
    want, have = set(wanted), set(synced)
    return Diff(sorted(want - have), sorted(have - want))


def batches(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    """``rows`` in consecutive batches of at most ``size``."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _stored(row: Row, identifiers: Sequence[str]) -> dict[str, str]:
    known = dict(zip(identifiers, row, strict=True))
    return {"email_sha256": known.get("email", ""), "phone_sha256": known.get("phone", "")}


def _row_of(email_sha256: str, phone_sha256: str, identifiers: Sequence[str]) -> Row:
    known = {"email": email_sha256, "phone": phone_sha256}
    return tuple(known[name] for name in identifiers)


def synced_rows(conn: Connection, program: str, sync: AudienceSync) -> set[Row]:
    """The rows recorded as in the platform's audience."""
    query = select(A.c.email_sha256, A.c.phone_sha256).where(A.c.program == program, A.c.audience == sync.audience)
    return {_row_of(r.email_sha256, r.phone_sha256, sync.identifiers) for r in conn.execute(query)}


def _record(engine: Engine, program: str, sync: AudienceSync, action: str, rows: Sequence[Row], at: datetime) -> None:
    stored = [_stored(row, sync.identifiers) for row in rows]
    mine = and_(A.c.program == program, A.c.audience == sync.audience)
    with engine.begin() as conn:
        if stored:  # a replayed batch's rows are recorded once: one executemany, not a statement a row
            same = and_(mine, A.c.email_sha256 == bindparam("e"), A.c.phone_sha256 == bindparam("p"))
            conn.execute(delete(A).where(same), [{"e": v["email_sha256"], "p": v["phone_sha256"]} for v in stored])
        if action == ADD and stored:
            conn.execute(
                insert(A), [{"program": program, "audience": sync.audience, "added_at": at, **v} for v in stored]
            )


def sync_audience(
    engine: Engine,
    run: RunScope,
    upload: Upload,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC).replace(tzinfo=None),
) -> dict[str, int]:
    """Bring the program's ad audience to its eligible members: remove, then add, batch by batch,
    recording each batch once the platform took it. Returns ``{"added", "removed", "size",
    "requests"}``; raises :class:`AudienceSyncError` (after recording what was taken) when a
    batch was not taken."""
    sync = run.program.audience_sync
    if sync is None:
        return {}
    program = run.program.id
    with engine.connect() as conn:
        wanted = eligible_rows(conn, run, sync)
        synced = synced_rows(conn, program, sync)
    change = diff(wanted, synced)
    names = [SCHEMA[name] for name in sync.identifiers]
    done = {ADD: 0, REMOVE: 0}
    requests = 0
    for action, rows in ((REMOVE, change.removes), (ADD, change.adds)):
        for batch in batches(rows, sync.batch_size):
            try:
                upload(action, names, batch)
            except (ProviderError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                raise AudienceSyncError(
                    f"audience {sync.audience} of program {program}: the platform did not take a batch of "
                    f"{len(batch)} rows to {action} ({reason}); {done[REMOVE]} removed and {done[ADD]} added "
                    f"were recorded, and the next run sends the rest — fix: check connection {sync.conn_id!r}"
                ) from exc
            requests += 1
            _record(engine, program, sync, action, batch, clock())
            done[action] += len(batch)
    size = len(synced) - done[REMOVE] + done[ADD]
    with engine.begin() as conn:
        conn.execute(
            insert(S).values(
                program=program,
                audience=sync.audience,
                run_id=run.run_id,
                as_of=run.as_of,
                synced_at=clock(),
                added=done[ADD],
                removed=done[REMOVE],
                size=size,
            )
        )
    log.info(
        "Audience %s of %s: %d added, %d removed in %d requests; %d rows",
        sync.audience,
        program,
        done[ADD],
        done[REMOVE],
        requests,
        size,
    )
    return {"added": done[ADD], "removed": done[REMOVE], "size": size, "requests": requests}


@dataclass(frozen=True)
class AudienceStatus:
    """An audience as last synced, for the Campaigns page and the digest."""

    audience: str
    size: int
    last_synced_at: datetime | None
    last_added: int
    last_removed: int


def audience_status(engine: Engine, program: str) -> list[AudienceStatus]:
    """Each ad audience of ``program``: how many rows it holds and its last sync (none yet: None)."""
    with engine.connect() as conn:
        sizes: dict[str, int] = dict(
            conn.execute(select(A.c.audience, func.count()).where(A.c.program == program).group_by(A.c.audience)).all()
        )
        newest = (
            select(S.c.audience, func.max(S.c.sync_id).label("sync_id"))
            .where(S.c.program == program)
            .group_by(S.c.audience)
            .subquery()
        )
        last = {
            r.audience: r
            for r in conn.execute(
                select(S.c.audience, S.c.synced_at, S.c.added, S.c.removed).join(
                    newest, newest.c.sync_id == S.c.sync_id
                )
            )
        }
    return [
        AudienceStatus(
            audience,
            int(sizes.get(audience, 0)),
            last[audience].synced_at if audience in last else None,
            last[audience].added if audience in last else 0,
            last[audience].removed if audience in last else 0,
        )
        for audience in sorted(set(sizes) | set(last))
    ]


def sync_totals(engine: Engine, program: str, start: datetime, end: datetime) -> dict[str, tuple[int, int]]:
    """Rows added and removed per audience of ``program`` by the syncs of the runs as of
    ``start`` (excluded) to ``end`` (included): the digest's week."""
    query = (
        select(S.c.audience, func.sum(S.c.added), func.sum(S.c.removed))
        .where(S.c.program == program, S.c.as_of > start, S.c.as_of <= end)
        .group_by(S.c.audience)
    )
    with engine.connect() as conn:
        return {audience: (int(added or 0), int(removed or 0)) for audience, added, removed in conn.execute(query)}
